from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from vaebench.measure.gpm import GPM_MIN_INTERVAL_S, GpmSampler, open_gpm


class FakeNvmlError(Exception):
    pass


class FakeNvml:
    """The few pynvml names gpm.py uses; a sample is a counter of SM cycles so far."""

    NVMLError = FakeNvmlError
    NVML_SUCCESS = 0
    NVML_GPM_METRICS_GET_VERSION = 1
    NVML_GPM_METRIC_SM_UTIL = 2
    NVML_GPM_METRIC_SM_OCCUPANCY = 3

    def __init__(self, supported: bool = True, metric_error: int = 0) -> None:
        self.supported = supported
        self.metric_error = metric_error
        self.active = 0.0  # cumulative active SM cycles
        self.elapsed = 0.0
        self.freed: list[Any] = []
        self.gets = 0

    def run(self, active: float, elapsed: float) -> None:
        self.active += active
        self.elapsed += elapsed

    def nvmlGpmQueryDeviceSupport(self, handle: Any) -> Any:
        return SimpleNamespace(isSupportedDevice=int(self.supported))

    def nvmlGpmSampleAlloc(self) -> Any:
        return SimpleNamespace(active=0.0, elapsed=0.0)

    def nvmlGpmSampleFree(self, sample: Any) -> None:
        self.freed.append(sample)

    def nvmlGpmSampleGet(self, handle: Any, sample: Any) -> Any:
        if not self.supported:
            raise FakeNvmlError("not supported")
        self.gets += 1
        sample.active, sample.elapsed = self.active, self.elapsed
        return sample

    def c_nvmlGpmMetricsGet_t(self) -> Any:
        metrics = [SimpleNamespace(metricId=0, nvmlReturn=0, value=0.0) for _ in range(4)]
        return SimpleNamespace(version=0, numMetrics=0, sample1=None, sample2=None, metrics=metrics)

    def nvmlGpmMetricsGet(self, request: Any) -> Any:
        assert request.version == self.NVML_GPM_METRICS_GET_VERSION and request.numMetrics == 2
        a, b = request.sample1, request.sample2
        share = 100.0 * (b.active - a.active) / (b.elapsed - a.elapsed)
        for metric in request.metrics[:2]:
            metric.nvmlReturn = self.metric_error
            metric.value = share if metric.metricId == self.NVML_GPM_METRIC_SM_UTIL else share / 2
        return request


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_reads_activity_and_occupancy_over_each_interval() -> None:
    nvml, clock = FakeNvml(), FakeClock()
    sampler = open_gpm(nvml, handle=0, clock=clock)
    assert sampler is not None
    nvml.run(active=30, elapsed=100)
    clock.now += 0.25
    first = sampler.read()
    assert first is not None
    assert first.sm_activity_pct == pytest.approx(30.0)
    assert first.sm_occupancy_pct == pytest.approx(15.0)
    assert "GPM" in first.source
    nvml.run(active=90, elapsed=100)
    clock.now += 0.25
    second = sampler.read()
    assert second is not None and second.sm_activity_pct == pytest.approx(90.0)
    sampler.close()
    assert len(nvml.freed) == 2 and sampler.read() is None


def test_unsupported_devices_give_none() -> None:
    assert open_gpm(FakeNvml(supported=False), handle=0) is None
    assert open_gpm(SimpleNamespace(NVMLError=FakeNvmlError), handle=0) is None


def test_a_metric_the_driver_refuses_gives_none() -> None:
    nvml, clock = FakeNvml(metric_error=3), FakeClock()
    sampler = GpmSampler(nvml, handle=0, clock=clock)
    assert sampler.start()
    nvml.run(active=1, elapsed=2)
    clock.now += 1.0
    assert sampler.read() is None


def test_samples_no_closer_than_the_minimum_interval() -> None:
    assert GPM_MIN_INTERVAL_S == 0.2  # NVML asks for more than 100 ms between samples
    nvml, clock = FakeNvml(), FakeClock()
    sampler = open_gpm(nvml, handle=0, clock=clock)
    assert sampler is not None and nvml.gets == 1
    nvml.run(active=10, elapsed=100)
    clock.now += 0.125  # a read at 8 Hz: too soon, so no reading and no NVML call
    assert sampler.read() is None and nvml.gets == 1
    nvml.run(active=70, elapsed=100)
    clock.now += 0.125  # 250 ms since the start sample
    reading = sampler.read()
    assert reading is not None and nvml.gets == 2
    assert reading.sm_activity_pct == pytest.approx(40.0)  # the whole 250 ms, not its last half
    clock.now += 0.125
    assert sampler.read() is None and nvml.gets == 2
