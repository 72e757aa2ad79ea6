"""User-facing progress: a one-line bar on a terminal, one plain line per step otherwise.

Both write to a text stream (stderr by default) so stdout stays free for the plan, the ids and
``--output json``. :class:`NullProgress` is for in-process callers such as ``powabot demo``.
"""

from __future__ import annotations

import sys
from typing import Protocol, TextIO


class Progress(Protocol):
    """What provisioning reports while it works."""

    def note(self, text: str) -> None:
        """A one-off line (a resource created, a warning)."""

    def begin(self, label: str, total: int) -> None:
        """Start counting ``total`` items (uploads and extraction waits)."""

    def step(self, item: str, status: str, *, done: bool = False) -> None:
        """``item`` reached ``status``; ``done`` advances the count."""

    def end(self) -> None:
        """The counted phase is over."""


class NullProgress:
    """Reports nothing."""

    def note(self, text: str) -> None:
        pass

    def begin(self, label: str, total: int) -> None:
        pass

    def step(self, item: str, status: str, *, done: bool = False) -> None:
        pass

    def end(self) -> None:
        pass


class LineProgress:
    """One line per step, for logs and pipes: ``[3/6] billing-kb/refunds.md: extracted``."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.total = 0
        self.done = 0

    def note(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def begin(self, label: str, total: int) -> None:
        self.total, self.done = total, 0
        self.note(f"{label}: {total} to go")

    def step(self, item: str, status: str, *, done: bool = False) -> None:
        self.done += done
        self.note(f"[{self.done}/{self.total}] {item}: {status}")

    def end(self) -> None:
        pass


class BarProgress:
    """A redrawn single line: ``sources [#######-------] 4/8  billing-kb/refunds.md extracted``."""

    WIDTH = 24

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.label = ""
        self.total = 0
        self.done = 0
        self.last = ""
        self.active = False

    def _draw(self) -> None:
        filled = self.WIDTH * self.done // self.total if self.total else self.WIDTH
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        line = f"{self.label} [{bar}] {self.done}/{self.total}  {self.last}"[:118]
        self.stream.write("\r\x1b[2K" + line)
        self.stream.flush()

    def note(self, text: str) -> None:
        if self.active:
            self.stream.write("\r\x1b[2K")
        print(text, file=self.stream, flush=True)
        if self.active:
            self._draw()

    def begin(self, label: str, total: int) -> None:
        self.label, self.total, self.done, self.last, self.active = label, total, 0, "", True
        self._draw()

    def step(self, item: str, status: str, *, done: bool = False) -> None:
        self.done += done
        self.last = f"{item} {status}"
        self._draw()

    def end(self) -> None:
        if self.active:
            self.stream.write("\n")
            self.stream.flush()
        self.active = False


def make_progress(stream: TextIO | None = None) -> Progress:
    """A bar when ``stream`` is a terminal, plain lines otherwise."""
    stream = stream or sys.stderr
    return BarProgress(stream) if stream.isatty() else LineProgress(stream)
