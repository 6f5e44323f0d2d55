"""Pull progress: a tqdm bar per layer on a terminal, else one quiet line per layer.

tqdm rather than hand-drawn bars: concurrent bars, rates and sizes, terminal widths.
"""
from __future__ import annotations

import os
import sys


def terminal_width(stream) -> int:
    """Columns of the terminal (0 when it does not say, as a fresh pty: tqdm would draw nothing)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 0


class Progress:
    """A tqdm bar per layer on a terminal, else one quiet line per finished layer."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.count = 0

    def bar(self, digest: str, size: int | None):
        self.count += 1
        return LayerBar(self, digest, size, self.count - 1)


class LayerBar:
    def __init__(self, progress: Progress, digest: str, size: int | None, position: int):
        self.progress, self.digest, self.size, self.position = progress, digest, size, position
        self.tqdm = None

    def start(self, have: int) -> None:
        if self.progress.tty:
            from tqdm import tqdm

            self.tqdm = tqdm(total=self.size, initial=have, unit="B", unit_scale=True, position=self.position,
                             desc=self.digest[7:19], file=self.progress.stream, leave=True,
                             **({} if terminal_width(self.progress.stream) else {"ncols": 100, "nrows": 50}))

    def update(self, n: int) -> None:
        if self.tqdm is not None:
            self.tqdm.update(n)

    def done(self, have: int, what: str) -> None:
        if self.tqdm is not None:
            self.tqdm.close()
        else:
            print(f"  layer {self.digest[7:19]}: {what} ({have / 1e6:.1f} MB)", file=self.progress.stream)
