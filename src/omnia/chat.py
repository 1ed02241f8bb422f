"""``omnia chat``: a streaming terminal client of the facade's WebSocket protocol.

Messages come from one of two sources, the same loop reading either:

- a terminal (``TerminalPrompt``): a ``> `` prompt with line editing and
  history (prompt_toolkit: arrows, Emacs keys, Up/Down through earlier
  messages, kept across runs in a private file). The prompt runs on the
  event loop, so the WebSocket keeps answering pings while a person types.
  Ctrl-C while a reply streams cancels that turn (a ``cancel`` frame), as
  the chat page's Stop button does; on the prompt it ends the chat.
- anything else (``PipedLines``): one message per line, no prompt, so a
  script's output is only the replies.

Each reply is printed as its chunks arrive, then a one-line summary of the
turn. Client tools are not run here: they are answered with an error result,
so the model learns the terminal cannot run them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol, TextIO
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

PROMPT = "> "


class ChatError(Exception):
    """The chat cannot go on; the message says why."""


class Messages(Protocol):
    """Where the user's messages come from."""

    interactive: bool

    async def next(self) -> str | None:
        """The next message as typed; ``None`` at the end of input."""
        ...


class PipedLines:
    """One message per line of a file or pipe; read in a worker thread, so the loop never blocks."""

    interactive = False

    def __init__(self, lines: TextIO) -> None:
        self._lines = lines

    async def next(self) -> str | None:
        line = await asyncio.get_running_loop().run_in_executor(None, self._lines.readline)
        return line.rstrip("\n") if line else None


class TerminalPrompt:
    """A prompt with line editing and history; Ctrl-D (or Ctrl-C) on it ends the chat.

    ``history`` is the file earlier messages are kept in, created readable by
    its owner only (messages may hold what others should not read); ``None``
    keeps them for this run alone.
    """

    interactive = True

    def __init__(self, *, history: Path | None) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, InMemoryHistory

        self._session = PromptSession(history=FileHistory(str(history)) if history else InMemoryHistory())

    async def next(self) -> str | None:
        try:
            return await self._session.prompt_async(PROMPT)
        except (EOFError, KeyboardInterrupt):
            return None


def history_file(env: Mapping[str, str] = os.environ) -> Path | None:
    """``$XDG_STATE_HOME/omnia/chat_history`` (``~/.local/state`` by default), created private; None if impossible."""
    state = env.get("XDG_STATE_HOME") or (str(Path(env["HOME"]) / ".local" / "state") if env.get("HOME") else "")
    if not state:
        return None
    path = Path(state) / "omnia" / "chat_history"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    except OSError:
        return None
    return path


def websocket_url(url: str, *, session_id: str | None = None) -> str:
    """Accepts http(s)://host:port, ws(s)://host:port or either with /ws."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    if not path.endswith("/ws"):
        path += "/ws"
    query = urlencode({"session_id": session_id}) if session_id else parts.query
    return urlunsplit((scheme, parts.netloc, path, query, ""))


async def chat(
    url: str,
    *,
    session_id: str | None = None,
    api_key: str | None = None,
    messages: Messages | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Chat until end of input; returns the exit code (0, or 1 after an error frame).

    ``messages`` defaults to the lines of standard input.
    """
    messages = PipedLines(sys.stdin) if messages is None else messages
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    target = websocket_url(url, session_id=session_id)
    try:
        async with connect(target, additional_headers=headers, proxy=None) as ws:
            first = json.loads(await ws.recv())
            if first.get("type") == "error":
                raise ChatError(f"{first.get('code')}: {first.get('message')}")
            print(
                f"connected to {first.get('agent')} (session {first.get('session_id')},"
                f" prompt {first.get('prompt_version')})",
                file=out,
                flush=True,
            )
            if messages.interactive:
                print("Type a message and press Enter; Up and Down recall earlier ones; Ctrl-C stops a reply;"
                      " Ctrl-D ends.", file=out, flush=True)
            status = 0
            while (text := await messages.next()) is not None:
                if not text.strip():
                    continue
                await ws.send(json.dumps({"type": "message", "content": text}))
                with _interrupt_cancels_the_turn(ws, enabled=messages.interactive):
                    if not await _read_turn(ws, out):
                        status = 1
            return status
    except InvalidStatus as exc:
        raise ChatError(f"{target}: the server refused the connection ({exc.response.status_code})") from None
    except (OSError, TimeoutError) as exc:
        raise ChatError(f"cannot reach {target}: {exc}") from None
    except ConnectionClosed as exc:
        raise ChatError(f"the server closed the connection ({exc.rcvd.code if exc.rcvd else 'no close frame'})") from None


@contextlib.contextmanager
def _interrupt_cancels_the_turn(ws, *, enabled: bool) -> Iterator[None]:
    """While a reply streams, SIGINT (Ctrl-C) sends ``cancel`` instead of ending the chat.

    The turn then ends as any cancelled turn does, with ``done`` (reason
    ``cancelled``) and what was generated so far kept in the session.
    """
    if not enabled:
        yield
        return
    loop = asyncio.get_running_loop()
    sending: set[asyncio.Task] = set()

    def cancel() -> None:
        task = loop.create_task(ws.send(json.dumps({"type": "cancel"})))
        sending.add(task)
        task.add_done_callback(sending.discard)

    loop.add_signal_handler(signal.SIGINT, cancel)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def summary(frame: dict) -> str:
    """The line after a reply: tokens, the cost when the model is not free, the finish reason."""
    usage = frame.get("usage", {})
    parts = [f"{usage.get('input_tokens', 0)} in / {usage.get('output_tokens', 0)} out tokens"]
    if usage.get("cost"):
        parts.append(f"${usage['cost']:.6f}")
    parts.append(str(frame.get("finish_reason")))
    return f"  ({', '.join(parts)})"


async def _read_turn(ws, out: TextIO) -> bool:
    """Print one turn's frames until ``done`` (True) or an ``error`` (False)."""
    while True:
        frame = json.loads(await ws.recv())
        match frame.get("type"):
            case "chunk":
                out.write(frame.get("content", ""))
                out.flush()
            case "tool_call":
                out.write(f"\n[tool {frame.get('name')}({json.dumps(frame.get('arguments'))})]\n")
                if frame.get("require_approval"):
                    await ws.send(json.dumps({"type": "approval", "id": frame["id"], "approved": False}))
                elif frame.get("client_side"):
                    await ws.send(
                        json.dumps(
                            {
                                "type": "tool_result",
                                "id": frame["id"],
                                "content": "this client cannot run tools",
                                "is_error": True,
                            }
                        )
                    )
            case "tool_result":
                out.write(f"[result {frame.get('content', '')[:200]}]\n")
            case "done":
                out.write(f"\n{summary(frame)}\n")
                out.flush()
                return True
            case "error":
                out.write(f"\n[error {frame.get('code')}: {frame.get('message')}]\n")
                out.flush()
                return False
