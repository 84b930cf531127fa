"""A one-line progress bar on a terminal's stderr, redrawn at most a few times a second."""

from __future__ import annotations

import sys
import time
from typing import TextIO

REDRAW_S = 0.2


def format_duration(seconds: float) -> str:
    if seconds != seconds or seconds < 0:
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    def __init__(self, label: str = "", stream: TextIO | None = None, width: int = 24) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self.start = time.monotonic()
        self._last_draw = 0.0
        self._drawn = False

    def update(self, done: int, total: int, epoch: int | None = None, loss: float | None = None) -> None:
        now = time.monotonic()
        if done < total and now - self._last_draw < REDRAW_S:
            return
        self._last_draw = now
        elapsed = now - self.start
        left = elapsed / done * (total - done) if done else float("nan")
        filled = int(self.width * done / total) if total else self.width
        bar = "#" * filled + "-" * (self.width - filled)
        parts = [self.label, f"[{bar}] {done}/{total}", f"{format_duration(elapsed)} elapsed",
                 f"{format_duration(left)} left"]
        if epoch is not None:
            parts.append(f"epoch {epoch}")
        if loss is not None:
            parts.append(f"loss {loss:.2f}")
        self.stream.write("\r" + "  ".join(p for p in parts if p) + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
