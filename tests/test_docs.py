"""docs/columns.md names every column vaebench writes, so the reference stays complete."""

from __future__ import annotations

import re
from pathlib import Path

from vaebench.analysis import kernel
from vaebench.analysis.report import METRICS
from vaebench.result import COLUMN_TYPES

COLUMNS_DOC = Path(__file__).resolve().parent.parent / "docs" / "columns.md"


def documented() -> set[str]:
    """Every name written in backticks in the column reference."""
    spans = re.findall(r"`([^`]+)`", COLUMNS_DOC.read_text(encoding="utf-8"))
    return {word for span in spans for word in re.split(r"[^A-Za-z0-9_]+", span) if word}


def test_every_record_column_is_documented() -> None:
    missing = [name for name in COLUMN_TYPES if name not in documented()]
    assert not missing, f"columns missing from {COLUMNS_DOC.name}: {', '.join(missing)}"


def test_every_column_report_adds_is_documented() -> None:
    added = ["setup", "machine", "config", *(name for name, _ in kernel.PER_STEP)]
    summary = ["n", "failed", "speedup", "steady_speedup", *METRICS]
    missing = [name for name in (*added, *summary) if name not in documented()]
    assert not missing, f"report columns missing from {COLUMNS_DOC.name}: {', '.join(missing)}"


def test_documented_run_columns_exist() -> None:
    """A name in the first cell of a runs table is a column some record or report row holds."""
    text = COLUMNS_DOC.read_text(encoding="utf-8")
    runs = text[text.index("\n## runs\n"):text.index("\n## summary\n")]
    known = {*COLUMN_TYPES, "setup", "machine", "config", *(name for name, _ in kernel.PER_STEP)}
    stale = [name for line in runs.splitlines() if line.startswith("| `")
             for name in re.findall(r"`([^`]+)`", line.split("|")[1])
             if name not in known and not name.startswith("fp_")]
    assert not stale, f"{COLUMNS_DOC.name} documents columns no record holds: {', '.join(stale)}"
