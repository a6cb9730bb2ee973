"""Two-level range coding of tokens over constriction; numpy only, no torch.

A token id is coded as (bucket, position in bucket): first the bucket among V/K buckets, with
the bucket masses as its distribution, then the token among the K ids of that bucket. This
is exact by the chain rule, costs O(V/K + K) per token instead of constriction's O(V) model
build, and its quantization floor (each symbol gets >= 1/2^24) reserves (V/K + K)/2^24 of
the mass instead of V/2^24 (1.56% at a 262k vocabulary). See shared notes/coder-speed.md.

Encoder and decoder must hand constriction bit-identical rows. Rows are integer frequencies
(int64, every token >= 1, sums < 2^53) passed as float64, so they are exact, and
constriction's quantizer is a fixed sequence of IEEE operations on them.

Symbols are coded step-major: for each step, the buckets of all segments in the group, then
their tokens. The decoder runs the same order with one batched call per level and step.
"""

from __future__ import annotations

import math

import numpy as np
import constriction

from .errors import CorruptArchiveError

__all__ = ["TwoLevel", "encode_steps", "StreamDecoder", "default_bucket_size"]

_FAMILY = constriction.stream.model.Categorical(perfect=False)  # perfect=True: 200 ms/symbol


def default_bucket_size(vocab_size: int) -> int:
    """The power of two nearest sqrt(V): 256 for 49k, 512 for 262k."""
    return 1 << round(math.log2(max(vocab_size, 4)) / 2)


class TwoLevel:
    """Splits [N, V] integer frequency tables into bucket rows and in-bucket rows."""

    def __init__(self, vocab_size: int, bucket_size: int):
        self.vocab_size = vocab_size
        self.bucket_size = bucket_size
        self.n_buckets = -(-vocab_size // bucket_size)
        self.width = max(self.n_buckets, bucket_size)  # both levels share one row width

    def _padded(self, freqs: np.ndarray) -> np.ndarray:
        n, v = freqs.shape
        if v != self.vocab_size:
            raise ValueError(f"frequency table has {v} columns, expected {self.vocab_size}")
        full = self.n_buckets * self.bucket_size
        if full != v:
            freqs = np.concatenate([freqs, np.zeros((n, full - v), np.int64)], axis=1)
        return freqs.reshape(n, self.n_buckets, self.bucket_size)  # (N, buckets, K)

    def _row(self, values: np.ndarray) -> np.ndarray:
        out = np.zeros((values.shape[0], self.width), np.float64)
        out[:, :values.shape[1]] = values
        return out

    def masses(self, freqs: np.ndarray) -> np.ndarray:
        """(N, width) float64: each bucket's total frequency."""
        return self._row(self._padded(freqs).sum(axis=2))

    def inner(self, freqs: np.ndarray, buckets: np.ndarray) -> np.ndarray:
        """(N, width) float64: the frequencies inside each row's given bucket."""
        grouped = self._padded(freqs)
        return self._row(grouped[np.arange(len(buckets)), buckets])

    def split(self, freqs: np.ndarray, tokens: np.ndarray):
        """Encoder side: (masses, inner rows, bucket ids, in-bucket ids, xent bits per token)."""
        tokens = np.asarray(tokens, np.int64)
        buckets, offsets = np.divmod(tokens, self.bucket_size)
        p_token = freqs[np.arange(len(tokens)), tokens].astype(np.float64)
        xent = np.log2(freqs.sum(axis=1).astype(np.float64)) - np.log2(p_token)
        return (self.masses(freqs), self.inner(freqs, buckets),
                buckets.astype(np.int32), offsets.astype(np.int32), xent)


def encode_steps(steps) -> bytes:
    """One range-coder stream from (masses, inner, buckets, offsets) per step, in order."""
    encoder = constriction.stream.queue.RangeEncoder()
    for masses, inner, buckets, offsets in steps:
        encoder.encode(buckets, _FAMILY, masses)
        encoder.encode(offsets, _FAMILY, inner)
    return encoder.get_compressed().astype("<u4").tobytes()


class StreamDecoder:
    """Decodes one group's stream, a step (one token per active segment) at a time."""

    def __init__(self, stream: bytes, two_level: TwoLevel):
        if len(stream) % 4:
            raise CorruptArchiveError("range-coder stream is not whole 32-bit words (damaged)")
        words = np.frombuffer(stream, dtype="<u4").astype(np.uint32)
        self._decoder = constriction.stream.queue.RangeDecoder(words)
        self.two_level = two_level

    def decode(self, freqs: np.ndarray) -> np.ndarray:
        """Token ids (N,) for N segments whose next-token tables are freqs (N, V)."""
        tl = self.two_level
        buckets = np.asarray(self._decoder.decode(_FAMILY, tl.masses(freqs)), np.int64)
        if (buckets >= tl.n_buckets).any():
            raise CorruptArchiveError("decoded a token outside the vocabulary (archive damaged "
                                      "or model mismatch)")
        offsets = np.asarray(self._decoder.decode(_FAMILY, tl.inner(freqs, buckets)), np.int64)
        tokens = buckets * tl.bucket_size + offsets
        if (offsets >= tl.bucket_size).any() or (tokens >= tl.vocab_size).any():
            raise CorruptArchiveError("decoded a token outside the vocabulary (archive damaged "
                                      "or model mismatch)")
        return tokens
