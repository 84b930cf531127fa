"""Results folders made from others, for tests that need a second set of runs."""

from __future__ import annotations

import json
from pathlib import Path


def rerun_of(folder: Path, into: Path) -> Path:
    """`into` holding the records of `folder` under new run ids, as if the same runs ran again:
    compare refuses a folder compared with its own runs."""
    into.mkdir(parents=True, exist_ok=True)
    lines = (folder / "runs.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    (into / "runs.jsonl").write_text("".join(json.dumps({**r, "run_id": f"{r['run_id']}-again"}) + "\n" for r in rows))
    return into
