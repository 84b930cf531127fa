"""A Report written to disk: report.md, the figures as PNG, the tables as CSV and Parquet."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from ..result import COLUMN_TYPES
from ..stats import is_missing, number
from .report import Report
from .report_text import render_markdown


def write_report(report: Report, folder: str | os.PathLike[str] | None = None) -> Path:
    """Write report.md, the figures as PNG and the tables as CSV and Parquet; return report.md."""
    out = Path(folder) if folder is not None else report.folder
    out.mkdir(parents=True, exist_ok=True)
    for name, figure in report.figures.items():
        figure.savefig(out / f"{name}.png", dpi=110, bbox_inches="tight")
    for name, frame in (
        ("runs", report.runs),
        ("epochs", report.epochs),
        ("summary", report.summary),
    ):
        export(frame, out / name)
    path = out / "report.md"
    path.write_text(render_markdown(report, out), encoding="utf-8")
    return path


def export(frame: pd.DataFrame, stem: Path) -> None:
    """`stem`.csv (lists as JSON text) and `stem`.parquet (lists of numbers kept as lists)."""
    frame.assign(**{c: frame[c].map(_json_text) for c in _nested_columns(frame)}).to_csv(
        stem.with_suffix(".csv"), index=False
    )
    _for_parquet(frame).to_parquet(stem.with_suffix(".parquet"), index=False)


def _nested_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if frame[c].map(lambda v: isinstance(v, list | dict)).any()]


def _json_text(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list | dict) else value


def _for_parquet(frame: pd.DataFrame) -> pd.DataFrame:
    """A record column keeps its record type whatever the folder holds (a yes/no column stays
    boolean beside a failed run's gap, an unmeasured number is a float NaN, not None); numeric
    lists become list<double>; other nested or mixed-type columns become text."""
    out = frame.copy()
    for column in out.columns:
        kinds = COLUMN_TYPES.get(column, ())
        if kinds == (bool,):
            out[column] = out[column].map(_yes_no).astype("boolean")
            continue
        if kinds and set(kinds) <= {int, float} and out[column].dtype == object:
            out[column] = pd.to_numeric(out[column], errors="coerce").astype(float)
            continue
        values = out[column].dropna()
        if out[column].dtype != object or values.empty:
            continue
        if values.map(lambda v: isinstance(v, bool)).all():
            out[column] = out[column].map(_yes_no).astype("boolean")
        elif values.map(_is_number_list).all():
            out[column] = out[column].map(lambda v: [number(x) for x in v] if isinstance(v, list) else None)
        elif values.map(type).nunique() > 1 or not values.map(lambda v: isinstance(v, str)).all():
            out[column] = out[column].map(lambda v: None if is_missing(v) else str(_json_text(v)))
    return out


def _yes_no(value: Any) -> bool | None:
    if is_missing(value):
        return None
    return value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1", "yes", "on")


def _is_number_list(value: Any) -> bool:
    return isinstance(value, list) and all(v is None or isinstance(v, int | float) for v in value)

