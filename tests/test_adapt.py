"""Adaptation (`llmzip.adapt`): exact, recorded in the header, and worth its bytes."""

import dataclasses
import random
import string
import zlib

import numpy as np
import pytest
from conftest import corpus_file

from llmzip import Codec, CorruptArchiveError
from llmzip.codec.adapt import MAX_TOTAL, Adapter, _spread
from llmzip.container import Adaptation, Method, pack, unpack

SMALL = dict(segment_tokens=64, group_size=4)


def test_adapted_archive_is_format_3_records_counts_and_round_trips(tiny_llama, codecs):
    data = corpus_file("alice29.txt")[:6000]
    blob = codecs(tiny_llama, segment_tokens=128, group_size=8).compress(data)
    header = unpack(blob)[0]
    assert blob[4] == 3 and header.model.adaptation == Adaptation.COUNTS
    assert Codec(tiny_llama).decompress(blob) == data


def test_pure_archive_stays_format_1(tiny_llama, codecs):
    blob = codecs(tiny_llama, adapt="none", **SMALL).compress(corpus_file("alice29.txt")[:800])
    assert blob[4] == 1 and unpack(blob)[0].model.adaptation == Adaptation.NONE


def test_a_short_file_that_adapting_cannot_help_is_coded_by_the_model_alone(tiny_llama, codecs):
    """800 bytes save less than ADAPTATION_BITS: coded again without adaptation, so the
    archive is the pure one, byte for byte, and explain sees each table once."""
    data = corpus_file("alice29.txt")[:800]
    pure = codecs(tiny_llama, adapt="none", **SMALL).compress(data)
    seen = []
    blob, stats = codecs(tiny_llama, **SMALL).compress_with_stats(
        data, observe=lambda start, freqs: seen.clear() if start is None else seen.append(len(freqs)))
    assert blob == pure and blob[4] == 1
    assert sum(seen) == stats.n_tokens


def test_the_second_pass_of_a_short_file_reuses_the_first_forward(tiny_llama, monkeypatch):
    """Coding again without adaptation needs the same tables: the model runs once for each
    position, not twice, and the archive is still the pure one."""
    from llmzip.engine.exact import network
    data = corpus_file("alice29.txt")[4000:4800]
    rows, hidden = [], network.ExactNetwork._hidden
    monkeypatch.setattr(network.ExactNetwork, "_hidden", lambda self, segments, backend:
                        rows.append(sum(map(len, segments))) or hidden(self, segments, backend))
    blob, stats = Codec(tiny_llama, **SMALL).compress_with_stats(data)
    assert unpack(blob)[0].model.adaptation == Adaptation.NONE  # it was coded again
    assert len(unpack(blob)[0].blocks) > 1 and sum(rows) == stats.n_tokens
    assert blob == Codec(tiny_llama, adapt="none", **SMALL).compress(data)


def test_text_costs_less_adapted(tiny_llama, codecs):
    """Even a 2-layer model of alice29 gains from what followed each context in its group."""
    data = corpus_file("alice29.txt")[:6000]
    pure = codecs(tiny_llama, adapt="none", segment_tokens=128, group_size=8)
    adapted = codecs(tiny_llama, segment_tokens=128, group_size=8)
    pure_bits = pure.compress_with_stats(data)[1].xent_bits
    blob, stats = adapted.compress_with_stats(data)
    assert stats.xent_bits < 0.995 * pure_bits  # measured: -1.1%
    assert Codec(tiny_llama).decompress(blob) == data


@pytest.mark.threads
@pytest.mark.parametrize("threads, batch", [(1, 1), (2, 3), (1, None)])
def test_adapted_archive_decodes_with_any_threads_and_batch(tiny_gemma, codecs, threads, batch):
    data = corpus_file("asyoulik.txt")[9000:16000]
    blob = codecs(tiny_gemma, threads=2, segment_tokens=128, group_size=8).compress(data)
    assert blob[4] == 3  # adapting paid
    assert Codec(tiny_gemma, threads=threads, decode_batch=batch).decompress(blob) == data


def test_full_and_stepped_encoders_write_the_same_adapted_archive(tiny_llama):
    data = corpus_file("argparse.py")[:2500]
    full = Codec(tiny_llama, **SMALL).compress(data)
    stepped = Codec(tiny_llama, encoder="stepped", **SMALL).compress(data)
    assert full == stepped


def test_a_segment_given_to_lzma_regroups_the_rest_and_still_decodes(tiny_llama, codecs):
    """Segments after one that LZMA codes better form other groups than the ones adapted
    together at first: those groups are coded again, so the decoder's groups match."""
    text, noise = corpus_file("alice29.txt"), random.Random(1).choices(string.ascii_letters, k=900)
    data = text[:600] + "".join(noise).encode() + text[600:1800]
    blob, stats = codecs(tiny_llama, **SMALL).compress_with_stats(data)
    methods = [b.method for b in unpack(blob)[0].blocks]
    assert Method.LZMA in methods and methods[0] == methods[-1] == Method.MODEL
    assert Codec(tiny_llama).decompress(blob) == data
    assert stats.xent_bits <= stats.code_bits <= stats.xent_bits * 1.01 + 64 * len(
        unpack(blob)[0].stream_sizes)


def _with_adaptation_byte(blob: bytes, value: int) -> bytes:
    """The archive with its header's adaptation byte set to value, as a format-3 header
    (found as the one byte but the version and CRC where counts-v1 and counts differ)."""
    header, payloads, streams = unpack(blob)
    a, b = (bytearray(pack(dataclasses.replace(header, model=dataclasses.replace(
        header.model, adaptation=mode)), payloads, streams))
        for mode in (Adaptation.COUNTS_V1, Adaptation.COUNTS))
    [at] = [i for i in range(5, len(b) - 4) if a[i] != b[i]]
    b[at] = value
    b[-4:] = zlib.crc32(b[:-4]).to_bytes(4, "little")
    return bytes(b)


@pytest.mark.parametrize("value, error", [
    (7, "unknown adaptation 7 in archive header"),  # as a newer llmzip might write
    (1, "adaptation counts-v1 in a format version 3 header"),
    (0, "adaptation none in a format version 3 header"),
])
def test_an_adaptation_byte_its_version_does_not_name_is_refused(tiny_llama, codecs, value, error):
    blob = codecs(tiny_llama, **SMALL).compress(corpus_file("alice29.txt")[:800])
    with pytest.raises(CorruptArchiveError, match=error):
        unpack(_with_adaptation_byte(blob, value))
    assert unpack(_with_adaptation_byte(blob, 2))[0].model.adaptation == Adaptation.COUNTS


@pytest.mark.parametrize("followers, spread", [
    ({5: 1}, 0), ({5: 2}, 1), ({5: 9}, 1), ({5: 4, 6: 4}, 2), ({5: 3, 6: 4}, 3),
    ({t: 1 for t in range(20)}, 3)])
def test_spread_classes(followers, spread):
    assert _spread(followers) == spread


def test_adjusted_tables_stay_positive_and_within_the_coders_range():
    """Counts saturated on one token, weights pushed to their limits: every frequency
    stays >= 1 and each row sums below 2^52."""
    rng = np.random.default_rng(3)
    adapter = Adapter(2)
    adapter.weights[:] = 1 << 22  # a bias far past the clamp
    for _ in range(300):
        freqs = rng.integers(1, 1 << 32, size=(2, 50000), dtype=np.int64)
        freqs[:, 5] = 1  # the counted token starts at the floor
        adapter.adjust(freqs, [0, 1])
        assert freqs.min() >= 1 and int(freqs.sum(axis=1).max()) < MAX_TOTAL
        adapter.learn([5, 5])
    assert adapter.counts[0][(5,)][5] == 2 * 299  # both rows, every step after the first


def test_learning_is_the_same_whatever_the_row_order():
    """The decoder may see a step's rows in another order than the encoder (longest first
    against block order): tables and weights must not depend on it."""
    rng = np.random.default_rng(5)
    steps = [(rng.integers(1, 1 << 32, size=(3, 3000), dtype=np.int64),
              rng.integers(0, 40, size=3)) for _ in range(200)]
    results = []
    for order in ([0, 1, 2], [2, 0, 1]):
        adapter, tables = Adapter(3), []
        for freqs, tokens in steps:
            mine = adapter.adjust(freqs[order].copy(), order)
            tables.append(mine[np.argsort(order)])
            adapter.learn(tokens[order])
        results.append((np.stack(tables), adapter.weights.copy()))
    assert np.array_equal(results[0][0], results[1][0])
    assert np.array_equal(results[0][1], results[1][1]) and results[0][1].any()
