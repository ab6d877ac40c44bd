"""Progress for long commands: a live line on a terminal, quiet periodic lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from connector.formatting import duration

__all__ = ["Progress"]


class Progress:
    """Renders records done, tokens, rate and time left.

    On a terminal the same line is redrawn; elsewhere (CI, logs, pipes) a plain line is written
    at most every ``every_seconds``.
    """

    def __init__(
        self, label: str, *, stream: TextIO | None = None, every_seconds: float = 10.0
    ) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every_seconds if not self.tty else 0.2
        self.started = time.monotonic()
        self._last = 0.0

    def update(
        self, done: int, total: int, *, tokens: int = 0, extra: str = "", final: bool = False
    ) -> None:
        """Show the current state (rate limited)."""
        now = time.monotonic()
        if not final and now - self._last < self.every:
            return
        self._last = now
        elapsed = max(now - self.started, 1e-6)
        rate = done / elapsed
        left = (total - done) / rate if rate > 0 and total else 0.0
        parts = [f"{self.label}: {done}/{total} records"]
        parts.append(f"{tokens} tokens")
        parts.append(f"{rate:.1f} rec/s")
        if total and not final:
            parts.append(f"~{duration(left)} left")
        if final:
            parts.append(f"in {duration(elapsed)}")
        if extra:
            parts.append(extra)
        line = ", ".join(parts)
        if self.tty:
            self.stream.write("\r\033[K" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def __call__(self, state: Any) -> None:
        """Adapter for engine callbacks carrying done/total/tokens."""
        self.update(state.done, state.total, tokens=state.tokens)
