"""The processes sharing one job, when llmzip runs under `accelerate launch` (or torchrun).

Exact arithmetic gives the same integers on every process, device and machine, so work can
be split anywhere without changing a byte: compression shares a file's segments (in whole
groups) among the processes, decompression shares its groups; the processes then exchange
only what they must (each segment's code length and its group's stream; each group's
decoded bytes), and process 0 writes the archive or the file. See docs/DISTRIBUTED.md.

A single process is a `Team` of one, so the same code serves both. Every collective step
goes through `Team.agree`: each process reports success or its error, and if any failed,
all raise an error that names it, so no process waits forever and nothing is written.
"""

from __future__ import annotations

import datetime
import os

from llmzip.errors import LlmzipError

__all__ = ["Team", "join", "shares"]


class Team:
    """One process working alone: rank 0 of 1."""

    rank, size = 0, 1

    def all_gather(self, obj) -> list:
        return [obj]

    def gather(self, obj) -> list | None:
        """Every process's obj on process 0 (in rank order); None elsewhere."""
        return [obj]

    def agree(self, work, *args):
        """Run work(*args) here; if this or any other process failed, raise naming it."""
        return work(*args)

    def close(self) -> None:
        """Leave the team once every process is done."""


class AccelerateTeam(Team):
    """Processes started by `accelerate launch` or `torchrun`, talking over gloo."""

    # How long a process may wait for the others at one step. torch's default, 30 minutes,
    # would end a run whose processes finish their own files hours apart; a process that
    # dies breaks the connection at once, whatever this is.
    WAIT = datetime.timedelta(days=7)

    def __init__(self):
        from accelerate import PartialState
        # objects only: gloo works on any machine
        self.state = PartialState(cpu=True, timeout=self.WAIT)
        self.rank, self.size = self.state.process_index, self.state.num_processes

    def all_gather(self, obj) -> list:
        from accelerate.utils import gather_object
        return self._collective(gather_object, [obj])

    def gather(self, obj) -> list | None:
        import torch.distributed as dist
        out = [None] * self.size if self.rank == 0 else None
        self._collective(dist.gather_object, obj, out, dst=0)
        return out

    def _collective(self, operation, *args, **kwargs):
        """A collective call; a process that died (killed, out of memory) shows up here as
        a broken connection, which becomes one clear error instead of a hang or a trace."""
        try:
            return operation(*args, **kwargs)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LlmzipError(f"process {self.rank} of {self.size}: another process of the "
                              f"team stopped ({first})") from None

    def close(self) -> None:
        """Wait for every process, then close the connections. A process that exits while
        another still works (each codes its own files last, `jobs`) would otherwise tear
        down gloo under a live peer, which aborts ("terminate called ...")."""
        import torch.distributed as dist
        if dist.is_initialized():
            try:
                self._collective(dist.barrier)
            finally:
                dist.destroy_process_group()

    def agree(self, work, *args):
        try:
            result, failure = work(*args), None
        except (LlmzipError, OSError, MemoryError) as exc:
            result, failure = None, f"{type(exc).__name__}: {exc}" if not isinstance(
                exc, LlmzipError) else str(exc)
        failures = [(rank, text) for rank, text in enumerate(self.all_gather(failure)) if text]
        if failures:
            rank, text = failures[0]
            raise LlmzipError(f"process {rank} of {self.size} failed: {text}")
        return result


def join() -> Team:
    """The team this process belongs to: from the launcher's environment, else alone."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return AccelerateTeam()
    return Team()


def shares(weights: list[int], n: int) -> list[range]:
    """Split items (with these weights, e.g. tokens) into n contiguous ranges of about equal
    weight; some may be empty when there are fewer items than processes."""
    total, out, start, acc = sum(weights), [], 0, 0
    for k in range(1, n + 1):
        stop = start
        while stop < len(weights) and (acc + weights[stop] / 2 <= total * k / n or k == n):
            acc += weights[stop]
            stop += 1
        out.append(range(start, stop))
        start = stop
    return out
