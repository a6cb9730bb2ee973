"""Sharing work among processes: the split is balanced, and a failure anywhere stops all."""

import pytest

from llmzip.errors import LlmzipError
from llmzip.parallel.distributed import Team, shares
from llmzip.parallel.jobs import SHARED, plan


def test_shares_are_contiguous_cover_everything_and_balance_the_weights():
    weights = [4096] * 11 + [980]
    parts = shares(weights, 2)
    assert [i for part in parts for i in part] == list(range(12))
    totals = [sum(weights[i] for i in part) for part in parts]
    assert abs(totals[0] - totals[1]) <= 4096


def test_more_processes_than_items_leaves_some_idle():
    parts = shares([5, 5], 4)
    assert sum(len(p) for p in parts) == 2 and max(len(p) for p in parts) == 1


def test_plan_shares_big_files_and_deals_out_small_ones(tmp_path):
    sizes = {"big": 100_000, "a": 10_000, "b": 9_000, "c": 8_000, "d": 1_000}
    for name, size in sizes.items():
        (tmp_path / name).write_bytes(b"x" * size)
    jobs = plan([str(tmp_path / n) for n in sizes], team_size=2)
    owners = {j.name.rsplit("/", 1)[1]: j.owner for j in jobs}
    assert owners["big"] == SHARED and jobs[0].owner == SHARED  # shared files first
    assert {owners[n] for n in "abcd"} == {0, 1}
    assert plan([str(tmp_path / "a")], team_size=2, one_stream=True)[0].owner == SHARED


class _TwoProcesses(Team):
    """A team of two in one process: the other process failed with `their_failure`."""

    size = 2

    def __init__(self, their_failure):
        self.their_failure = their_failure

    def all_gather(self, obj):
        return [obj, self.their_failure]


def test_a_failure_in_another_process_stops_this_one_and_names_it():
    from llmzip.parallel.distributed import AccelerateTeam
    team = _TwoProcesses("model 'x' is not installed")
    with pytest.raises(LlmzipError, match=r"process 1 of 2 failed: model 'x' is not installed"):
        AccelerateTeam.agree(team, lambda: "my result")
    assert AccelerateTeam.agree(_TwoProcesses(None), lambda: "my result") == "my result"
