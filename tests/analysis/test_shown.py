from __future__ import annotations

import math

import pandas as pd

from vaebench.analysis.shown import MAX_SHOWN, shown


def _summary(rates: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"config": [f"c{i}" for i in range(len(rates))], "samples_per_s_median": rates,
                         "real_s_median": [1.0] * len(rates)})


def test_up_to_the_cap_every_configuration_is_shown_in_the_folders_order() -> None:
    picked = shown(_summary([3.0, 1.0, 2.0]), cap=3)
    assert picked.names == ("c0", "c1", "c2")
    assert picked.left_out == 0 and picked.note == ""


def test_past_the_cap_the_fastest_and_slowest_are_shown_fastest_first() -> None:
    picked = shown(_summary([float(i) for i in range(100)]), cap=4)
    assert picked.names == ("c99", "c98", "c1", "c0")
    assert picked.note == "the 2 fastest and 2 slowest of 100 configurations by samples/s; 96 more in summary.csv"


def test_the_baseline_is_shown_at_its_rank() -> None:
    picked = shown(_summary([float(i) for i in range(100)]), cap=4, keep=["c50"])
    assert picked.names == ("c99", "c98", "c50", "c0")
    assert picked.note.endswith("by samples/s and the baseline; 96 more in summary.csv")


def test_without_a_rate_the_shortest_real_time_is_fastest_and_unmeasured_rows_are_left_out() -> None:
    frame = pd.DataFrame({"config": ["a", "b", "c", "d"], "real_s_median": [3.0, 1.0, math.nan, 2.0]})
    picked = shown(frame, cap=2)
    assert picked.names == ("b", "a")
    assert "by real time" in picked.note


def test_the_cap_is_about_two_dozen() -> None:
    assert 20 <= MAX_SHOWN <= 30
