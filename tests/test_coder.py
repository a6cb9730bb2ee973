"""Two-level range coding: exact round trips, code length near the entropy, pinned output."""

import numpy as np
import pytest
import constriction

from llmzip.coder import StreamDecoder, TwoLevel, default_bucket_size, encode_steps
from llmzip.errors import CorruptArchiveError


def _tables(rng, n, vocab, sharp=6.0):
    logits = rng.standard_normal((n, vocab)) * sharp
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.maximum((p * 2**32).astype(np.int64), 1)


def _sample(rng, freqs):
    p = freqs / freqs.sum(axis=1, keepdims=True)
    return np.array([rng.choice(len(row), p=row) for row in p])


def _encode(two_level, steps):
    rows = [two_level.split(f, t) for f, t in steps]
    return encode_steps((m, i, b, o) for m, i, b, o, _ in rows), sum(r[4].sum() for r in rows)


@pytest.mark.parametrize("vocab, bucket", [(49152, 256), (1000, 32), (100, 16), (262144, 512)])
def test_round_trip_in_lockstep_batches(vocab, bucket):
    rng = np.random.default_rng(vocab)
    two_level = TwoLevel(vocab, bucket)
    steps = []
    for width in (5, 5, 4, 1):  # rows per step shrink as segments end
        freqs = _tables(rng, width, vocab)
        steps.append((freqs, _sample(rng, freqs)))
    stream, _ = _encode(two_level, steps)
    decoder = StreamDecoder(stream, two_level)
    for freqs, tokens in steps:
        assert decoder.decode(freqs).tolist() == tokens.tolist()


def test_code_length_within_0_1_percent_of_cross_entropy():
    rng = np.random.default_rng(7)
    two_level = TwoLevel(49152, 256)
    steps = []
    for _ in range(200):
        freqs = _tables(rng, 8, 49152, sharp=2.0)
        steps.append((freqs, _sample(rng, freqs)))
    stream, xent_bits = _encode(two_level, steps)
    assert xent_bits > 5000
    assert 8 * len(stream) <= xent_bits * 1.001 + 64


def test_default_bucket_sizes():
    assert default_bucket_size(49152) == 256
    assert default_bucket_size(262144) == 512


def test_stream_bytes_are_pinned():
    """Encoder output for fixed tables, byte for byte: any drift in the coder fails here."""
    two_level = TwoLevel(100, 16)
    freqs = np.arange(1, 201, dtype=np.int64).reshape(2, 100) ** 2
    stream, _ = _encode(two_level, [(freqs, np.array([3, 97]))])
    assert stream.hex() == PINNED


PINNED = "ef8c0e01"


def test_impossible_bucket_is_reported_as_corruption():
    two_level = TwoLevel(100, 16)  # 7 real buckets, rows padded to 16
    freqs = np.ones((1, 100), np.int64)
    fam = constriction.stream.model.Categorical(perfect=False)
    enc = constriction.stream.queue.RangeEncoder()  # a padding bucket keeps the 2^-24 floor
    enc.encode(np.array([12], np.int32), fam, two_level.masses(freqs))
    stream = enc.get_compressed().astype("<u4").tobytes()
    with pytest.raises(CorruptArchiveError, match="outside the vocabulary"):
        StreamDecoder(stream, two_level).decode(freqs)


def test_stream_of_partial_words_is_corrupt():
    with pytest.raises(CorruptArchiveError, match="32-bit words"):
        StreamDecoder(b"\x01\x02\x03", TwoLevel(100, 16))
