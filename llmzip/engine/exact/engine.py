"""exact-v3's engine: the integer network on one backend, behind the codec's `Engine` contract."""

from __future__ import annotations

import hashlib
from typing import Iterator

import numpy as np

from llmzip.container import Arithmetic

__all__ = ["ExactEngine", "model_fingerprint"]


def keep_large_allocations() -> None:
    """Keep freed large blocks in glibc's heap: the encoder's fresh 10-100 MB temporaries
    otherwise cost page faults that take longer than the arithmetic on them. Speed only."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, (1 << 31) - 1)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def model_fingerprint(digest: bytes, model) -> bytes:
    """A network's digest, the token table and the context-start id: BLAKE2b-128."""
    h = hashlib.blake2b(digest, digest_size=16)
    h.update(model.tokenizer.digest())
    h.update(model.context_start_id.to_bytes(4, "little"))
    return h.digest()


class ExactEngine:
    """exact-v3: integer arithmetic, the same tables on any machine, backend, thread count
    or batch. The backend (`backend.open_backend`) is the engine's own, chosen when it is opened."""

    arithmetic = Arithmetic.EXACT_V3
    batch_invariant = True
    full_forward = True

    def __init__(self, model, backend):
        from llmzip.engine.exact.network import load_network
        keep_large_allocations()
        self.net, digest = model.cached("exact-v3", lambda: load_network(model.directory,
                                                                           model.config))
        self.backend = backend
        self.vocab_size = self.net.vocab_size
        self.context_start_id = model.context_start_id
        self._fingerprint = model_fingerprint(digest, model)

    def fingerprint(self) -> bytes:
        return self._fingerprint

    def full_tables(self, ids: list[int]) -> Iterator[np.ndarray]:
        """Frequencies, in chunks of rows, for every position of a segment."""
        for _, tables in self.group_tables([ids]):
            yield tables[0]

    def group_tables(self, segments: list[list[int]]) -> Iterator[tuple[int, dict]]:
        return self.backend.group_tables(self.net, [self._inputs(ids) for ids in segments])

    def prefetch(self, segments: list[list[int]]) -> None:
        """Segments that will each be a group of their own, run now in one stack of rows
        (`ExactNetwork.prefetch`, or the torch backend's padded batches)."""
        prefetch = getattr(self.backend, "prefetch", None)
        if prefetch is not None:
            prefetch(self.net, [self._inputs(ids) for ids in segments])

    def _inputs(self, ids: list[int]) -> np.ndarray:
        """What the network reads to predict ids: the context start, then all but the last."""
        return np.array([self.context_start_id, *ids[:-1]], dtype=np.int64)

    def stepper(self, n_rows: int, max_len: int):
        return self.backend.stepper(self.net, n_rows, max_len)

    def cache_budget(self) -> int | None:
        """Bytes of KV cache the backend's device offers a decoder, where it has its own
        memory (a GPU); None: the host's budget applies."""
        return getattr(self.backend, "cache_budget", lambda: None)()

    def cache_bytes(self, n_rows: int, max_len: int) -> int:
        return self.backend.kv_cache_bytes(self.net, n_rows, max_len)
