"""The identity of one run: every knob that changes the numbers, frozen.

A `RunSpec` is the grouping key for repeats and the join key for comparisons. Its defaults
are the seed program's configuration. The module is stdlib only so that the analysis side
(report, compare) can rebuild specs without importing torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._format import counted
from .errors import UsageError
from .stats import is_missing

DEVICE_PATTERN = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")
LOADERS = ("reference", "tensor", "device")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
AMP_MODES = ("off", "bf16", "fp16")
DATA_SOURCES = ("auto", "mnist", "embedded", "synthetic")
SYNC_MODES = ("step", "epoch")
# How the seed's Adam runs: auto is fused under --cuda-graphs and torch's own choice otherwise.
ADAM_IMPLS = ("auto", "foreach", "fused", "compiled")
WAIT_POLICIES = ("default", "active", "passive")
# The C allocator a child runs with, and the Debian package that provides each preloadable one.
ALLOCATOR_PACKAGES = {"system": "", "jemalloc": "libjemalloc2", "tcmalloc": "libtcmalloc-minimal4"}
ALLOCATORS = tuple(ALLOCATOR_PACKAGES)
MNIST_TRAIN_SIZE = 60_000


@dataclass(frozen=True)
class RunSpec:
    """One configuration of the reference VAE's training: what `vaebench run` flags set, one
    field each (docs/columns.md, "Configuration"). Equal specs are repeats of one configuration
    (`key`); `validate` names what cannot run here, before a run starts."""

    device: str = "cpu"  # where the model trains: cpu, cuda, cuda:N, mps
    threads: int | None = None  # intra-op threads; None keeps torch's default (all cores)
    interop_threads: int | None = None  # inter-op threads; None keeps torch's default
    batch_size: int = 128  # the seed's
    epochs: int = 10  # the seed's
    steps: int | None = None  # stop after this many optimizer steps, whatever the epochs
    lr: float = 1e-3  # the seed's Adam learning rate
    loader: str = "reference"  # the seed's pipeline: torchvision MNIST through a DataLoader
    workers: int = 0  # DataLoader workers; the seed used none
    pin_memory: bool = False  # page-locked host batches for the host-to-device copy
    compile: str = "off"  # torch.compile mode
    amp: str = "off"  # autocast dtype; fp16 adds a GradScaler and needs CUDA
    seed: int = 0  # model init, sampling noise and shuffling all derive from it
    data: str = "auto"  # auto is resolved to mnist or embedded before a run starts
    samples: int = MNIST_TRAIN_SIZE  # samples per epoch: MNIST's training set
    profile: bool = False  # a torch.profiler window after warm-up
    profile_steps: int = 20  # steps inside that window
    instrument: bool = True  # per-step timers and device events; off only to measure their cost
    sync: str = "step"  # when the host reads the loss: every step (the seed's) or once per epoch
    cuda_graphs: bool = False  # capture the whole step once and replay it (CUDA, --sync epoch)
    adam: str = "auto"  # the optimizer's implementation; the algorithm and its settings stay the seed's
    nproc_per_node: int = 1  # data-parallel ranks per host, launched by torchrun; batch_size stays per rank
    nnodes: int = 1  # hosts taking part in one data-parallel run

    # How idle OpenMP threads wait: default leaves the runtime's own (libgomp spins ~3 ms, then
    # sleeps in futex), active spins, passive sleeps at once. Kernel time depends on it.
    omp_wait_policy: str = "default"
    allocator: str = "system"  # the C allocator: glibc's malloc, or jemalloc/tcmalloc preloaded
    bind: bool = False  # OpenMP threads pinned to cores (OMP_PROC_BIND=close, OMP_PLACES=cores)

    @property
    def world_size(self) -> int:
        """Ranks in the run: every one trains on its own batch of `batch_size` samples."""
        return self.nproc_per_node * self.nnodes

    @property
    def global_batch(self) -> int:
        """Samples per optimizer step over all ranks: what one process would need for the same update."""
        return self.batch_size * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch: the ragged last batch is a step too."""
        return -(-self.samples // self.global_batch)

    def steps_short(self) -> str:
        """Why `--steps` asks for more steps than the epochs hold, in words; "" when it does not."""
        held = self.epochs * self.steps_per_epoch
        if self.steps is None or self.steps <= held:
            return ""
        return (f"--steps {self.steps} is more than the {held} steps that {counted(self.epochs, 'epoch')} of "
                f"{self.samples} samples at batch {self.global_batch} hold: the run stops at {held}; "
                "raise --epochs to run them all")

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def adam_impl(self) -> str:
        """The Adam that runs: auto resolved, to fused under --cuda-graphs and to torch's own
        choice ("torch") otherwise."""
        if self.adam != "auto":
            return self.adam
        return "fused" if self.cuda_graphs else "torch"

    @property
    def compiles(self) -> bool:
        """torch.compile runs in this training: the model's (--compile), the optimizer's, or both."""
        return self.compile != "off" or self.adam == "compiled"

    def key(self) -> str:
        """A short stable hash of every field; equal specs give equal keys on any machine.

        Fields added after the first release are hashed only off their default, so that
        results recorded before they existed keep their keys.
        """
        values = {k: v for k, v in dataclasses.asdict(self).items() if LATER_FIELDS.get(k, object()) != v}
        text = json.dumps(values, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def label(self, fields: tuple[str, ...] | None = None) -> str:
        """`device=cpu,threads=2,...` over the given fields, or over those off their default."""
        names = fields if fields is not None else tuple(changed_fields(self))
        return ",".join(f"{name}={format_value(getattr(self, name))}" for name in names)

    def display_label(self) -> str:
        """The label, or 'seed configuration' for a spec with nothing off its default."""
        return self.label() or "seed configuration"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunSpec:
        """Build from a mapping, ignoring unknown keys (a record carries many more)."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {k: None if is_missing(v) else v for k, v in values.items() if k in known}
        # A field recorded after a record was written reads as missing (NaN in a table): its default.
        kwargs = {k: v for k, v in kwargs.items() if v is not None or k not in LATER_FIELDS}
        return cls(**kwargs).normalized()

    def normalized(self) -> RunSpec:
        """Coerce types that JSON, TOML or pandas may have loosened (1.0 -> 1, 'true' -> True);
        a value that cannot be coerced is left for `validate` to name."""
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            kind = FIELD_TYPES[f.name]
            try:
                if kind is bool and not isinstance(value, bool):
                    changes[f.name] = parse_bool(value)
                elif kind is int and not isinstance(value, int) and float(value) == int(value):
                    changes[f.name] = int(value)
                elif kind is float and not isinstance(value, float | bool):
                    changes[f.name] = float(value)
            except (TypeError, ValueError, OverflowError):
                pass  # left as it is, for `validate` to name
        return dataclasses.replace(self, **changes) if changes else self


def _field_types() -> dict[str, type]:
    """Each field's type from RunSpec's annotations, `X | None` as X."""
    types_ = {}
    for name, hint in typing.get_type_hints(RunSpec).items():
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        types_[name] = options[0] if options else hint
    return types_


FIELD_TYPES: dict[str, type] = _field_types()
SPEC_FIELDS: tuple[str, ...] = tuple(FIELD_TYPES)
# The fields a user turns to make the same training faster; the others (seed, epochs, data, lr,
# ...) change the question. batch_size is one too, but it also changes the optimization.
SPEED_KNOBS: tuple[str, ...] = (
    "loader", "workers", "pin_memory", "sync", "cuda_graphs", "adam", "threads", "compile", "amp",
    "omp_wait_policy", "allocator", "bind",
)
# Fields added after the first release, with their defaults: left out of keys at their default.
LATER_FIELDS: dict[str, Any] = {
    "sync": "step", "cuda_graphs": False, "nproc_per_node": 1, "nnodes": 1, "omp_wait_policy": "default",
    "allocator": "system", "bind": False, "instrument": True, "adam": "auto",
}
# The values each field may take on its own, whatever the machine: a bad one is refused before
# anything runs, in a single run and in a sweep alike.
CHOICES: dict[str, tuple[str, ...]] = {
    "loader": LOADERS, "compile": COMPILE_MODES, "amp": AMP_MODES, "sync": SYNC_MODES, "data": DATA_SOURCES,
    "omp_wait_policy": WAIT_POLICIES, "allocator": ALLOCATORS, "adam": ADAM_IMPLS,
}
CHOICE_NAMES = {"compile": "compile mode", "amp": "amp mode", "sync": "sync mode", "data": "data source",
                "omp_wait_policy": "OpenMP wait policy", "adam": "Adam implementation"}
MINIMUMS: dict[str, int] = {
    "batch_size": 1, "epochs": 1, "samples": 1, "profile_steps": 1, "threads": 1, "interop_threads": 1, "steps": 1,
    "workers": 0, "nproc_per_node": 1, "nnodes": 1, "seed": 0,
}
OPTIONAL_FIELDS = ("threads", "interop_threads", "steps")  # None: torch's default, or no step limit
DEFAULT = RunSpec()

MAX_SAMPLES = 1_000_000
# (most, why): bounds on the numbers that size a run's memory and time, checked before anything
# starts, whichever command or file sets them. A value past them is refused, never clamped: a
# clamped run would be recorded as a configuration that did not run.
MAXIMUMS: dict[str, tuple[int, str]] = {
    "samples": (MAX_SAMPLES, "about 17 MNIST training sets; the tensor loader holds an epoch as float32, "
                "3 GB at that size"),
    "batch_size": (MAX_SAMPLES, "a batch is at most an epoch"),
    "epochs": (1_000, "a hundred times the seed's 10"),
    "steps": (10_000_000, "days of training at this model's fastest steps"),
    "threads": (1_024, "oversubscription past that measures the scheduler, not training"),
    "interop_threads": (1_024, "as for threads"),
    "workers": (64, "each worker is a process with its own copy of the dataset"),
    "profile_steps": (1_000, "a trace of that many steps is already hundreds of MB"),
    "seed": (2**32 - 1, "the seed range numpy and torch agree on"),
    "nproc_per_node": (256, "one rank per GPU or a few cores: no host has more"),
    "nnodes": (4_096, "hosts in one data-parallel run"),
}


def samples_per_step(samples: int, batch_size: int, steps: int) -> list[int]:
    """The samples in each of the first `steps` steps: every loader cuts an epoch of `samples`
    into full batches and a ragged rest, and a batch holds at most the epoch."""
    batch = max(1, min(batch_size, samples))
    per_epoch = -(-samples // batch)
    rest = samples - (per_epoch - 1) * batch
    return [batch if i % per_epoch < per_epoch - 1 else rest for i in range(steps)]


def changed_fields(spec: RunSpec) -> list[str]:
    return [name for name in SPEC_FIELDS if getattr(spec, name) != getattr(DEFAULT, name)]


def format_value(value: Any) -> str:
    """A value as labels and flags show it: `on`, `default`, `0.001`, `1e+09`; a float the
    short form would round keeps every digit."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and math.isfinite(value):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return "default" if value is None else str(value)


def parse_bool(value: Any) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"not a yes/no value: {value!r}")


def parse_value(name: str, text: str) -> Any:
    """Parse one command-line or sweep-file value for field `name`; raises UsageError, also for
    a value the field can never take (`--omp-wait-policy sometimes`, `--threads 0`)."""
    if name not in FIELD_TYPES:
        raise UsageError(f"unknown run field {name!r}; known: {', '.join(SPEC_FIELDS)}")
    text = text.strip()
    if text.lower() in ("default", "none") and name in OPTIONAL_FIELDS:
        return None
    kind = FIELD_TYPES[name]
    value: Any = text
    if kind is bool:
        value = parse_bool(text)
    elif kind is int:
        try:
            value = int(text)
        except ValueError:
            raise UsageError(f"{name} must be a whole number, got {text!r}") from None
    elif kind is float:
        try:
            value = float(text)
        except ValueError:
            raise UsageError(f"{name} must be a number, got {text!r}") from None
    problem = value_problem(name, value)
    if problem:
        raise UsageError(problem)
    return value


def value_problem(name: str, value: Any) -> str:
    """Why `value` can never be field `name`'s, whatever the machine and the other fields: its
    type, a non-finite number, a value outside `CHOICES`, or past `MINIMUMS` and `MAXIMUMS`;
    "" if it can be."""
    label = "learning rate (lr)" if name == "lr" else name.replace("_", " ")
    kind = FIELD_TYPES[name]
    if value is None:
        return "" if name in OPTIONAL_FIELDS else f"{label} must be given"
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        return f"{label} must be a whole number, got {value!r}"
    if kind is bool and not isinstance(value, bool):
        return f"{label} must be on or off, got {value!r}"
    if kind is str and not isinstance(value, str):
        return f"{label} must be text, got {value!r}"
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{label} must be a number, got {value!r}"
        if not math.isfinite(value):
            return f"{label} must be a finite number, got {value!r}"
    if name in CHOICES and value not in CHOICES[name]:
        return f"unknown {CHOICE_NAMES.get(name, label)} {value!r}; choose from {', '.join(CHOICES[name])}"
    if name in MINIMUMS and value < MINIMUMS[name]:
        least = "0 or more" if MINIMUMS[name] == 0 else f"at least {MINIMUMS[name]}"
        return f"{label} must be {least}, got {value}"
    if name in MAXIMUMS and value > MAXIMUMS[name][0]:
        most, why = MAXIMUMS[name]
        return f"{label} must be at most {most:,} ({why}), got {value:,}"
    if name == "lr" and not value > 0:
        return f"{label} must be positive, got {value}"
    if name == "device" and not DEVICE_PATTERN.match(value):
        return f"unknown device {value!r}; use cpu, cuda, cuda:N or mps"
    return ""


@dataclass(frozen=True)
class Capabilities:
    """What this machine offers, probed once by `machine.capabilities()`."""

    cuda_devices: int = 0
    mps: bool = False
    logical_cores: int = 1
    allocators: tuple[str, ...] = ()  # preloadable allocators found here (jemalloc, tcmalloc)


@dataclass(frozen=True)
class Problem:
    field: str
    message: str
    of_value: bool = False  # the value alone is wrong (bad input), not its combination or this machine

    def __str__(self) -> str:
        return self.message


def validate(spec: RunSpec, caps: Capabilities | None = None) -> list[Problem]:
    """Every reason `spec` cannot run here; empty when it can. Pure: no torch, no I/O."""
    problems: list[Problem] = []

    def bad(name: str, message: str) -> None:
        problems.append(Problem(name, message))

    for name in SPEC_FIELDS:
        message = value_problem(name, getattr(spec, name))
        if message:
            problems.append(Problem(name, message, of_value=True))
    if problems:  # the checks below compare values of the right types
        return problems
    if spec.batch_size > spec.samples:
        bad("batch_size", f"batch size {spec.batch_size} is above the {spec.samples} samples of an epoch: "
            "every step would be the whole epoch; lower --batch-size or raise --samples")
    elif spec.world_size > 1 and spec.global_batch > spec.samples:
        bad("batch_size", f"{spec.world_size} ranks x batch {spec.batch_size} = {spec.global_batch} samples per "
            f"step is above the {spec.samples} samples of an epoch; lower --batch-size or raise --samples")
    if spec.workers > 0 and spec.loader != "reference":
        bad("workers", f"--workers applies to the reference loader only, not {spec.loader!r}")
    if spec.pin_memory and not spec.is_cuda:
        bad("pin_memory", "--pin-memory only matters for a CUDA device")
    if spec.amp == "fp16" and not spec.is_cuda:
        bad("amp", f"fp16 autocast with a GradScaler needs CUDA, not {spec.device!r}; try bf16")
    if spec.adam == "compiled" and spec.amp == "fp16":
        bad("adam", "--adam compiled cannot run under fp16's GradScaler, which steps the optimizer itself; "
            "use --adam fused (it unscales inside its kernel) or --amp bf16")
    if spec.cuda_graphs:
        problems.extend(_graph_problems(spec))
    if spec.world_size > 1:
        problems.extend(_rank_problems(spec))
    if caps is not None:
        problems.extend(_device_problems(spec, caps))
    return problems


def _graph_problems(spec: RunSpec) -> list[Problem]:
    """A captured step replays fixed work: it needs CUDA, no per-step host read, nothing else
    that captures or retraces the step."""
    reasons = []
    if not spec.is_cuda:
        reasons.append(f"--cuda-graphs needs a CUDA device, not {spec.device!r}")
    if spec.sync != "epoch":
        reasons.append("--cuda-graphs needs --sync epoch: a graph cannot read the loss on the host every step")
    if spec.compile != "off":
        reasons.append("--cuda-graphs captures the eager step; with torch.compile use --compile reduce-overhead")
    if spec.amp == "fp16":
        reasons.append("--cuda-graphs cannot capture fp16's GradScaler (it reads found_inf on the host); use bf16")
    return [Problem("cuda_graphs", reason) for reason in reasons]


def _rank_problems(spec: RunSpec) -> list[Problem]:
    """Data-parallel runs: one whole device per rank, and the knobs the distributed step supports."""
    reasons = []
    if spec.device == "mps":
        reasons.append(("device", "--nproc-per-node above 1 needs cpu (gloo) or cuda (nccl), not mps"))
    elif spec.is_cuda and ":" in spec.device:
        reasons.append(("device", f"with --nproc-per-node give --device cuda, not {spec.device}: rank r uses cuda:r"))
    for name, flag in (("cuda_graphs", "--cuda-graphs"), ("profile", "--profile")):
        if getattr(spec, name):
            reasons.append((name, f"{flag} is not supported with more than one rank yet"))
    if spec.compile != "off":
        reasons.append(("compile", "--compile is not supported with more than one rank yet"))
    if spec.adam == "compiled":
        reasons.append(("adam", "--adam compiled is not supported with more than one rank yet"))
    return [Problem(name, reason) for name, reason in reasons]


def _device_problems(spec: RunSpec, caps: Capabilities) -> list[Problem]:
    if spec.allocator in ALLOCATORS and spec.allocator != "system" and spec.allocator not in caps.allocators:
        return [Problem("allocator", allocator_missing(spec.allocator))]
    if spec.is_cuda and spec.world_size > 1 and spec.nproc_per_node > caps.cuda_devices:
        gpus = counted(caps.cuda_devices, "GPU") if caps.cuda_devices else "no GPU"
        return [Problem("nproc_per_node", f"{spec.nproc_per_node} CUDA ranks asked for, but "
                        f"{gpus} here: every rank needs a GPU of its own")]
    if spec.is_cuda:
        index = int(spec.device.split(":")[1]) if ":" in spec.device else 0
        if caps.cuda_devices == 0:
            return [Problem("device", f"{spec.device} asked for, but CUDA is not available here")]
        if index >= caps.cuda_devices:
            return [Problem("device", f"{spec.device} asked for, but only {counted(caps.cuda_devices, 'CUDA device')}")]
    if spec.device == "mps" and not caps.mps:
        return [Problem("device", "mps asked for, but the MPS backend is not available here")]
    return []


def allocator_missing(name: str) -> str:
    package = ALLOCATOR_PACKAGES[name]
    return (f"--allocator {name}: its library is not installed here; install Debian's {package} "
            f"(apt-get install {package}) or give the library's path with --allocator-path")

