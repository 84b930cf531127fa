"""The matmul peak probe: `python -m vaebench.train.peak DEVICE DTYPE` prints FLOP/s.

Run by `measure.peak.cached_peak` in a process of its own, with the thread settings of the
runs it is compared with, so that no measured run pays for it.
"""

from __future__ import annotations

import math
import sys
import time

CPU_SIZE = 1024  # big enough to reach BLAS's steady speed, small enough for a second's work
GPU_SIZE = 8192
REPEATS = 10


def measure(device: str, dtype: str) -> float:
    import torch

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    size = GPU_SIZE if device.startswith("cuda") else CPU_SIZE
    a = torch.randn(size, size, device=device, dtype=torch_dtype)
    b = torch.randn(size, size, device=device, dtype=torch_dtype)
    best = math.inf
    for _ in range(REPEATS):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


if __name__ == "__main__":
    from .lifeline import tie_to_parent

    tie_to_parent()
    print(measure(sys.argv[1], sys.argv[2]))
