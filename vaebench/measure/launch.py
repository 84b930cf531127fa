"""Launching a data-parallel run through torchrun, and reading what its ranks left behind.

A run with `nproc_per_node` above 1 (or several nodes) starts `python -m torch.distributed.run`
in place of the training child; torchrun starts one child per rank. The parent still waits for
one process with `wait4`, so real/user/sys cover the launcher and every rank it reaped. No
torch here: this is the parent's side, and torchrun is only a command line.
"""

from __future__ import annotations

import json
import re
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..spec import RunSpec

CHILD = ("-m", "vaebench.train.child")
STDERR_KEPT = 64 * 1024  # enough of torchrun's stderr for its failure summary


@dataclass(frozen=True)
class Launch:
    """Where this host stands in a run over several hosts; none of it changes the numbers.
    One host (`nnodes` 1) needs none of it: torchrun's `--standalone` rendezvous."""

    node_rank: int = 0  # this host's place among the spec's nnodes
    rdzv_endpoint: str = ""  # host:port of node 0's rendezvous, reachable from every node

    def check(self, spec: RunSpec) -> None:
        """Raise UsageError when the spec's hosts and this launch disagree."""
        if spec.nnodes == 1 and (self.node_rank or self.rdzv_endpoint):
            raise UsageError("--node-rank and --rdzv-endpoint need --nnodes above 1")
        if spec.nnodes > 1 and not self.rdzv_endpoint:
            raise UsageError(f"--nnodes {spec.nnodes} needs --rdzv-endpoint HOST:PORT of node 0, "
                             "the same on every node")
        if spec.nnodes > 1 and not 0 <= self.node_rank < spec.nnodes:
            raise UsageError(f"--node-rank must lie in 0..{spec.nnodes - 1}, got {self.node_rank}")
        if self.rdzv_endpoint and not re.fullmatch(r"[^\s:]+:\d+", self.rdzv_endpoint):
            raise UsageError(f"--rdzv-endpoint must be HOST:PORT, got {self.rdzv_endpoint!r}")


ONE_HOST = Launch()


def child_argv(spec: RunSpec, request: Path, launch: Launch = ONE_HOST, python: str = sys.executable) -> list[str]:
    """The command that trains `request`: the child itself, or torchrun starting it once per rank."""
    if spec.world_size == 1:
        return [python, *CHILD, str(request)]
    # torchrun itself is tied to vaebench (its ranks are tied to it): kill -9 of vaebench ends them all.
    return [python, "-m", "vaebench.train.lifeline", "torch.distributed.run", *torchrun_options(spec, launch), *CHILD,
            str(request)]


def torchrun_options(spec: RunSpec, launch: Launch = ONE_HOST) -> list[str]:
    """torchrun's options: `--standalone` on one host, else node count, rank and rendezvous as given
    (torchrun's default static rendezvous: node 0's endpoint, every node its `--node-rank`).
    No restarts: a measured run that failed is a failed record, never a silent second attempt."""
    hosts = (["--standalone"] if spec.nnodes == 1 else
             ["--nnodes", str(spec.nnodes), "--node-rank", str(launch.node_rank),
              "--rdzv-endpoint", launch.rdzv_endpoint])
    return [*hosts, "--nproc-per-node", str(spec.nproc_per_node), "--max-restarts", "0"]


_FAILURE = re.compile(r"rank\s*:\s*(\d+)\s*\(local_rank:\s*(\d+)\)\s*exitcode\s*:\s*(-?\d+)", re.S)


@dataclass(frozen=True)
class RankFailure:
    rank: int
    exit_code: int  # negative: killed by that signal


def root_cause(stderr: str) -> RankFailure | None:
    """The rank torchrun saw fail first, from its failure summary ("Root Cause (first observed
    failure)"); the first failure listed when there is no such section; None without one."""
    _, marker, rest = stderr.rpartition("Root Cause")
    found = _FAILURE.search(rest if marker else stderr)
    return RankFailure(int(found.group(1)), int(found.group(3))) if found else None


def failure_reason(world: int, cause: RankFailure | None, answers: Mapping[int, Mapping[str, Any]],
                   exit_code: int) -> str:
    """One line naming the rank that took a data-parallel run down, and how.

    `answers` holds the reasons the failing ranks wrote themselves (an exception in training);
    a rank killed by a signal wrote none, and torchrun's summary names it instead.
    """
    if cause is not None and cause.rank in answers:
        return f"rank {cause.rank} of {world} failed: {answers[cause.rank].get('reason', 'no reason given')}"
    if cause is not None:
        ended = how_it_ended(cause.exit_code)
        return f"rank {cause.rank} of {world} crashed: {ended}; torchrun stopped the other ranks"
    if answers:
        rank = min(answers)
        return f"rank {rank} of {world} failed: {answers[rank].get('reason', 'no reason given')}"
    return f"crashed: torchrun {how_it_ended(exit_code)} before any rank reported"


def how_it_ended(exit_code: int) -> str:
    """`killed by SIGKILL` or `exited with status 3`, from a subprocess's return code."""
    if exit_code < 0:
        try:
            return f"killed by {signal.Signals(-exit_code).name}"
        except ValueError:
            return f"killed by signal {-exit_code}"
    return f"exited with status {exit_code}"


def rank_answers(folder: Path) -> dict[int, dict[str, Any]]:
    """The reasons failing ranks left in the request's folder (`train.child.rank_answer_path`)."""
    found = {}
    for path in folder.glob("rank*.json"):
        try:
            found[int(path.stem[4:])] = dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return found
