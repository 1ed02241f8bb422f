"""Why a process could not start, told where Kubernetes looks for it.

When a container exits, the kubelet copies the file at the container's
``terminationMessagePath`` (``/dev/termination-log``) into the pod status
(``lastState.terminated.message``): ``kubectl describe pod`` shows it, and the
operator copies it into the AgentRuntime's ``Ready`` condition. So
``omnia runtime`` and ``omnia facade``, when what they were given cannot run
(an invalid configuration file, a session store URL or API keys missing from
the environment, a port taken), write one line there saying what to fix, and
exit non-zero with the same line on stderr rather than a traceback.

Outside a pod the file does not exist and nothing is written: the line on
stderr is all there is. Writing never raises; a process that is already
failing must not fail differently because of where it reports it.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_PATH = Path("/dev/termination-log")
ENV = "OMNIA_TERMINATION_LOG"
"""Environment variable naming another file, as ``--termination-log`` does."""

MAX_BYTES = 4096
"""The kubelet reads no more of the file than this."""


class StartupError(Exception):
    """What the process was given cannot run; the message says what to fix, in one line."""


def write(reason: str, *, path: Path | None = None) -> Path | None:
    """Write ``reason`` as one line to ``path``; returns the file written, or None.

    Without ``path``, the file is :data:`DEFAULT_PATH` when it exists and is
    writable (in a pod, the kubelet creates it). Line breaks become spaces
    and the line is cut to :data:`MAX_BYTES`.
    """
    target = path if path is not None else (DEFAULT_PATH if os.access(DEFAULT_PATH, os.W_OK) else None)
    if target is None:
        return None
    line = " ".join(reason.split()).encode()[: MAX_BYTES - 1].decode(errors="ignore") + "\n"
    try:
        with open(target, "w", encoding="utf-8") as file:
            file.write(line)
    except OSError:
        return None
    return target
