"""vaebench: a benchmarking and profiling harness for PyTorch training, built around the
reference MNIST VAE. `import vaebench` stays light: no torch, no pandas until asked for."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .spec import RunSpec

__version__ = "0.1.0"
__all__ = ["RunSpec", "__version__", "load_epochs", "load_runs"]

if TYPE_CHECKING:
    import pandas as pd


def load_runs(path: str, **kwargs: Any) -> pd.DataFrame:
    """The runs of a results folder (or its runs.jsonl) as a DataFrame; columns: docs/columns.md."""
    from .storage import load_runs as _load_runs

    return _load_runs(path, **kwargs)


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
