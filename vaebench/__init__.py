"""vaebench: a benchmarking and profiling harness for PyTorch training, built around the
reference MNIST VAE. `import vaebench` stays light: no torch, no pandas until asked for."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .spec import RunSpec

__version__ = "0.1.0"
__all__ = ["RunSpec", "__version__", "load_epochs", "load_monitor", "load_runs", "load_series"]

if TYPE_CHECKING:
    import pandas as pd

    from .result import RunSeries


def load_runs(path: str, *, ok_only: bool = False) -> pd.DataFrame:
    """The runs of a results folder as a DataFrame, one row per run (the successful ones only,
    with `ok_only`); columns: docs/columns.md."""
    from .storage import load_runs as _load_runs

    return _load_runs(path, ok_only=ok_only)


def load_series(path: str, run_id: str) -> RunSeries:
    """A run's raw series (`series/<run_id>.json`): every step's time, the monitor's samples."""
    from .storage import load_series as _load_series

    return _load_series(path, run_id)


def load_monitor(path: str, run_id: str) -> pd.DataFrame:
    """A run's outside monitor samples, one row each (`t` in s, `t_unix` where known)."""
    from .storage import load_monitor as _load_monitor

    return _load_monitor(path, run_id)


def __getattr__(name: str) -> Any:
    """`vaebench.report` (where `build_report` lived before the subpackages) without importing
    pandas at `import vaebench`."""
    if name == "report":
        from .analysis import report

        return report
    raise AttributeError(f"module 'vaebench' has no attribute {name!r}")


def load_epochs(path: str) -> pd.DataFrame:
    """One row per run and epoch: loss, epoch time, elapsed wall clock."""
    from .storage import load_epochs as _load_epochs

    return _load_epochs(path)
