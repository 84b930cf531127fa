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


GPU_CHECK = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.sh"


def test_the_gpu_check_s_help_names_every_setting_it_reads() -> None:
    """Its --help once stopped two lines short and hid LADDER_LIMIT, which max-autotune needs."""
    import subprocess

    shown = subprocess.run(["bash", str(GPU_CHECK), "--help"], capture_output=True, text=True, check=True).stdout
    read = set(re.findall(r"\$\{([A-Z_]+)", GPU_CHECK.read_text(encoding="utf-8"))) - {"PYTHONPATH"}
    assert read and not [name for name in sorted(read) if name not in shown]
    assert "--rehearse" in shown and "set -u" not in shown and not shown.startswith("#")
    bad = subprocess.run(["bash", str(GPU_CHECK), "--parts", "ladder,nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown part nope" in bad.stderr
