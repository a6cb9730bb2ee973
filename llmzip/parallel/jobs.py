"""Many files, one team of processes: which files each process takes, and which it shares.

A file worth at least a process's fair share of the bytes is coded by the whole team (its
segments or groups shared out, `codec.groups`); the other files go whole to one process
each, the largest first to the least loaded (balanced by bytes, a stand-in for tokens).
Shared files come first, so that no process waits at a shared step for one that has left:
after them each process works alone. Everything goes to standard output in order when
output is one stream (`-c`), so there every file is shared.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Job", "expand", "plan"]

SHARED = -1  # Job.owner for a file the whole team codes


@dataclass(frozen=True)
class Job:
    name: str
    owner: int  # the process that codes and writes it, or SHARED (then process 0 writes)

    def mine(self, rank: int) -> bool:
        return self.owner in (rank, SHARED)

    def writer(self, rank: int) -> bool:
        return self.owner == rank or (self.owner == SHARED and rank == 0)


def expand(names: list[str], recursive: bool, wanted) -> list[str]:
    """The files named, with each directory's files (recursively, sorted) under -r;
    `wanted(path)` says which files of a directory to take."""
    out = []
    for name in names:
        path = Path(name)
        if recursive and name != "-" and path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                out += [str(Path(root) / f) for f in sorted(files) if wanted(Path(root) / f)]
        else:
            out.append(name)
    return out


def _size(name: str) -> int:
    try:
        return os.path.getsize(name) if name != "-" else 0
    except OSError:
        return 0


def plan(names: list[str], team_size: int, one_stream: bool = False) -> list[Job]:
    """Jobs in the order to run them: shared files first, then each process's own."""
    if team_size == 1 or one_stream:
        return [Job(n, SHARED if team_size > 1 else 0) for n in names]
    sizes = {n: _size(n) for n in names}
    fair = sum(sizes.values()) / team_size
    shared = [n for n in names if sizes[n] >= fair or n == "-"]
    load, owners = [0] * team_size, {}
    for name in sorted((n for n in names if n not in shared), key=lambda n: -sizes[n]):
        rank = load.index(min(load))
        owners[name] = rank
        load[rank] += sizes[name]
    return [Job(n, SHARED) for n in shared] + [Job(n, owners[n]) for n in names
                                                if n not in shared]
