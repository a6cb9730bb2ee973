"""Next-token frequency tables, read where they were computed.

A step's tables are R rows of V integer frequencies (int64, every entry >= 1). The range
coder does not need them whole: it codes a token as (bucket, place in the bucket)
(`codec.rangecoder.TwoLevel`), so it reads each row's bucket sums and one bucket's row, and
the adapter (`codec.adapt`) reads each row's total and largest entry and changes a few
entries. On the CPU the tables are a numpy array and every read is a view. On a GPU
(`engine.exact.device.tables`) they stay on the device, and what crosses to the host is
what the coder reads: V/K + K numbers a row (448 of 49,152 for SmolLM2's vocabulary at
K = 256) instead of the whole row.

Every operation is integer arithmetic on the same numbers wherever the tables live, so the
coder's rows, and so the archives, do not depend on it.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

__all__ = ["Tables", "HostTables", "as_tables", "across", "copied"]


class Tables(Protocol):
    """R rows of V int64 frequencies, wherever they are."""

    def __len__(self) -> int: ...

    def totals(self) -> np.ndarray:
        """(R,) int64: each row's sum."""

    def maxima(self) -> np.ndarray:
        """(R,) int64: each row's largest entry."""

    def gather(self, rows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """int64 entries at (rows[i], tokens[i])."""

    def scatter(self, rows: np.ndarray, tokens: np.ndarray, values: np.ndarray) -> None:
        """Set the entries at (rows[i], tokens[i]) (no pair twice)."""

    def rescale(self, row: int, shift: int) -> None:
        """Row `row` becomes max(row >> shift, 1) (keeps its sum in the coder's range)."""

    def bucket_sums(self, n_buckets: int, bucket_size: int) -> np.ndarray:
        """(R, n_buckets) int64: the sums of bucket_size consecutive entries (the last
        bucket padded with zeros)."""

    def bucket_rows(self, buckets: np.ndarray, n_buckets: int, bucket_size: int) -> np.ndarray:
        """(R, bucket_size) int64: row r's entries in bucket buckets[r] (zero-padded)."""

    def take(self, rows: list[int]) -> "Tables":
        """These rows, in this order (a copy)."""

    @staticmethod
    def across(parts: list, t: int) -> "Tables":
        """Row t of each part (a chunk's tables of several segments): a view."""

    @staticmethod
    def copied(chunk: dict) -> dict:
        """A chunk's tables of several segments, copied together."""

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """All of it on the host, (R, V) (for `explain` and tests)."""


class HostTables:
    """Tables in host memory: an (R, V) array, or R separate rows (the encoder's step
    across segments, each a row of its own chunk). Changes write through."""

    def __init__(self, freqs):
        if isinstance(freqs, np.ndarray) and freqs.ndim == 2:
            self._array, self._rows = freqs, None
        else:
            self._array, self._rows = None, list(freqs)  # row views

    def __len__(self) -> int:
        return len(self._array) if self._array is not None else len(self._rows)

    def totals(self) -> np.ndarray:
        if self._array is not None:
            return self._array.sum(axis=1)
        return np.array([row.sum() for row in self._rows], np.int64)

    def maxima(self) -> np.ndarray:
        if self._array is not None:
            return self._array.max(axis=1)
        return np.array([row.max() for row in self._rows], np.int64)

    def gather(self, rows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        if self._array is not None:
            return self._array[rows, tokens]
        out = np.empty(len(rows), np.int64)
        for lo, hi in _runs(rows):
            out[lo:hi] = self._rows[rows[lo]][tokens[lo:hi]]
        return out

    def scatter(self, rows: np.ndarray, tokens: np.ndarray, values: np.ndarray) -> None:
        if self._array is not None:
            self._array[rows, tokens] = values
            return
        for lo, hi in _runs(rows):
            self._rows[rows[lo]][tokens[lo:hi]] = values[lo:hi]

    def _row(self, row: int) -> np.ndarray:
        return self._array[row] if self._array is not None else self._rows[row]

    def rescale(self, row: int, shift: int) -> None:
        table = self._row(row)
        np.maximum(table >> shift, 1, out=table)

    def _grouped(self, n_buckets: int, bucket_size: int) -> np.ndarray:
        freqs = self._array if self._array is not None else np.stack(self._rows)
        n, v = freqs.shape
        full = n_buckets * bucket_size
        if full != v:
            freqs = np.concatenate([freqs, np.zeros((n, full - v), np.int64)], axis=1)
        return freqs.reshape(n, n_buckets, bucket_size)

    def bucket_sums(self, n_buckets: int, bucket_size: int) -> np.ndarray:
        return self._grouped(n_buckets, bucket_size).sum(axis=2)

    def bucket_rows(self, buckets: np.ndarray, n_buckets: int, bucket_size: int) -> np.ndarray:
        return self._grouped(n_buckets, bucket_size)[np.arange(len(buckets)), buckets]

    def take(self, rows: list[int]) -> "HostTables":
        return HostTables(np.asarray(self)[rows])

    @staticmethod
    def across(parts: list, t: int) -> "HostTables":
        """Row t of each part (arrays or HostTables): views."""
        return HostTables([p[t] if isinstance(p, np.ndarray) else p._row(t) for p in parts])

    @staticmethod
    def copied(chunk: dict) -> dict:
        return {i: np.array(t) for i, t in chunk.items()}

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        freqs = self._array if self._array is not None else np.stack(self._rows)
        return freqs if dtype is None else freqs.astype(dtype)


def _runs(rows: np.ndarray):
    """(start, stop) of each run of equal rows (the adapter gives each row's tokens
    together: one run a row)."""
    cuts = [0, *(np.flatnonzero(rows[1:] != rows[:-1]) + 1).tolist(), len(rows)]
    return zip(cuts[:-1], cuts[1:])


def as_tables(freqs) -> Tables:
    """An engine's tables as `Tables`: numpy arrays (and lists of rows) are wrapped."""
    if isinstance(freqs, (np.ndarray, list)):
        return HostTables(freqs)
    return freqs


def _kind(tables):
    return HostTables if isinstance(tables, (np.ndarray, list, HostTables)) else type(tables)


def across(parts: list, t: int) -> Tables:
    """Row t of each of a chunk's tables (the encoder's step across its segments), as
    tables that write through to them."""
    return _kind(parts[0]).across(parts, t)


def copied(chunk: dict) -> dict:
    """A chunk's tables ({segment: tables}) copied, for coding them again."""
    return _kind(next(iter(chunk.values()))).copied(chunk) if chunk else {}
