"""What vaebench shows a person: text and Markdown tables, durations, a progress bar."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from . import stats


def fmt(value: Any, spec: str = "{:.2f}", missing: str = "n/a") -> str:
    """A cell: the number through `spec`, or `missing` where there is none (None, NaN, text)."""
    number = stats.number(value)
    return missing if math.isnan(number) else spec.format(number)


def fmt_auto(value: Any, missing: str = "n/a") -> str:
    """A number with as many digits as its size deserves: 12,345 / 123.4 / 12.34 / 0.123."""
    number = stats.number(value)
    if math.isnan(number):
        return missing
    size = abs(number)
    if size >= 1000:
        return f"{number:,.0f}"
    if size >= 100:
        return f"{number:.1f}"
    if size >= 1:
        return f"{number:.2f}"
    return f"{number:.3g}"


def amount(value: Any, *, rate: bool = False) -> str:
    """A count as counted shows it: '1,302', '?' unknown. A `rate` (a count per step) keeps a
    decimal below 10, so that 0.4 + 3.1 reads as 3.5, not 0 + 3 = 4."""
    number = stats.number(value)
    if math.isnan(number):
        return "?"
    return f"{number:,.{1 if rate and abs(number) < 10 else 0}f}"


def counted(value: Any, noun: str, *, rate: bool = False) -> str:
    """'1 run', '2 runs', '1,302 minor faults', '0.4 switch' read as '0 switches', '? runs' unknown;
    `rate` as in `amount`."""
    text = amount(value, rate=rate)
    plural = noun + ("es" if noun.endswith(("s", "sh", "tch", "x")) else "s")  # switches, but epochs
    return f"{text} {noun if text in ('1', '1.0') else plural}"


def percent(fraction: float) -> str:
    """0.1 as '10%', 0.125 as '12.5%'; a share that is not 0 or 1 never reads as '0%' or '100%'."""
    text = f"{100 * fraction:.3g}"
    if text in ("0", "100") and fraction not in (0, 1):
        text = f"{100 * fraction:.12g}"
    return f"{text}%"


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, a dashed rule under the header."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(headers), "|" + "---|" * len(headers), *map(line, rows)])

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
