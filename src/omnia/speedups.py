"""Optional C speedups for the two server processes: uvloop and httptools.

Both are installed with the ``speed`` extra (``pip install 'omnia[speed]'``;
the container image has them). ``uvloop`` replaces asyncio's event loop in
the facade and the runtime; ``httptools`` replaces h11 as the facade's HTTP
request parser (the WebSocket layer after the upgrade is the same either
way). They change how fast the same bytes are produced, never which bytes:
the protocols, limits and guards are the same with or without them, and the
tests run the facade over both parsers.

What is used is decided once at start-up, from what is installed and from
``OMNIA_SPEEDUPS``: ``auto`` (the default) uses each one that is installed,
``off`` uses neither (the pure-Python fallback, for comparing or for ruling
them out). The choice is logged by each process when it starts.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

ENV = "OMNIA_SPEEDUPS"
CHOICES = ("auto", "off")

T = TypeVar("T")
HttpParser = Literal["h11", "httptools"]


@dataclass(frozen=True)
class Speedups:
    """Which speedups a process uses."""

    uvloop: bool = False
    httptools: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Speedups:
        """The speedups ``OMNIA_SPEEDUPS`` asks for among those installed.

        Raises ``ValueError`` for a value other than ``auto`` or ``off``.
        """
        choice = env.get(ENV, "auto").strip().lower() or "auto"
        if choice not in CHOICES:
            raise ValueError(f"{ENV} must be one of {', '.join(CHOICES)}, not {choice!r}")
        if choice == "off":
            return cls()
        return cls(uvloop=_installed("uvloop"), httptools=_installed("httptools"))

    @property
    def http_parser(self) -> HttpParser:
        return "httptools" if self.httptools else "h11"

    @property
    def loop_name(self) -> str:
        return "uvloop" if self.uvloop else "asyncio"

    def loop_factory(self) -> Callable[[], asyncio.AbstractEventLoop] | None:
        """A factory of uvloop's event loop, or None for asyncio's own."""
        if not self.uvloop:
            return None
        import uvloop

        return uvloop.new_event_loop

    def run(self, main: Coroutine[Any, Any, T]) -> T:
        """``asyncio.run(main)`` on the chosen event loop."""
        with asyncio.Runner(loop_factory=self.loop_factory()) as runner:
            return runner.run(main)

    def __str__(self) -> str:
        return f"event loop {self.loop_name}, HTTP parser {self.http_parser}"


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None
