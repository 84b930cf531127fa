"""A published comparison as data: its figures, the configuration behind them, and the
relations that make the claim, checked against what this machine measured.

A claim file (TOML, format in docs/claims.md) lists published rows (one per device, with
`time`-style figures and what is known of the machine) and relations between their figures,
such as `gpu.real_s < cpu.real_s`. A relation is judged on the ratio of its two sides:
within `tolerance` of 1 it is too close to call, because single runs on a shared machine
vary by several percent. Stdlib only: no torch, no pandas.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from itertools import product
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..spec import SPEC_FIELDS
from ..stats import number
from ..sweep import read_toml, toml_run_value

DEFAULT_CLAIM = "blog-3090"
CLAIM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # a packaged claim's name: no dots, no separators
FIGURES = ("real_s", "user_s", "sys_s", "cpu_pct", "gpu_util_mean", "final_loss", "epoch_s", "samples_per_s")
# How each figure is written, in the comparison table and in a relation's sentence alike, so
# that one value never reads 0.5944 in one place and 0.594 in the other.
FIGURE_FORMATS = {"real_s": "{:.3f}", "user_s": "{:.3f}", "sys_s": "{:.3f}", "cpu_pct": "{:.0f}",
                  "gpu_util_mean": "{:.0f}", "final_loss": "{:.2f}", "epoch_s": "{:.3f}", "samples_per_s": "{:,.0f}"}
MACHINE_FIELDS = ("cpu_model", "logical_cores", "physical_cores", "gpu_name", "torch", "cuda", "blas", "os",
                  "openmp_runtime")
DEVICE_KINDS = ("cpu", "cuda", "mps")
OPS = ("<", ">")
# A run field the claim cannot fix: each published row names its device, and the data is
# what this machine has (the output says when it differs from the claim's).
NOT_IN_RUN = ("device", "data")

AGREES = "agrees"
DISAGREES = "disagrees"
TOO_CLOSE = "too close to call"
NOT_TESTABLE = "not testable here"


class ClaimError(UsageError):
    """A claim file that cannot be used; the message names the file and the bad key."""


@dataclass(frozen=True)
class PublishedRow:
    id: str
    label: str
    device: str  # cpu, cuda or mps: the kind of measured run that stands for this row
    figures: dict[str, float]
    machine: dict[str, Any] = field(default_factory=dict)  # fingerprint fields the source tells


@dataclass(frozen=True)
class Operand:
    """One side of a relation: a published row's figure (`gpu.real_s`) or a constant."""

    row: str = ""
    figure: str = ""
    value: float = math.nan

    @property
    def is_constant(self) -> bool:
        return not self.row

    def __str__(self) -> str:
        return f"{self.value:g}" if self.is_constant else f"{self.row}.{self.figure}"

    def read(self, rows: Mapping[str, Mapping[str, Any]]) -> float:
        """The value, with `rows` mapping row ids to figures; NaN where it is missing."""
        if self.is_constant:
            return self.value
        row = rows.get(self.row)
        return number(row.get(self.figure)) if row is not None else math.nan


@dataclass(frozen=True)
class Relation:
    id: str
    says: str
    left: Operand
    op: str
    right: Operand
    tolerance: float

    @property
    def rows(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.row for s in (self.left, self.right) if not s.is_constant))

    def judge(self, ratio: float) -> str:
        """left/right against 1, with a band of +-tolerance where the runs' noise could decide."""
        if math.isnan(ratio):
            return NOT_TESTABLE
        above = ratio > 1 + self.tolerance
        below = ratio < 1 - self.tolerance
        if not (above or below):
            return TOO_CLOSE
        return AGREES if (below if self.op == "<" else above) else DISAGREES


@dataclass(frozen=True)
class Claim:
    name: str
    says: str
    source: str
    data: str  # the data the published figures ran on, e.g. mnist
    run: dict[str, Any]  # run fields of the published runs, over vaebench's defaults
    published: tuple[PublishedRow, ...]
    relations: tuple[Relation, ...]
    path: str = ""

    def row(self, row_id: str) -> PublishedRow:
        return next(r for r in self.published if r.id == row_id)

    def figures(self) -> dict[str, dict[str, float]]:
        return {row.id: row.figures for row in self.published}


@dataclass(frozen=True)
class Verdict:
    """One relation judged on one set of measured runs."""

    relation: Relation
    outcome: str  # agrees, disagrees, too close to call, not testable here
    measured: float  # left / right here; NaN when not testable
    published: float  # left / right on the published figures
    detail: str  # the sentence that says by how much, or why it cannot be tested
    runs: dict[str, str] = field(default_factory=dict)  # row id -> the measured run's label


def evaluate(claim: Claim, measured: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[Verdict]:
    """Judge every relation on the measured rows standing for each published row id.

    `measured` maps a published row id to the measured rows of its kind (each a mapping of
    figures plus an optional `label`); a row id with several (two GPUs) is judged once per run.
    """
    verdicts: list[Verdict] = []
    published = claim.figures()
    for relation in claim.relations:
        base = _ratio(relation, published)
        missing = [r for r in relation.rows if not measured.get(r)]
        if missing:
            why = "; ".join(f"no {claim.row(r).device} run here to stand for {claim.row(r).label!r}" for r in missing)
            verdicts.append(Verdict(relation, NOT_TESTABLE, math.nan, base, why))
            continue
        for combo in product(*(measured[r] for r in relation.rows)):
            rows = dict(zip(relation.rows, combo, strict=True))
            labels = {r: str(row.get("label", r)) for r, row in rows.items()}
            verdicts.append(_verdict(relation, rows, labels, base))
    return verdicts


def _verdict(relation: Relation, rows: Mapping[str, Mapping[str, Any]], labels: dict[str, str],
             published: float) -> Verdict:
    left, right = relation.left.read(rows), relation.right.read(rows)
    unmeasured = [str(s) for s, v in ((relation.left, left), (relation.right, right)) if math.isnan(v)]
    if unmeasured:
        why = f"{' and '.join(unmeasured)} not measured here"
        return Verdict(relation, NOT_TESTABLE, math.nan, published, why, labels)
    if not right > 0:  # a figure measured at 0 (a GPU that never ran a kernel): left/right means nothing
        why = f"{_side(relation.right, labels)} = {_value(relation.right, right)} here: no ratio to judge"
        return Verdict(relation, NOT_TESTABLE, math.nan, published, why, labels)
    ratio = left / right
    outcome = relation.judge(ratio)
    need = "below" if relation.op == "<" else "above"
    against = (f"against the claim's {_value(relation.right, right)}" if relation.right.is_constant
               else f"and {_side(relation.right, labels)} = {_value(relation.right, right)}")
    detail = (
        f"here {_side(relation.left, labels)} = {_value(relation.left, left)} {against}: a ratio of {ratio:.2f}x "
        f"(the claim needs {need} 1x; within {relation.tolerance:.0%} of 1x is too close to call; "
        f"published {published:.2f}x)"
    )
    return Verdict(relation, outcome, ratio, published, detail, labels)


def _value(operand: Operand, value: float) -> str:
    return f"{value:g}" if operand.is_constant else FIGURE_FORMATS[operand.figure].format(value)


def _side(operand: Operand, labels: Mapping[str, str]) -> str:
    return str(operand) if operand.is_constant else f"{operand.figure} of {labels.get(operand.row, operand.row)}"


def _ratio(relation: Relation, rows: Mapping[str, Mapping[str, Any]]) -> float:
    left, right = relation.left.read(rows), relation.right.read(rows)
    return left / right if right > 0 and not math.isnan(left) else math.nan


# Reading and checking a claim file -----------------------------------------------------------


def packaged(name: str) -> Path | None:
    """A claim shipped with vaebench, by name (`blog-3090`); None if there is none. Only a plain
    name resolves, so that `../` cannot walk out of the packaged claims folder."""
    if not CLAIM_NAME.match(name):
        return None
    resource = resources.files("vaebench.reproduce") / "claims" / f"{name}.toml"
    return Path(str(resource)) if resource.is_file() else None


def load(source: str | Path | None = None) -> Claim:
    """Read and check a claim file: the name of a packaged claim, a path (anything with a folder
    separator or ending in .toml), or None for the default."""
    text = str(source) if source is not None else DEFAULT_CLAIM
    if isinstance(source, Path) or "/" in text or "\\" in text or text.endswith(".toml"):
        path = Path(text)
        if not path.exists():
            raise ClaimError(f"no claim file at {text}")
    else:
        found = packaged(text)
        if found is None:
            raise ClaimError(f"no packaged claim named {text!r} (there is {DEFAULT_CLAIM}); "
                             "give a file as a path, e.g. ./my-claim.toml")
        path = found
    return parse(read_toml(path, "claim file", ClaimError), str(path))


def parse(document: Mapping[str, Any], where: str = "claim") -> Claim:
    """Build a Claim from a parsed TOML document, raising ClaimError on the first problem."""
    _keys(document, where, required=("claim", "published", "relation"), optional=())
    head = _table(document["claim"], f"{where}: [claim]")
    _keys(head, f"{where}: [claim]", required=("name", "says"),
          optional=("source", "data", "tolerance", "run"))
    tolerance = _fraction(head.get("tolerance", 0.1), f"{where}: [claim] tolerance")
    published = tuple(
        _published(row, f"{where}: [[published]] {i}") for i, row in enumerate(_list(document, "published", where), 1)
    )
    ids = [row.id for row in published]
    duplicate = sorted({i for i in ids if ids.count(i) > 1})
    if duplicate:
        raise ClaimError(f"{where}: [[published]] id {duplicate[0]!r} is used twice")
    relations = tuple(
        _relation(item, f"{where}: [[relation]] {i}", ids, tolerance)
        for i, item in enumerate(_list(document, "relation", where), 1)
    )
    claim = Claim(
        name=_text(head, "name", f"{where}: [claim]"),
        says=_text(head, "says", f"{where}: [claim]"),
        source=str(head.get("source", "")),
        data=str(head.get("data", "")),
        run=_run(head.get("run", {}), f"{where}: [claim.run]"),
        published=published,
        relations=relations,
        path=where,
    )
    _holds_on_published(claim, where)
    return claim


def _published(row: Any, where: str) -> PublishedRow:
    row = _table(row, where)
    _keys(row, where, required=("id", "device"), optional=("label", "machine", *FIGURES))
    device = _text(row, "device", where)
    if device not in DEVICE_KINDS:
        raise ClaimError(f"{where}: `device` must be one of {', '.join(DEVICE_KINDS)}, got {device!r}")
    figures = {name: _positive(row[name], f"{where} `{name}`") for name in FIGURES if name in row}
    if "real_s" not in figures:
        raise ClaimError(f"{where}: missing key `real_s` (every published row needs its wall-clock time)")
    if "cpu_pct" not in figures and {"user_s", "sys_s"} <= set(figures):
        figures["cpu_pct"] = 100.0 * (figures["user_s"] + figures["sys_s"]) / figures["real_s"]
    machine = _table(row.get("machine", {}), f"{where} [machine]")
    _keys(machine, f"{where} [machine]", required=(), optional=MACHINE_FIELDS)
    row_id = _text(row, "id", where)
    return PublishedRow(row_id, str(row.get("label", row_id)), device, figures, dict(machine))


def _relation(item: Any, where: str, ids: list[str], tolerance: float) -> Relation:
    item = _table(item, where)
    _keys(item, where, required=("id", "left", "op", "right"), optional=("says", "tolerance"))
    op = item["op"]
    if op not in OPS:
        raise ClaimError(f"{where}: `op` must be '<' or '>', got {op!r}")
    left = _operand(item["left"], f"{where} `left`", ids)
    right = _operand(item["right"], f"{where} `right`", ids)
    if left.is_constant:
        raise ClaimError(f"{where}: `left` must name a published figure like 'gpu.real_s', got {item['left']!r}")
    if right.is_constant and not right.value > 0:
        raise ClaimError(f"{where}: a constant `right` must be positive, got {item['right']!r}")
    own = _fraction(item.get("tolerance", tolerance), f"{where} `tolerance`")
    relation_id = _text(item, "id", where)
    return Relation(relation_id, str(item.get("says", relation_id)), left, op, right, own)


def _operand(value: Any, where: str, ids: list[str]) -> Operand:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Operand(value=float(value))
    if not isinstance(value, str) or value.count(".") != 1:
        raise ClaimError(f"{where}: expected 'row.figure' (like 'gpu.real_s') or a number, got {value!r}")
    row, figure = value.split(".")
    if row not in ids:
        raise ClaimError(f"{where}: no published row {row!r}; the rows are {', '.join(ids)}")
    if figure not in FIGURES:
        raise ClaimError(f"{where}: unknown figure {figure!r}; known: {', '.join(FIGURES)}")
    return Operand(row=row, figure=figure)


def _run(values: Any, where: str) -> dict[str, Any]:
    values = _table(values, where)
    run: dict[str, Any] = {}
    for name, value in values.items():
        if name in NOT_IN_RUN:
            raise ClaimError(f"{where}: `{name}` cannot be fixed here: each published row names its device, "
                             "and [claim] data names the published data")
        if name not in SPEC_FIELDS:
            raise ClaimError(f"{where}: unknown run field `{name}`; known: {', '.join(SPEC_FIELDS)}")
        if isinstance(value, list | dict):
            raise ClaimError(f"{where}: `{name}`: expected one value, got {value!r}")
        try:
            run[name] = toml_run_value(name, value)
        except ValueError as exc:
            raise ClaimError(f"{where}: `{name}`: {exc}") from None
    return run


def _holds_on_published(claim: Claim, where: str) -> None:
    """A relation its own published figures contradict is a typo in the file, not a finding."""
    figures = claim.figures()
    for relation in claim.relations:
        if relation.judge(_ratio(relation, figures)) == DISAGREES:
            raise ClaimError(f"{where}: relation {relation.id!r} ({relation.left} {relation.op} {relation.right}) "
                             "does not hold on the claim's own published figures")


def _keys(table: Mapping[str, Any], where: str, *, required: Sequence[str], optional: Sequence[str]) -> None:
    for name in required:
        if name not in table:
            raise ClaimError(f"{where}: missing key `{name}`")
    unknown = [k for k in table if k not in required and k not in optional]
    if unknown:
        raise ClaimError(f"{where}: unknown key `{unknown[0]}`; expected {', '.join((*required, *optional))}")


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ClaimError(f"{where}: expected a table, got {type(value).__name__}")
    return value


def _list(document: Mapping[str, Any], name: str, where: str) -> list[Any]:
    value = document[name]
    if not isinstance(value, list) or not value:
        raise ClaimError(f"{where}: `{name}` must be one or more [[{name}]] tables")
    return value


def _text(table: Mapping[str, Any], name: str, where: str) -> str:
    value = table[name]
    if not isinstance(value, str) or not value.strip():
        raise ClaimError(f"{where}: `{name}` must be non-empty text, got {value!r}")
    return value


def _positive(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ClaimError(f"{where} must be a number, 0 or more, got {value!r}")
    return float(value)


def _fraction(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ClaimError(f"{where} must be a fraction from 0 up to 1 (0.1 = 10%), got {value!r}")
    return float(value)
