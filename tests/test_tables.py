"""Tables where they were computed: every reading and change gives the same integers on the
host and on a torch device, and the codec never copies a device's whole tables back.

The device here is torch's CPU (`--device torch:cpu`, the same code as on a GPU), and the
reference is the numpy array itself: `HostTables` over it, its rows, and plain indexing.
"""

import numpy as np
import pytest
import torch
from conftest import corpus_file

from llmzip import Codec
from llmzip.codec.adapt import MAX_TOTAL, Adapter
from llmzip.codec.rangecoder import TwoLevel, code_lengths
from llmzip.engine.exact.device.tables import DeviceTables
from llmzip.engine.tables import HostTables, across, copied

V, K = 1000, 64  # the last bucket is short: 16 buckets, 1,024 padded entries
RNG = np.random.default_rng(11)


def _freqs(rows: int = 6, high: int = 1 << 32) -> np.ndarray:
    return RNG.integers(1, high, (rows, V), dtype=np.int64)


def _kinds(freqs: np.ndarray) -> dict:
    """The same tables four ways: a host array, host row views, a device tensor and a
    device view of some rows of a larger tensor."""
    padded = np.concatenate([_freqs(2), freqs, _freqs(3)])
    return {"host": HostTables(freqs.copy()), "host rows": HostTables(list(freqs.copy())),
            "device": DeviceTables(torch.as_tensor(freqs.copy())),
            "device view": DeviceTables(torch.as_tensor(padded),
                                        np.arange(2, 2 + len(freqs)))}


def test_every_reading_is_the_same_wherever_the_tables_are():
    freqs = _freqs()
    buckets = RNG.integers(0, 16, len(freqs))
    buckets[0] = 15  # the short bucket
    grouped = np.concatenate([freqs, np.zeros((len(freqs), 24), np.int64)], axis=1).reshape(
        len(freqs), 16, K)
    for name, tables in _kinds(freqs).items():
        assert len(tables) == len(freqs), name
        assert np.array_equal(tables.totals(), freqs.sum(axis=1)), name
        assert np.array_equal(tables.maxima(), freqs.max(axis=1)), name
        assert np.array_equal(tables.gather(np.array([0, 0, 5]), np.array([3, 999, 0])),
                              freqs[[0, 0, 5], [3, 999, 0]]), name
        assert np.array_equal(tables.bucket_sums(16, K), grouped.sum(axis=2)), name
        assert np.array_equal(tables.bucket_rows(buckets, 16, K),
                              grouped[np.arange(len(freqs)), buckets]), name
        assert np.array_equal(np.asarray(tables.take([4, 1])), freqs[[4, 1]]), name
        assert np.array_equal(np.asarray(tables), freqs), name


def test_every_change_writes_through_and_reads_back_the_same():
    freqs = _freqs()
    expected = freqs.copy()
    expected[[1, 1, 3], [7, 8, 999]] = [5, 6, 1 << 40]
    expected[3] = np.maximum(expected[3] >> 9, 1)
    for name, tables in _kinds(freqs).items():
        tables.totals()  # read before the changes: they must not be kept stale
        tables.scatter(np.array([1, 1, 3]), np.array([7, 8, 999]), np.array([5, 6, 1 << 40]))
        tables.rescale(3, 9)
        assert np.array_equal(np.asarray(tables), expected), name
        assert np.array_equal(tables.totals(), expected.sum(axis=1)), name
        assert np.array_equal(tables.maxima(), expected.max(axis=1)), name


def test_a_step_across_a_chunks_segments_writes_through_to_each():
    """The encoder adapts row t of each segment's tables together (`across`)."""
    chunk = _freqs(7)
    host = {0: chunk[:4].copy(), 1: chunk[4:].copy()}
    base = torch.as_tensor(chunk.copy())
    device = {0: DeviceTables(base, np.arange(0, 4)), 1: DeviceTables(base, np.arange(4, 7))}
    for parts in (host, device):
        step = across([parts[0], parts[1]], 2)
        assert np.array_equal(step.totals(), chunk[[2, 6]].sum(axis=1))
        step.scatter(np.array([0, 1]), np.array([10, 11]), np.array([1, 2]))
    assert host[0][2, 10] == 1 and host[1][2, 11] == 2
    assert base[2, 10] == 1 and base[6, 11] == 2
    kept = copied(device)
    across([kept[0], kept[1]], 0).scatter(np.array([0]), np.array([0]), np.array([9]))
    assert base[0, 0] != 9 and np.asarray(kept[0])[0, 0] == 9  # a copy, still one chunk
    with pytest.raises(ValueError, match="different chunks"):
        across([device[0], kept[1]], 0)


def test_the_coders_rows_are_the_same_wherever_the_tables_are():
    freqs, tokens = _freqs(), RNG.integers(0, V, 6)
    two_level = TwoLevel(V, K)
    reference = two_level.split(freqs, tokens)
    for name, tables in _kinds(freqs).items():
        rows = two_level.split(tables, tokens)
        for field in ("masses", "inner", "buckets", "offsets", "xent_bits"):
            assert np.array_equal(getattr(rows, field), getattr(reference, field)), (name, field)
        assert np.array_equal(code_lengths(tables, tokens), reference.xent_bits), name


def _adapt(kind: str, steps) -> tuple[list[np.ndarray], np.ndarray]:
    adapter, seen = Adapter(3), []
    adapter.weights[:] = 1 << 20  # biases at the clamp: totals pass MAX_TOTAL, rows rescale
    for freqs, tokens in steps:
        tables = _kinds(freqs)[kind]
        adapter.adjust(tables, [0, 1, 2])
        seen.append((np.asarray(tables), [(r.pure_total, r.total) for r in adapter._pending]))
        adapter.learn(tokens)
    return seen, adapter.weights.copy()


def test_adapting_gives_the_same_tables_wherever_they_are():
    """Rows summing to about 2^51 and biases (all upwards) at the clamp: rows pass
    MAX_TOTAL and are rescaled, the path real tables never take."""
    steps = [(_freqs(3, 1 << 42), RNG.integers(0, 12, 3)) for _ in range(60)]
    reference, weights = _adapt("host", steps)
    assert sum(after < before for _, totals in reference for before, after in totals) > 10
    for kind in ("host rows", "device", "device view"):
        seen, kind_weights = _adapt(kind, steps)
        assert np.array_equal(kind_weights, weights), kind
        for (tables, totals), (ref_tables, ref_totals) in zip(seen, reference):
            assert np.array_equal(tables, ref_tables) and totals == ref_totals, kind
            assert max(t for _, t in totals) < MAX_TOTAL and tables.min() >= 1


def test_the_codec_never_copies_a_devices_whole_tables_to_the_host(tiny_llama, monkeypatch):
    """Compressing and decompressing on the torch backend reads only the coder's rows of
    the tables (with adaptation on, and several groups decoded side by side), and the
    archive is numba's, byte for byte."""
    data = corpus_file("alice29.txt")[:2500]
    settings = dict(segment_tokens=64, group_size=3)
    expected = Codec(tiny_llama, **settings).compress(data)

    def whole(self, dtype=None, copy=None):
        raise AssertionError("a device's whole tables were copied to the host")

    monkeypatch.setattr(DeviceTables, "__array__", whole)
    codec = Codec(tiny_llama, device="torch:cpu", **settings)
    assert codec.compress(data) == expected
    assert codec.decompress(expected) == data
