"""The one KV-cached step loop: every decoder, and encoders without a full forward, run it.

Rows (segments) advance one token per step. The caller only says where each step's tokens
come from, the known text (encoder) or the range coder (decoder); feeding the stepper,
which rows are active, progress and the thread count live here, so encoder and decoder
cannot drift apart.

Batch-invariant engines (exact arithmetic) get rows longest first and are fed only the
rows still active, a prefix; the float engine is fed every row every step, ended rows the
context-start token, exactly as its encoder was, since its numbers depend on the batch.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from llmzip.engine.tables import as_tables

__all__ = ["run", "Progress", "ThreadTuner"]


class Progress:
    """Counts tokens and bits for an optional callback(done_tokens, total_tokens, bits)."""

    def __init__(self, callback, total: int):
        self.callback, self.total, self.done, self.bits = callback, total, 0, 0.0
        self.tick(0)

    def tick(self, n_tokens: int, bits: float = 0.0) -> None:
        self.done += n_tokens
        self.bits += bits
        if self.callback:
            self.callback(self.done, self.total, self.bits)


class ThreadTuner:
    """Chooses the thread count of the exact decoder's steps by timing them.

    A step is a few hundred short parallel loops; split statically over 2 threads, it stalls
    at every loop when another process holds one core, where 1 thread barely slows
    (docs/PERFORMANCE.md). Each probe runs every candidate for `probe` steps and keeps the
    fastest per row. A probe that confirms the choice doubles the wait before the next
    (from `period` up to `longest` steps: the slower candidate's probe steps cost a quiet
    machine time); a step slower than twice the probe's pace (a neighbour came) probes at
    once. Thread counts never change a table."""

    def __init__(self, max_threads: int, period: int = 64, probe: int = 2, longest: int = 1024):
        import numba
        self._numba = numba
        self.candidates = sorted({1, max_threads}) if max_threads > 1 else [1]
        self.period, self.probe, self.shortest, self.longest = period, probe, period, longest
        self.best, self.count, self.timings, self.pace = max_threads, 0, {}, None

    def step(self, stepper, inputs: np.ndarray) -> np.ndarray:
        if len(self.candidates) == 1:
            return stepper.step(inputs)
        probing = self.count < self.probe * len(self.candidates)
        threads = self.candidates[self.count // self.probe] if probing else self.best
        self._numba.set_num_threads(threads)
        started = time.perf_counter()
        out = stepper.step(inputs)
        per_row = (time.perf_counter() - started) / len(inputs)
        self.count += 1
        if probing:
            self.timings.setdefault(threads, []).append(per_row)
            if self.count == self.probe * len(self.candidates):
                self._choose()
        elif per_row > 2 * self.pace or self.count >= self.period:
            self.count = 0
        return out

    def _choose(self) -> None:
        fastest = {n: min(t) for n, t in self.timings.items()}
        best = min(fastest, key=fastest.get)
        self.period = min(2 * self.period, self.longest) if best == self.best else self.shortest
        self.best, self.pace, self.timings = best, fastest[best], {}


def run(engine, lengths: list[int], next_tokens: Callable, progress: Progress | None = None,
        tuner: ThreadTuner | None = None) -> None:
    """Step rows of the given lengths to their ends. next_tokens(t, freqs, active) gets the
    next-token tables (len(active), V; `Tables`, where the stepper left them) of the rows still active at step t (their indices,
    in the order of the table's rows) and returns the tokens those rows read next."""
    n, longest = len(lengths), max(lengths)
    invariant = engine.batch_invariant
    order = sorted(range(n), key=lambda i: -lengths[i]) if invariant else list(range(n))
    stepper = engine.stepper(n, longest)
    last = np.full(n, engine.context_start_id, np.int64)
    for t in range(longest):
        active = [i for i in order if lengths[i] > t]
        inputs = last[active] if invariant else last[order]
        freqs = as_tables(tuner.step(stepper, inputs) if tuner else stepper.step(inputs))
        if not invariant:
            freqs = freqs.take([order.index(i) for i in active])
        tokens = next_tokens(t, freqs, active)
        last[:] = engine.context_start_id
        last[active] = tokens
        if progress:
            progress.tick(len(active))
