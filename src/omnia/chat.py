"""``omnia chat``: a streaming terminal client of the facade's WebSocket protocol.

Reads one message per line from standard input (a terminal or a pipe), prints
the reply as its chunks arrive, then a one-line summary of the turn. Client
tools are not run here: they are answered with an error result, so the model
learns the terminal cannot run them.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import TextIO
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus


class ChatError(Exception):
    """The chat cannot go on; the message says why."""


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
    lines: TextIO = sys.stdin,
    out: TextIO = sys.stdout,
) -> int:
    """Chat until end of input; returns the exit code (0, or 1 after an error frame)."""
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
            status = 0
            loop = asyncio.get_running_loop()
            while True:
                line = await loop.run_in_executor(None, lines.readline)
                if not line:
                    return status
                text = line.rstrip("\n")
                if not text.strip():
                    continue
                await ws.send(json.dumps({"type": "message", "content": text}))
                if not await _read_turn(ws, out):
                    status = 1
    except InvalidStatus as exc:
        raise ChatError(f"{target}: the server refused the connection ({exc.response.status_code})") from None
    except (OSError, TimeoutError) as exc:
        raise ChatError(f"cannot reach {target}: {exc}") from None
    except ConnectionClosed as exc:
        raise ChatError(f"the server closed the connection ({exc.rcvd.code if exc.rcvd else 'no close frame'})") from None


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
                usage = frame.get("usage", {})
                out.write(
                    f"\n  ({usage.get('input_tokens', 0)} in / {usage.get('output_tokens', 0)} out tokens,"
                    f" ${usage.get('cost', 0):.6f}, {frame.get('finish_reason')})\n"
                )
                out.flush()
                return True
            case "error":
                out.write(f"\n[error {frame.get('code')}: {frame.get('message')}]\n")
                out.flush()
                return False
