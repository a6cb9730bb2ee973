"""The engine contract: what the codec asks of a model, and nothing more.

Frequency tables for the next token of many segments at once: from KV-cached steps
(`stepper`), and, where the engine has one, from a whole-segment forward (`full_tables`,
`group_tables`: the exact encoder's fast path, which the steps reproduce bit for bit).
"""

from __future__ import annotations

from typing import Iterator, Protocol

import numpy as np

from llmzip.container import Arithmetic


class Stepper(Protocol):
    """KV-cached decoding of a batch of segments, one token per segment per call."""

    def step(self, input_ids: np.ndarray) -> np.ndarray:
        """Feed one token to each of the first len(input_ids) rows; return their next-token
        frequencies (rows, V) int64: an array, or `engine.tables.Tables` where they stay
        on a device."""


class Engine(Protocol):
    arithmetic: Arithmetic
    vocab_size: int
    context_start_id: int
    batch_invariant: bool  # tables independent of which rows share a step
    full_forward: bool  # full_tables() is available: the encoder's fast path

    def fingerprint(self) -> bytes: ...

    def stepper(self, n_rows: int, max_len: int) -> Stepper: ...

    def cache_bytes(self, n_rows: int, max_len: int) -> int: ...

    def full_tables(self, ids: list[int]) -> Iterator[np.ndarray]:
        """Frequencies for every position of a segment, in chunks (where full_forward)."""

    def group_tables(self, segments: list[list[int]]) -> Iterator[tuple[int, dict]]:
        """(position, {index: tables}) for several segments advancing chunk by chunk
        together, every chunk at the same positions in each (where full_forward)."""
