"""Tables written as CSV (nested values as JSON text) and Parquet (record types kept)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from vaebench.analysis.export import export


def test_parquet_takes_mixed_type_and_nested_columns(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "fp_gpu_count": [0, "n/a", None],
            "fp_extra": [{"a": 1}, [1, "b"], None],
            "losses": [[1, 2.5], None, [None, 3.0]],
        }
    )
    export(frame, tmp_path / "runs")
    back = pd.read_parquet(tmp_path / "runs.parquet")
    assert back["fp_gpu_count"].iloc[:2].tolist() == ["0", "n/a"]
    assert back["fp_extra"].iloc[:2].tolist() == ['{"a": 1}', '[1, "b"]']
    assert back[["fp_gpu_count", "fp_extra"]].iloc[2].isna().all()
    assert list(back["losses"].iloc[0]) == [1.0, 2.5]
    assert back["losses"].iloc[1] is None
    assert json.loads(pd.read_csv(tmp_path / "runs.csv")["fp_extra"].iloc[0]) == {"a": 1}


def test_parquet_keeps_record_types_beside_a_failed_run(tmp_path: Path) -> None:
    """A failed run's gaps must not turn a yes/no column into the text 'True'/'False', nor an
    unmeasured number into None: filters like `runs[~runs.oversubscribed]` must work."""
    frame = pd.DataFrame({
        "oversubscribed": [True, False, None],
        "fp_openmp": [True, None, False],
        "gpu_util_mean": [None, None, None],
        "threads": [1, None, 2],
    })
    export(frame, tmp_path / "runs")
    back = pd.read_parquet(tmp_path / "runs.parquet")
    assert str(back["oversubscribed"].dtype) == "boolean" and str(back["fp_openmp"].dtype) == "boolean"
    assert back["oversubscribed"].iloc[:2].tolist() == [True, False] and back["oversubscribed"].isna().iloc[2]
    assert back["gpu_util_mean"].dtype == float and back["gpu_util_mean"].isna().all()
    assert back["threads"].dtype == float and back["threads"].isna().tolist() == [False, True, False]
