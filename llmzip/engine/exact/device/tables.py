"""Frequency tables left on the device: the host reads what the coder codes with.

`engine.tables.HostTables`'s operations on a torch tensor (int64, exact in any order). A
decoder step of R rows copies to the host each row's total and largest entry, the entries
of the tokens the adapter biases, the bucket sums and one bucket's row, and sends back the
biased entries; never the (R, V) tables. The encoder's chunk stays on the device likewise,
each segment's rows a view of it (`index`), so that a step across segments (`across`)
writes through to them, as numpy's row views do.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DeviceTables"]


class DeviceTables:
    """Rows `index` (host int64; all rows when None) of an (N, V) int64 tensor."""

    def __init__(self, freqs: torch.Tensor, index: np.ndarray | None = None):
        self._freqs, self._index = freqs, index
        self._summary: np.ndarray | None = None  # (2, R): totals and maxima, read once

    def _put(self, values) -> torch.Tensor:
        return torch.as_tensor(np.asarray(values, np.int64), device=self._freqs.device)

    def _at(self, rows) -> torch.Tensor:
        """The base tensor's rows of these rows."""
        rows = np.asarray(rows, np.int64)
        return self._put(rows if self._index is None else self._index[rows])

    def _rows(self) -> torch.Tensor:
        return self._freqs if self._index is None else self._freqs[self._put(self._index)]

    def __len__(self) -> int:
        return len(self._freqs) if self._index is None else len(self._index)

    def _summarized(self) -> np.ndarray:
        if self._summary is None:
            rows = self._rows()
            self._summary = torch.stack([rows.sum(dim=1), rows.amax(dim=1)]).cpu().numpy()
        return self._summary

    def totals(self) -> np.ndarray:
        return self._summarized()[0]

    def maxima(self) -> np.ndarray:
        return self._summarized()[1]

    def gather(self, rows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        return self._freqs[self._at(rows), self._put(tokens)].cpu().numpy()

    def scatter(self, rows: np.ndarray, tokens: np.ndarray, values: np.ndarray) -> None:
        self._freqs[self._at(rows), self._put(tokens)] = self._put(values)
        self._summary = None

    def rescale(self, row: int, shift: int) -> None:
        at = self._at([row])
        self._freqs[at] = torch.clamp(self._freqs[at] >> shift, min=1)
        self._summary = None

    def _grouped(self, n_buckets: int, bucket_size: int) -> torch.Tensor:
        rows = self._rows()
        padded = F.pad(rows, (0, n_buckets * bucket_size - rows.shape[1]))
        return padded.reshape(rows.shape[0], n_buckets, bucket_size)

    def bucket_sums(self, n_buckets: int, bucket_size: int) -> np.ndarray:
        return self._grouped(n_buckets, bucket_size).sum(dim=2).cpu().numpy()

    def bucket_rows(self, buckets: np.ndarray, n_buckets: int, bucket_size: int) -> np.ndarray:
        grouped = self._grouped(n_buckets, bucket_size)
        return grouped[torch.arange(len(buckets), device=grouped.device),
                       self._put(buckets)].cpu().numpy()

    def take(self, rows: list[int]) -> "DeviceTables":
        return DeviceTables(self._freqs[self._at(rows)])  # a copy, as numpy's

    @staticmethod
    def across(parts: list["DeviceTables"], t: int) -> "DeviceTables":
        """Row t of each part, all views of one tensor (a chunk's segments): a view."""
        base = parts[0]._freqs
        if any(p._freqs is not base for p in parts):
            raise ValueError("tables of different chunks cannot be stepped together")
        return DeviceTables(base, np.array([t if p._index is None else p._index[t]
                                            for p in parts], np.int64))

    @staticmethod
    def copied(chunk: dict) -> dict:
        """A chunk's tables copied as one: views of one tensor stay views of one copy."""
        clones: dict = {}
        return {i: DeviceTables(clones.setdefault(id(t._freqs), t._freqs.clone()), t._index)
                for i, t in chunk.items()}

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        freqs = self._rows().cpu().numpy()
        return freqs if dtype is None else freqs.astype(dtype)
