"""How a new session gets its id and its prompt version.

Shared by the facade, which announces both to its client in ``connected``
without asking the runtime, and by the runtime, which stores the session
with the client's first message. Both sides must agree, so the choice is a
pure function of the id (and of the rollout, which the runtime describes).
"""

from __future__ import annotations

import hashlib
import secrets


def new_id() -> str:
    """A fresh session id: 128 random bits in hex, unguessable and collision-free.

    (The same 32 hex digits as a UUID4's, without building a ``UUID`` on
    every connection.)
    """
    return secrets.token_hex(16)


def canary_bucket(session_id: str) -> int:
    """The session's bucket, 0-99: it gets the canary when below the canary weight.

    The same on every replica and for the session's whole life.
    """
    digest = hashlib.sha256(session_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def prompt_version(session_id: str, *, stable: str, canary: str, canary_weight: int) -> str:
    """The prompt version a new session ``session_id`` gets; ``canary`` empty for none."""
    if canary and canary_weight > 0 and canary_bucket(session_id) < canary_weight:
        return canary
    return stable
