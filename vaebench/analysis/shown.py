"""Which configurations a figure shows when a folder holds more than it can draw legibly.

Past `MAX_SHOWN` bars, curves or legend entries a figure is unreadable (200 bars set their names
on top of each other; a 200-entry legend squeezes the axes to nothing) and slow to draw. A
crowded figure shows the fastest and the slowest ends, which are what a reader looks for, and
the baseline wherever it ranks; the rest are a row each in summary.csv.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import pandas as pd

MAX_SHOWN = 24  # configurations (bars, curves, legend entries) a figure shows at most: 12 fastest, 12 slowest


@dataclass(frozen=True)
class Shown:
    """The names a figure draws, in drawing order, out of `total`."""

    names: tuple[str, ...]
    total: int
    fastest: int = 0  # how many of `names` are the fastest, then the slowest; 0 and 0: all shown
    slowest: int = 0
    baseline: bool = False  # a kept name (the baseline) is among `names` beside the two ends
    what: str = "configurations"
    by: str = ""  # the measure they are ranked by

    @property
    def left_out(self) -> int:
        return self.total - len(self.names)

    @property
    def note(self) -> str:
        """'the 12 fastest and 12 slowest of 200 configurations by samples/s; 176 more in summary.csv',
        or '' where every one is shown."""
        if not self.left_out:
            return ""
        baseline = " and the baseline" if self.baseline else ""
        return (f"the {self.fastest} fastest and {self.slowest} slowest of {self.total} {self.what} by "
                f"{self.by}{baseline}; {self.left_out} more in summary.csv")


def shown(frame: pd.DataFrame, cap: int = MAX_SHOWN, keep: Collection[str] = (), *,
          what: str = "configurations") -> Shown:
    """The `config` names of `frame` a figure draws: all of them, in the frame's order, up to
    `cap`; past it the fastest and the slowest, half the cap each, fastest first, with the names
    in `keep` (the baseline) at their rank. Speed is the median steady-state samples/s where any
    row has it, else the median real time; a row with neither is left out of a crowded figure."""
    names = [str(c) for c in frame["config"]]
    if len(names) <= cap:
        return Shown(tuple(names), len(names), what=what)
    rate = "samples_per_s_median" in frame and frame["samples_per_s_median"].notna().any()
    column, by = ("samples_per_s_median", "samples/s") if rate else ("real_s_median", "real time")
    speed = pd.to_numeric(frame[column], errors="coerce")
    ranked = frame.assign(_speed=speed if rate else -speed).dropna(subset=["_speed"])
    ranked = ranked.sort_values("_speed", ascending=False, kind="stable")
    order = [str(c) for c in ranked["config"]]
    kept = [name for name in order if name in set(keep)]
    room = max(cap - len(kept), 0)
    fastest = min((room + 1) // 2, len(order))
    slowest = min(room // 2, len(order) - fastest)
    ends = set(order[:fastest]) | set(order[len(order) - slowest:])
    picked = tuple(name for name in order if name in ends or name in kept)
    baseline = any(name not in ends for name in kept)
    return Shown(picked, len(names), fastest, slowest, baseline, what, by)
