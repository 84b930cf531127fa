"""What the parent asks the training child and what it answers, both as typed records.

The parent writes a `Request` to a JSON file and starts `python -m vaebench.train.child FILE`;
the child writes an `Answer` to the request's `result` path, atomically, and exits. Both sides
read and write them only here, so the format has one definition. JSON has no NaN: floats go
as null and come back as NaN.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .result import FAILED, OK, DataInfo, TrainMetrics
from .spec import RunSpec
from .storage import write_json_atomic

T = TypeVar("T")

# The pid of the vaebench that started a child, in the child's environment: a child checks its
# parent against it, so one whose parent was killed before it could ask to die with it ends too.
PARENT_PID_ENV = "VAEBENCH_PARENT_PID"


@dataclass(frozen=True)
class Request:
    spec: RunSpec
    data: DataInfo
    out: str  # the results folder: the child writes its samples PNG and profiler trace there
    run_id: str
    result: str  # where the child writes its Answer
    progress: bool = False  # a progress bar on stderr
    label: str = ""  # the progress bar's label

    def write(self, path: Path) -> None:
        write_json_atomic(path, dataclasses.asdict(self))

    @classmethod
    def read(cls, path: Path) -> Request:
        values = json.loads(path.read_text())
        return build(cls, values | {"spec": RunSpec.from_dict(values["spec"])})


@dataclass(frozen=True)
class Answer:
    status: str  # OK or FAILED
    reason: str = ""  # why it failed
    metrics: TrainMetrics | None = None
    step_ms: list[float] = field(default_factory=list)  # every step's time, warm-up included
    step_samples: list[int] = field(default_factory=list)  # the samples in each step
    excluded_steps: list[int] = field(default_factory=list)  # left out of steady state besides warm-up
    rank_step_ms: list[list[float]] = field(default_factory=list)  # several ranks: every rank's step times
    allreduce_ms: list[list[float]] = field(default_factory=list)  # ... and every rank's all-reduce per step
    runtime: dict[str, Any] = field(default_factory=dict)  # the runtime half of the fingerprint
    main_cpu_s: float = math.nan  # the training process's own CPU time

    @property
    def ok(self) -> bool:
        return self.status == OK and self.metrics is not None

    @classmethod
    def failed(cls, reason: str) -> Answer:
        return cls(status=FAILED, reason=reason)

    def write(self, path: Path) -> None:
        write_json_atomic(path, dataclasses.asdict(self))

    @classmethod
    def read(cls, path: Path) -> Answer | None:
        """The answer at `path`; None when there is none (the child died first). An answer
        that cannot be read as one (another vaebench version) is a failed answer saying so."""
        try:
            values = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        try:
            return build(cls, values)
        except (KeyError, TypeError, ValueError) as exc:
            return cls.failed(f"unreadable answer from the training child: {exc}")


def build(cls: type[T], values: dict[str, Any]) -> T:
    """A dataclass from JSON values: nested dataclasses built in turn, null floats as NaN;
    keys the class does not know are refused (TypeError), as missing required ones are."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        kind = hints.get(name)
        if kind is None:
            raise TypeError(f"{cls.__name__} has no field {name!r}")
        kwargs[name] = _value(kind, value)
    return cls(**kwargs)


def _value(kind: Any, value: Any) -> Any:
    target = _unoptional(kind)
    if value is None:
        return math.nan if target is float else None
    if isinstance(target, type) and dataclasses.is_dataclass(target) and isinstance(value, dict):
        return build(target, value)
    if target is float:
        return float(value)
    return value


def _unoptional(kind: Any) -> Any:
    """`X | None` as X; anything else as it is."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = [k for k in typing.get_args(kind) if k is not type(None)]
        return args[0] if len(args) == 1 else kind
    return kind
