"""SM activity and occupancy from NVML's GPU Performance Monitoring (Hopper and newer).

utilization.gpu says only whether any kernel ran; GPM says how much of the GPU ran it:
SM activity is the share of SM cycles with work resident, occupancy the resident warps over
the most the SMs could hold. Both are averages between two samples, so a reading needs a
start sample and an end sample. Where the driver or GPU lacks GPM every call gives None.
The NVML module is passed in (pynvml, or a fake in tests).

NVML's GPM documentation asks for more than 100 ms between `nvmlGpmSampleGet` calls (the
driver refreshes its counters at that rate), so a sampler takes a new sample only when
`GPM_MIN_INTERVAL_S` has passed since the last one, whatever rate its caller reads at.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SOURCE = "NVML GPM (SM activity: share of SM cycles with a warp resident; occupancy: warps / max)"
GPM_MIN_INTERVAL_S = 0.2  # twice NVML's 100 ms floor, so timer jitter never brings two samples closer


@dataclass(frozen=True)
class GpmReading:
    sm_activity_pct: float
    sm_occupancy_pct: float
    source: str = SOURCE


class GpmSampler:
    """Between `start()` and each `read()`: SM activity and occupancy over that interval.

    A `read()` sooner than `min_interval_s` after the last `nvmlGpmSampleGet` gives None and
    leaves the start sample in place, so the next read covers the whole interval.
    """

    def __init__(
        self,
        nvml: Any,
        handle: Any,
        *,
        clock: Callable[[], float] = time.monotonic,
        min_interval_s: float = GPM_MIN_INTERVAL_S,
    ) -> None:
        self._nvml = nvml
        self._handle = handle
        self._clock = clock
        self._min_interval_s = min_interval_s
        self._samples: list[Any] = []
        self._last_get = float("-inf")  # when nvmlGpmSampleGet was last called

    def start(self) -> bool:
        """Take the first sample; False (and every read None) when GPM is unavailable."""
        try:
            self._samples = [self._nvml.nvmlGpmSampleAlloc(), self._nvml.nvmlGpmSampleAlloc()]
            self._nvml.nvmlGpmSampleGet(self._handle, self._samples[0])
        except self._nvml.NVMLError:
            self.close()
            return False
        self._last_get = self._clock()
        return True

    def read(self) -> GpmReading | None:
        """Metrics since the previous sample; this sample becomes the next start."""
        if not self._samples:
            return None
        now = self._clock()
        if now - self._last_get < self._min_interval_s:
            return None
        self._last_get = now
        nvml = self._nvml
        first, second = self._samples
        try:
            nvml.nvmlGpmSampleGet(self._handle, second)
            request = nvml.c_nvmlGpmMetricsGet_t()
            request.version = nvml.NVML_GPM_METRICS_GET_VERSION
            request.numMetrics = 2
            request.sample1, request.sample2 = first, second
            request.metrics[0].metricId = nvml.NVML_GPM_METRIC_SM_UTIL
            request.metrics[1].metricId = nvml.NVML_GPM_METRIC_SM_OCCUPANCY
            nvml.nvmlGpmMetricsGet(request)
        except nvml.NVMLError:
            return None
        self._samples = [second, first]
        if any(request.metrics[i].nvmlReturn != nvml.NVML_SUCCESS for i in (0, 1)):
            return None
        return GpmReading(float(request.metrics[0].value), float(request.metrics[1].value))

    def close(self) -> None:
        for sample in self._samples:
            try:
                self._nvml.nvmlGpmSampleFree(sample)
            except self._nvml.NVMLError:
                pass
        self._samples = []


def open_gpm(nvml: Any, handle: Any, clock: Callable[[], float] = time.monotonic) -> GpmSampler | None:
    """A started sampler, or None where the GPU, driver or NVML bindings lack GPM."""
    try:
        if not nvml.nvmlGpmQueryDeviceSupport(handle).isSupportedDevice:
            return None
    except Exception:  # noqa: BLE001 - old bindings lack the call, old GPUs refuse it
        return None
    sampler = GpmSampler(nvml, handle, clock=clock)
    return sampler if sampler.start() else None
