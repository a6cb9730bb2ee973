"""Two-level range coding of tokens over constriction; numpy only, no torch.

A token id is coded as (bucket, position in bucket): first the bucket among V/K buckets, with
the bucket masses as its distribution, then the token among the K ids of that bucket. This
is exact by the chain rule, costs O(V/K + K) per token instead of constriction's O(V) model
build, and its quantization floor (each symbol gets >= 1/2^24) reserves (V/K + K)/2^24 of
the mass instead of V/2^24 (1.56% at a 262k vocabulary). Costs: docs/PERFORMANCE.md.

Encoder and decoder must hand constriction bit-identical rows. Rows are integer frequencies
(int64, every token >= 1, sums < 2^53) passed as float64, so they are exact, and
constriction's quantizer is a fixed sequence of IEEE operations on them.

Symbols are coded step-major: for each step, the buckets of all segments in the group, then
their tokens. The decoder runs the same order with one batched call per level and step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import constriction
import numpy as np

from llmzip.engine.tables import Tables, as_tables
from llmzip.errors import CorruptArchiveError

__all__ = ["TwoLevel", "CoderRows", "encode_group", "trimmed", "StreamDecoder",
           "default_bucket_size", "code_lengths"]

_FAMILY = constriction.stream.model.Categorical(perfect=False)  # perfect=True: far too slow


def code_lengths(freqs, tokens: np.ndarray) -> np.ndarray:
    """(N,) bits of each token under its row of frequency tables (N, V; `Tables` or an
    array): the model's cross-entropy, what the range coder spends on it but for its tiny
    overhead."""
    tables, tokens = as_tables(freqs), np.asarray(tokens, np.int64)
    p_token = tables.gather(np.arange(len(tokens)), tokens).astype(np.float64)
    return np.log2(tables.totals().astype(np.float64)) - np.log2(p_token)


def default_bucket_size(vocab_size: int) -> int:
    """The power of two nearest sqrt(V): 256 for 49k, 512 for 262k."""
    return 1 << round(math.log2(max(vocab_size, 4)) / 2)


@dataclass
class CoderRows:
    """What the encoder hands the range coder for a run of tokens, and what they cost."""

    masses: np.ndarray  # (T, W) float64: bucket masses
    inner: np.ndarray  # (T, W) float64: frequencies inside each token's bucket
    buckets: np.ndarray  # (T,) int32
    offsets: np.ndarray  # (T,) int32: position in the bucket
    xent_bits: np.ndarray  # (T,) -log2 p(token) under the frequencies coded

    def take(self, j: int) -> "CoderRows":
        """Row j alone."""
        return CoderRows(self.masses[j:j + 1], self.inner[j:j + 1], self.buckets[j:j + 1],
                         self.offsets[j:j + 1], self.xent_bits[j:j + 1])

    @classmethod
    def concat(cls, parts: list["CoderRows"]) -> "CoderRows":
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in
                     ("masses", "inner", "buckets", "offsets", "xent_bits")))


class TwoLevel:
    """Splits [N, V] integer frequency tables into bucket rows and in-bucket rows."""

    def __init__(self, vocab_size: int, bucket_size: int):
        self.vocab_size = vocab_size
        self.bucket_size = bucket_size
        self.n_buckets = -(-vocab_size // bucket_size)
        self.width = max(self.n_buckets, bucket_size)  # both levels share one row width

    def _tables(self, freqs) -> Tables:
        tables = as_tables(freqs)
        if isinstance(freqs, np.ndarray) and freqs.shape[1] != self.vocab_size:
            raise ValueError(f"frequency table has {freqs.shape[1]} columns, expected "
                             f"{self.vocab_size}")
        return tables

    def _row(self, values: np.ndarray) -> np.ndarray:
        out = np.zeros((values.shape[0], self.width), np.float64)
        out[:, :values.shape[1]] = values
        return out

    def masses(self, freqs) -> np.ndarray:
        """(N, width) float64: each bucket's total frequency, for tables (N, V) (`Tables`
        or an array)."""
        return self._row(self._tables(freqs).bucket_sums(self.n_buckets, self.bucket_size))

    def inner(self, freqs, buckets: np.ndarray) -> np.ndarray:
        """(N, width) float64: the frequencies inside each row's given bucket."""
        return self._row(self._tables(freqs).bucket_rows(buckets, self.n_buckets,
                                                         self.bucket_size))

    def split(self, freqs, tokens: np.ndarray) -> CoderRows:
        """Encoder side: the coder's rows for these tokens under these tables; each token's
        cost from its row's total and its entry in its bucket's row."""
        tables = self._tables(freqs)
        tokens = np.asarray(tokens, np.int64)
        buckets, offsets = np.divmod(tokens, self.bucket_size)
        inner = self.inner(tables, buckets)
        p_token = inner[np.arange(len(tokens)), offsets]
        xent = np.log2(tables.totals().astype(np.float64)) - np.log2(p_token)
        return CoderRows(self.masses(tables), inner, buckets.astype(np.int32),
                         offsets.astype(np.int32), xent)


def _steps(rows: list[CoderRows]):
    """(symbols, rows) in stream order: for each step t, the buckets of every segment that
    has a token t, then their positions."""
    for t in range(max(len(r.buckets) for r in rows)):
        active = [r for r in rows if len(r.buckets) > t]
        yield (np.array([r.buckets[t] for r in active], np.int32),
               np.stack([r.masses[t] for r in active]))
        yield (np.array([r.offsets[t] for r in active], np.int32),
               np.stack([r.inner[t] for r in active]))


def _words(rows: list[CoderRows]) -> np.ndarray:
    encoder = constriction.stream.queue.RangeEncoder()
    for symbols, table in _steps(rows):
        encoder.encode(symbols, _FAMILY, table)
    return encoder.get_compressed().astype(np.uint32)


def encode_group(rows: list[CoderRows]) -> bytes:
    """One range-coder stream for segments coded side by side (rows in group order), in
    the order `StreamDecoder` reads them: little-endian 32-bit words."""
    return _words(rows).astype("<u4").tobytes()


def trimmed(rows: list[CoderRows]) -> bytes:
    """The same symbols as the shortest stream whose missing trailing bytes read as zeros
    (`StreamDecoder(..., trimmed=True)`): big-endian words, so that the last word's low
    bytes come last. constriction's encoder ends on the lowest last word that decodes; any
    larger one up to the end of the final interval decodes too, so the last word is rounded
    up to the most trailing zero bytes that still decode, each candidate checked by
    decoding it with the same rows. A short message's stream loses 1.5 bytes on average."""
    words = _words(rows)
    best = words
    for zero_bytes in (4, 3, 2, 1):
        candidate = _rounded_up(words, 8 * zero_bytes)
        if candidate is not None and _decodes(candidate, rows):
            best = candidate
            break
    return best.astype(">u4").tobytes().rstrip(b"\0")


def _rounded_up(words: np.ndarray, bits: int) -> np.ndarray | None:
    """words with the last one rounded up to a multiple of 2^bits (carrying into the one
    before it when it overflows), or None where that is impossible."""
    value = int(words[-1])
    step = 1 << bits
    up = -(-value // step) * step
    out = words.copy()
    if up < 1 << 32:
        out[-1] = up
        return out
    if len(words) < 2 or int(words[-2]) == 0xFFFFFFFF:
        return None
    out[-2], out[-1] = int(words[-2]) + 1, up - (1 << 32)
    return out


def _decodes(words: np.ndarray, rows: list[CoderRows]) -> bool:
    decoder = constriction.stream.queue.RangeDecoder(np.asarray(words, np.uint32))
    try:
        return all(np.array_equal(decoder.decode(_FAMILY, table), symbols)
                   for symbols, table in _steps(rows))
    except (AssertionError, ValueError, RuntimeError):
        return False


class StreamDecoder:
    """Decodes one group's stream, a step (one token per active segment) at a time."""

    def __init__(self, stream: bytes, two_level: TwoLevel, trimmed: bool = False):
        """stream: little-endian 32-bit words (`encode_group`), or with trimmed, big-endian
        words whose trailing zero bytes are left out (`trimmed`)."""
        if trimmed:
            stream = stream + b"\0" * (-len(stream) % 4)
        elif len(stream) % 4:
            raise CorruptArchiveError("range-coder stream is not whole 32-bit words (damaged)")
        words = np.frombuffer(stream, dtype=">u4" if trimmed else "<u4").astype(np.uint32)
        self._decoder = constriction.stream.queue.RangeDecoder(words)
        self.two_level = two_level

    def decode(self, freqs) -> np.ndarray:
        """Token ids (N,) for N segments whose next-token tables are freqs (N, V), `Tables`
        or an array: the bucket masses are read, then each row's decoded bucket."""
        tl = self.two_level
        buckets = self._decode(tl.masses(freqs))
        if (buckets >= tl.n_buckets).any():
            raise CorruptArchiveError("decoded a token outside the vocabulary (archive damaged "
                                      "or model mismatch)")
        offsets = self._decode(tl.inner(freqs, buckets))
        tokens = buckets * tl.bucket_size + offsets
        if (offsets >= tl.bucket_size).any() or (tokens >= tl.vocab_size).any():
            raise CorruptArchiveError("decoded a token outside the vocabulary (archive damaged "
                                      "or model mismatch)")
        return tokens

    def _decode(self, rows: np.ndarray) -> np.ndarray:
        """constriction asserts (rather than raises) on rows it cannot use, such as an all-zero
        row a crafted bucket size produces: that is a damaged archive, not a crash."""
        try:
            return np.asarray(self._decoder.decode(_FAMILY, rows), np.int64)
        except (AssertionError, ValueError, RuntimeError) as exc:
            raise CorruptArchiveError("range-coder stream does not decode (damaged)") from exc
