"""Management commands of the collection app, and the progress bar they draw on stderr."""

from __future__ import annotations

import sys
import time

from django.core.management.base import OutputWrapper


class ProgressBar:
    """A one-line progress bar on stderr: a callable taking (stage, done, total or None)."""

    def __init__(self, stream=None, width: int = 30, every_s: float = 0.1):
        # A command's self.stderr (OutputWrapper) adds a newline to each write unless told not to.
        stream = stream or sys.stderr
        self.stream = stream._out if isinstance(stream, OutputWrapper) else stream
        self.width, self.every_s = width, every_s
        self.started = time.monotonic()
        self.drawn_at = 0.0
        self.stage = None

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        finished = total is not None and done >= total
        if stage == self.stage and not finished and now - self.drawn_at < self.every_s:
            return
        if self.stage is not None and stage != self.stage:
            self.stream.write("\n")
        self.stage, self.drawn_at = stage, now
        elapsed = now - self.started
        if total:
            filled = int(self.width * min(done, total) / total)
            bar = "#" * filled + "." * (self.width - filled)
            line = f"{stage:>8} [{bar}] {done}/{total} {elapsed:5.1f}s"
        else:
            line = f"{stage:>8} {done} {elapsed:5.1f}s"
        self.stream.write("\r" + line)
        self.stream.flush()

    def close(self) -> None:
        if self.stage is not None:
            self.stream.write("\n")
            self.stream.flush()
