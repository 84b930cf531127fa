"""torchrun's command line, its failure summary read back, and the scaling efficiency: no torch here."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from vaebench.errors import UsageError
from vaebench.measure.launch import (
    Launch,
    RankFailure,
    child_argv,
    failure_reason,
    root_cause,
    torchrun_options,
)
from vaebench.rules import one_rank, scaling_efficiency, single_rank_rate
from vaebench.spec import RunSpec

# torchrun 2.x's summary when rank 1 of 2 segfaulted and it stopped rank 0 (a real capture).
TORCHRUN_FAILURE = """\
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
=======================================================
vaebench.train.child FAILED
-------------------------------------------------------
Failures:
[1]:
  time      : 2026-11-26_05:18:23
  host      : localhost
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 16623)  (SIGTERM)
  error_file: <N/A>
  traceback : Signal 15 (SIGTERM) received by PID 16623
-------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-11-26_05:18:23
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : -11 (pid: 16624)  (SIGSEGV)
  error_file: <N/A>
  traceback : Signal 11 (SIGSEGV) received by PID 16624
=======================================================
"""


def test_one_process_runs_the_child_itself() -> None:
    assert child_argv(RunSpec(), Path("r.json"), python="py") == ["py", "-m", "vaebench.train.child", "r.json"]


def test_one_host_is_standalone() -> None:
    argv = child_argv(RunSpec(nproc_per_node=4), Path("r.json"), python="py")
    assert argv == ["py", "-m", "vaebench.train.lifeline", "torch.distributed.run", "--standalone",
                    "--nproc-per-node", "4", "--max-restarts", "0", "-m", "vaebench.train.child", "r.json"]


def test_several_hosts_pass_their_rendezvous_through() -> None:
    options = torchrun_options(RunSpec(nproc_per_node=8, nnodes=2, device="cuda"),
                               Launch(node_rank=1, rdzv_endpoint="node-a:29500"))
    assert options == ["--nnodes", "2", "--node-rank", "1", "--rdzv-endpoint", "node-a:29500",
                       "--nproc-per-node", "8", "--max-restarts", "0"]
    assert "--standalone" not in options


@pytest.mark.parametrize(
    ("spec", "launch", "message"),
    [
        (RunSpec(nnodes=2), Launch(), "needs --rdzv-endpoint"),
        (RunSpec(nnodes=2), Launch(node_rank=2, rdzv_endpoint="a:1"), "--node-rank must lie in 0..1"),
        (RunSpec(), Launch(node_rank=1), "need --nnodes above 1"),
        (RunSpec(nnodes=2), Launch(rdzv_endpoint="node-a"), "HOST:PORT"),
    ],
)
def test_bad_launches_are_refused(spec: RunSpec, launch: Launch, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        launch.check(spec)


def test_the_root_cause_is_the_rank_torchrun_saw_fail_first() -> None:
    assert root_cause(TORCHRUN_FAILURE) == RankFailure(rank=1, exit_code=-11)
    only = TORCHRUN_FAILURE.split("Root Cause")[0]
    assert root_cause(only) == RankFailure(rank=0, exit_code=-15)
    assert root_cause("no summary at all") is None


def test_failure_reasons_name_the_rank() -> None:
    cause = RankFailure(rank=1, exit_code=-11)
    assert failure_reason(2, cause, {}, 1) == (
        "rank 1 of 2 crashed: killed by SIGSEGV; torchrun stopped the other ranks")
    told = {1: {"reason": "out of memory: tried to allocate 1 TiB"}}
    assert failure_reason(2, cause, told, 1) == "rank 1 of 2 failed: out of memory: tried to allocate 1 TiB"
    assert failure_reason(4, None, {3: {"reason": "x"}, 2: {"reason": "y"}}, 1) == "rank 2 of 4 failed: y"
    assert failure_reason(2, None, {}, 1) == "crashed: torchrun exited with status 1 before any rank reported"


def test_scaling_efficiency_is_throughput_over_n_single_ranks() -> None:
    assert scaling_efficiency(5873.0, 2, 7247.0) == pytest.approx(5873 / 14494)
    assert scaling_efficiency(2000.0, 2, 1000.0) == 1.0
    assert math.isnan(scaling_efficiency(2000.0, 2, math.nan))


def test_the_baseline_is_this_hosts_one_rank_runs_of_the_same_configuration() -> None:
    spec = RunSpec(nproc_per_node=2, threads=1, batch_size=64)
    base = one_rank(spec)
    assert base.world_size == 1 and base.batch_size == 64 and base.key() != spec.key()
    rows = [
        {"spec_key": base.key(), "status": "ok", "samples_per_s": 100.0, "fp_hostname": "a"},
        {"spec_key": base.key(), "status": "ok", "samples_per_s": 300.0, "fp_hostname": "a"},
        {"spec_key": base.key(), "status": "ok", "samples_per_s": 900.0, "fp_hostname": "b"},
        {"spec_key": base.key(), "status": "failed", "samples_per_s": None, "fp_hostname": "a"},
        # A one-rank run that failed after reporting a rate (a crash late in the epoch) is no baseline.
        {"spec_key": base.key(), "status": "failed", "samples_per_s": 5000.0, "fp_hostname": "a"},
        {"spec_key": spec.key(), "status": "ok", "samples_per_s": 50.0, "fp_hostname": "a"},
    ]
    assert single_rank_rate(rows, spec, "a") == 200.0
    assert math.isnan(single_rank_rate(rows, spec, "c"))


def test_cpu_ranks_share_the_cores_for_the_peak_gpu_ranks_do_not() -> None:
    from vaebench.measure.run import parallel_ranks

    assert parallel_ranks(RunSpec(nproc_per_node=4, threads=1), cores=2) == 2  # 4 ranks, 2 cores
    assert parallel_ranks(RunSpec(nproc_per_node=2, threads=1), cores=16) == 2
    assert parallel_ranks(RunSpec(nproc_per_node=2, threads=8, nnodes=2), cores=16) == 4
    assert parallel_ranks(RunSpec(nproc_per_node=8, device="cuda"), cores=2) == 8


def test_ranks_count_toward_oversubscription() -> None:
    from tests.test_storage import make_record

    record = make_record(nproc_per_node=4, threads=1)
    assert dataclasses.replace(record, fingerprint={"usable_cores": 2}).oversubscribed is True
    assert dataclasses.replace(record, fingerprint={"usable_cores": 4}).oversubscribed is False
