"""The tree of processes below one, as Linux's ``/proc`` tells it.

Process groups are not enough to find what a process started: PostgreSQL
backends and stdio MCP servers may call setsid(). ``omnia run`` (stopping its
children) and the test servers (stopping Redis and PostgreSQL) both walk the
tree instead. Elsewhere than Linux the tree is empty.
"""

from __future__ import annotations

import contextlib
from pathlib import Path


def descendants(pid: int) -> list[int]:
    """Children of ``pid``, their children, and so on: parents before their children."""
    children: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command name, in parentheses, may itself contain spaces.
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    found, queue = [], list(children.get(pid, ()))
    while queue:
        current = queue.pop(0)
        found.append(current)
        queue.extend(children.get(current, ()))
    return found
