"""Management commands of the collection app, and the progress bar they draw on stderr."""

from __future__ import annotations

import sys

from tqdm import tqdm


class ProgressBar:
    """A tqdm bar per stage: a callable taking (stage, done, total or None).

    `stream` is the command's own stderr stream (`options.get("stderr")`), not its
    `OutputWrapper`, which ends every write with a newline and colours it as an error.
    """

    def __init__(self, stream=None, every_s: float = 0.1):
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.bar: tqdm | None = None

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if self.bar is None or self.bar.desc != stage:
            self.close()
            self.bar = tqdm(desc=stage, total=total, file=self.stream, mininterval=self.every_s)
        elif total != self.bar.total:
            self.bar.total = total
            self.bar.refresh()
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
