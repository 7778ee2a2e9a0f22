"""A tiny progress display on stderr: a live bar on a terminal, one line per epoch otherwise."""
from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    """``quiet``: print nothing per epoch. On a TTY the bar is redrawn at most 10 times a second."""

    def __init__(self, quiet: bool = False, stream=None, width: int = 24) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.live = not quiet and _isatty(self.stream)
        self.width, self._last = width, 0.0

    def batch(self, epoch: int, epochs: int, done: int, total: int, loss: float, acc: float) -> None:
        if not self.live:
            return
        now = time.monotonic()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        fill = int(self.width * done / max(total, 1))
        bar = "#" * fill + "." * (self.width - fill)
        self.stream.write(f"\repoch {epoch}/{epochs} [{bar}] {done}/{total} loss {loss:.4f} acc {100 * acc:5.1f}%")
        self.stream.flush()

    def epoch(self, text: str) -> None:
        if self.quiet:
            return
        if self.live:
            self.stream.write("\r\x1b[K")
        self.stream.write(text + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        if not self.quiet:
            self.stream.write(text + "\n")
            self.stream.flush()


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
