"""The numba backend's own kernels: each instruction set's products, the registry's choice,
the KV cache's layout, and threads.

`test_backends.py` holds the backend as a whole to the reference integers; these tests pin
what is particular to the CPU: which kernel a step takes, that each (AMX, VNNI, AVX2,
torch's int8 matmul) gives the numba kernels' tables where it runs, one thread or two.
"""

import time

import numba
import numpy as np
import pytest
from conftest import ADVERSARIAL_ROWS, RNG, alice_ids, full_tables, stepped_tables

from llmzip.codec.lockstep import ThreadTuner
from llmzip.engine.exact import rules as ar
from llmzip.engine.exact.cpu import amx, avx2, scores, vnni
from llmzip.engine.exact.cpu import attention as attention_kernels
from llmzip.engine.exact.cpu import backend as numba_backend
from llmzip.engine.exact.cpu import products as kernels
from llmzip.engine.factory import open_engine


@pytest.fixture(params=["tiny_llama", "tiny_gemma"])
def engine_and_model(request):
    return open_engine(request.getfixturevalue(request.param), None)






def _kernels(engine, rows, max_len=30):
    """The fused kernels a decoder of `rows` rows may take, and 'int8' where it has torch's."""
    products = engine.stepper(rows, max_len).products
    return {k.name for k in products.kernels} | ({"int8"} if products.int8 else set())




@pytest.mark.threads
def test_one_and_two_threads_give_identical_tables(engine_and_model):
    engine, model = engine_and_model
    ids = alice_ids(model)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = full_tables(engine, ids), stepped_tables(engine, [ids])
        numba.set_num_threads(2)
        two = full_tables(engine, ids), stepped_tables(engine, [ids])
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(one[0], two[0]) and np.array_equal(one[1], two[1])


class _Clocked:
    """A stepper whose step takes 2 ms on 2 threads and 5 ms on 1, until a neighbour
    comes: then 2 threads take 15 ms."""

    def __init__(self):
        self.neighbour, self.threads = False, []

    def step(self, inputs):
        n = numba.get_num_threads()
        self.threads.append(n)
        time.sleep(0.005 if n == 1 else 0.015 if self.neighbour else 0.002)
        return inputs


@pytest.mark.threads
def test_the_thread_tuner_probes_less_on_a_quiet_machine_and_at_once_when_a_neighbour_comes():
    before = numba.get_num_threads()
    stepper, tuner, inputs = _Clocked(), ThreadTuner(2), np.zeros(1, np.int64)
    try:
        for _ in range(600):
            tuner.step(stepper, inputs)
        quiet = stepper.threads.count(1)  # probes at 0, 128, 384: 6 one-thread steps (at
        assert 2 <= quiet <= 12  # every 64 steps, 19)
        stepper.neighbour = True
        for _ in range(40):
            tuner.step(stepper, inputs)
    finally:
        numba.set_num_threads(before)
    assert stepper.threads[600 + 6:] == [1] * 34  # the slow step, a probe, then 1 thread


@pytest.mark.parametrize("row", ADVERSARIAL_ROWS.values(), ids=ADVERSARIAL_ROWS.keys())
def test_float32_blas_and_int8_tiles_give_the_exact_products(row):
    """Worst-case weights (all +-127, signs matching the input) on every adversarial row;
    5 rows and 7 outputs take every path of the tiles (4 rows, a row left over, 4
    outputs, 3 left over)."""
    x = np.vstack([row, -row, row[::-1], 0.5 * row, row])
    q, scale = np.empty(x.shape, np.float32), np.empty(len(x))  # the engine's types
    ar.quantize_rows(x, q, scale)
    signs = np.where(q[0] >= 0, 127, -127)
    w = np.vstack([signs, -signs, RNG.integers(-127, 128, (4, q.shape[1])), signs[::-1]])
    w = w.astype(np.int8)
    w.setflags(write=False)  # as the engine's memory-mapped weights
    exact = q.astype(np.int64) @ w.astype(np.int64).T
    assert np.array_equal(kernels.products_blas(q, w), exact)
    for rows in (1, 3, 5):  # one int32 dot per output under 4 rows, float32 tiles from 4
        assert np.array_equal(kernels.products_tiles(q[:rows], w), exact[:rows])
    if kernels.int8_matmul_is_exact():  # torch's int8 matmul on two limbs, where exact
        assert np.array_equal(kernels.products_int8(q, kernels.int8_weights(w)), exact)
    row_f, col_f = RNG.random(len(q)) * 1e-3, RNG.random(len(w)) * 1e-2
    expected, out = np.empty(exact.shape), np.empty(exact.shape)
    ar.scale_products(exact, row_f, col_f, expected)
    for rows in (1, 2, 3):  # the decoder's few rows: dots and scaling in one pass
        kernels.products_dots_scaled(q[:rows], w, row_f[:rows], col_f, out[:rows])
        assert np.array_equal(out[:rows], expected[:rows])


def test_int8_matmul_is_used_only_where_exact(monkeypatch):
    """A platform whose int8 matmul saturates (x86 without VNNI sums pairs in int16) is
    found out by the check, and the decoder keeps the numba kernels there."""
    import torch
    exact_here = kernels.int8_matmul_is_exact()
    saturating = lambda a, b: torch.clamp(a.int() @ b.int(), -2**15, 2**15 - 1)  # noqa: E731
    monkeypatch.setattr(torch, "_int_mm", saturating)
    assert not kernels.int8_matmul_is_exact.__wrapped__()
    monkeypatch.undo()
    assert kernels.int8_matmul_is_exact.__wrapped__() == exact_here


def test_int8_matmul_serves_only_with_vnni(monkeypatch):
    """Exact is not enough: without VNNI torch's exact int8 matmul is a generic loop, far
    slower than the tiles (an AVX2 AMD EPYC), so the decoder does not use it there."""
    import llvmlite.binding as llvm
    features = llvm.get_host_cpu_features()
    for vnni_flags, expected in (({"avx512vnni": False, "avxvnni": False}, False),
                                 ({"avx512vnni": True, "avxvnni": False}, True),
                                 ({"avx512vnni": False, "avxvnni": True}, True)):
        monkeypatch.setattr(llvm, "get_host_cpu_features",
                            lambda: {**features, **vnni_flags})
        assert kernels.int8_matmul_serves.__wrapped__() == (
            expected and kernels.int8_matmul_is_exact())


def test_int8_matmul_decoder_gives_the_tiles_tables(tiny_llama, monkeypatch):
    """From INT8_ROWS rows the decoder multiplies with torch's int8 matmul where it
    serves: the same tables as the numba tiles, row for row. Run wherever it is exact,
    VNNI or not (told it serves)."""
    if not kernels.int8_matmul_is_exact():
        pytest.skip("torch's int8 matmul is not exact on this CPU: tiles only")
    monkeypatch.setattr(numba_backend, "int8_matmul_serves", lambda: True)
    engine, model = open_engine(tiny_llama, None)
    sequences = [alice_ids(model, 30, offset=700 * i) for i in range(kernels.INT8_ROWS + 1)]
    for module in (amx, avx2):  # (AMX would serve these rows; AVX2 the tiles' share)
        monkeypatch.setattr(module, "available", lambda: False)
    assert len(sequences) > vnni.MAX_ROWS  # (fewer rows would go to VNNI where it serves)
    assert engine.stepper(len(sequences), 30).products.int8
    with_int8 = stepped_tables(engine, sequences)
    monkeypatch.setattr(numba_backend, "int8_matmul_serves", lambda: False)
    assert not engine.stepper(len(sequences), 30).products.int8
    assert np.array_equal(with_int8, stepped_tables(engine, sequences))


needs_vnni = pytest.mark.skipif(not vnni.available(), reason="no AVX-512 VNNI on this CPU")


@needs_vnni
@pytest.mark.parametrize("rows", range(1, vnni.MAX_ROWS + 1))
def test_vnni_products_equal_the_scaled_integer_products(rows):
    """The VNNI kernel against int64 sums scaled by `scale_products`'s rule, bit for bit:
    extreme inputs (+-ACT_MAX, both limbs at their ends) and weights (127, -128), an odd
    number of outputs (the last one alone), three blocks of features."""
    w = RNG.integers(-128, 128, (75, 3 * vnni.BLOCK), dtype=np.int8)
    w[:3], w[3:6], w[-1] = 127, -128, -128
    x = RNG.integers(-300, 301, (rows, w.shape[1])).astype(np.float32)
    x[0, :5] = ar.ACT_MAX
    x[-1, 5:9] = -ar.ACT_MAX
    x[:, 9] = [-1, 0, 255, 256, -256, -32768 + 129][:rows]  # a limb at 0 or 255
    row, col = RNG.random(rows) * 1e-3, RNG.random(w.shape[0]) * 1e-2
    out = np.empty((rows, w.shape[0]))
    vnni.products_scaled(x, w, vnni.weight_sums(w), row, col, out)
    expected = np.empty_like(out)
    ar.scale_products(x.astype(np.int64) @ w.T.astype(np.int64), row, col, expected)
    assert np.array_equal(out, expected)


@needs_vnni
def test_vnni_decoder_gives_the_numba_tables(tiny_llama, monkeypatch):
    """A decoder of up to MAX_ROWS rows multiplies by VNNI where it serves (the tiny
    model's widths are multiples of 64): its tables equal the numba kernels', row for row."""
    engine, model = open_engine(tiny_llama, None)
    sequences = [alice_ids(model, 30, offset=700 * i) for i in range(3)]
    assert "vnni" in _kernels(engine, 3, 30)
    with_vnni = stepped_tables(engine, sequences)
    for module in (vnni, avx2):
        monkeypatch.setattr(module, "available", lambda: False)
    assert "vnni" not in _kernels(engine, 3, 30)
    assert np.array_equal(with_vnni, stepped_tables(engine, sequences))


needs_avx2 = pytest.mark.skipif(not avx2.available(), reason="no AVX2 on this CPU")


@needs_avx2
@pytest.mark.parametrize("rows", [1, 2, 3, 12, 13, 16, 17])
def test_avx2_products_equal_the_scaled_integer_products(rows):
    """The AVX2 kernel against int64 sums scaled by `scale_products`'s rule, bit for bit:
    extreme inputs (+-ACT_MAX) and weights (127, -128), three blocks of features; one
    group of rows, more than one, and more than a pass."""
    w = RNG.integers(-128, 128, (75, 3 * avx2.BLOCK), dtype=np.int8)
    w[:3], w[3:6], w[-1] = 127, -128, -128
    x = RNG.integers(-300, 301, (rows, w.shape[1])).astype(np.float32)
    x[0, :5] = ar.ACT_MAX
    x[-1, 5:9] = -ar.ACT_MAX
    row, col = RNG.random(rows) * 1e-3, RNG.random(w.shape[0]) * 1e-2
    out = np.empty((rows, w.shape[0]))
    avx2.products_scaled(x, w, row, col, out)
    expected = np.empty_like(out)
    ar.scale_products(x.astype(np.int64) @ w.T.astype(np.int64), row, col, expected)
    assert np.array_equal(out, expected)


@needs_avx2
@pytest.mark.parametrize("rows", [2, 7])
def test_avx2_decoder_gives_the_numba_tables(tiny_llama, monkeypatch, rows):
    """A decoder multiplies by AVX2 where it serves and neither AMX, VNNI nor torch's
    int8 matmul does: its tables equal the numba kernels' (dots under 4 rows, tiles from
    4), row for row."""
    for module in (amx, vnni):
        monkeypatch.setattr(module, "available", lambda: False)
    monkeypatch.setattr(numba_backend, "int8_matmul_serves", lambda: False)
    engine, model = open_engine(tiny_llama, None)
    sequences = [alice_ids(model, 30, offset=700 * i) for i in range(rows)]
    assert "avx2" in _kernels(engine, rows, 30)
    with_avx2 = stepped_tables(engine, sequences)
    monkeypatch.setattr(avx2, "available", lambda: False)
    assert "avx2" not in _kernels(engine, rows, 30)
    assert np.array_equal(with_avx2, stepped_tables(engine, sequences))


needs_amx = pytest.mark.skipif(not amx.available(), reason="no AMX tiles in this process")


@needs_amx
@pytest.mark.parametrize("rows", [1, 2, 7, 8, 9, 16])
def test_amx_products_equal_the_scaled_integer_products(rows):
    """The AMX kernel against int64 sums scaled by `scale_products`'s rule, bit for bit:
    one tile of limb rows, a full one, two; extreme inputs and weights; three tiles of
    outputs, three of features (each thread's share of output tiles differs)."""
    w = RNG.integers(-128, 128, (3 * amx.TILE, 3 * vnni.BLOCK), dtype=np.int8)
    w[:3], w[3:6], w[-1] = 127, -128, -128
    x = RNG.integers(-300, 301, (rows, w.shape[1])).astype(np.float32)
    x[0, :5] = ar.ACT_MAX
    x[-1, 5:9] = -ar.ACT_MAX
    x[:, 9] = np.resize([-1, 0, 255, 256, -256, -32768 + 129], rows)  # a limb at 0 or 255
    row, col = RNG.random(rows) * 1e-3, RNG.random(w.shape[0]) * 1e-2
    out = np.empty((rows, w.shape[0]))
    amx.products_scaled(x, amx.pack(w), vnni.weight_sums(w), row, col, out)
    expected = np.empty_like(out)
    ar.scale_products(x.astype(np.int64) @ w.T.astype(np.int64), row, col, expected)
    assert np.array_equal(out, expected)


@needs_amx
def test_amx_decoder_gives_the_numba_tables(tiny_llama, monkeypatch):
    """A decoder of up to 16 rows multiplies by AMX where it serves (the tiny model's
    sizes are multiples of 16 and 64; its segments here too short to pay for packing the
    weights, unless told), 9 rows here (two tiles of limb rows): its tables equal the
    numba kernels', row for row."""
    engine, model = open_engine(tiny_llama, None)
    assert "amx" not in _kernels(engine, 9, 30)
    monkeypatch.setattr(amx, "MIN_STEPS", 30)
    sequences = [alice_ids(model, 30, offset=500 * i) for i in range(9)]
    assert "amx" in _kernels(engine, 9, 30)
    with_amx = stepped_tables(engine, sequences)
    for module in (amx, vnni, avx2):
        monkeypatch.setattr(module, "available", lambda: False)
    monkeypatch.setattr(numba_backend, "int8_matmul_serves", lambda: False)
    assert _kernels(engine, 9) == {"dots"}
    assert np.array_equal(with_amx, stepped_tables(engine, sequences))


@pytest.mark.parametrize("groups", [1, 2, 3, 4])
def test_cached_attention_equals_exact_integer_attention(groups):
    """The decoder's attention kernel against the rules written out with int64 sums, for
    query heads per KV head in pairs (1, 2, 4) and in threes (3), over a windowed span
    that starts and ends inside blocks of keys, with extreme queries, keys and values and
    some zero value scales."""
    rows, heads, dim, cached, lo, hi = 2, 2, 8, 40, 5, 30
    q = RNG.integers(-4000, 4001, (rows, heads, groups, dim)).astype(np.float32)
    q[0, 0, 0, :2], q[-1, -1, -1, 1:3] = 32767, -32767  # int16's ends, beside 127 and -127
    q_scale = RNG.random((rows, heads, groups)) * 1e-3
    keys_t = RNG.choice([-127, -1, 0, 3, 127], (rows, heads, dim, cached)).astype(np.int8)
    values_t = RNG.integers(-127, 128, (rows, heads, dim, cached)).astype(np.int8)
    k_factor = RNG.random((rows, heads, cached)) * 100
    v_scale = RNG.random((rows, heads, cached)) * (RNG.random((rows, heads, cached)) > 0.2)
    out = np.empty(q.shape)
    attention_kernels.attend_cached(scores.query_pairs(q), q_scale,
                          scores.key_blocks(keys_t.swapaxes(-1, -2)), k_factor, values_t,
                          v_scale, lo, hi, ar.ATTENTION_EXP, out, (0,) * groups)
    span = slice(lo, hi + 1)
    for b, h, g in np.ndindex(rows, heads, groups):
        dots = q[b, h, g].astype(np.int64) @ keys_t[b, h, :, span].astype(np.int64)
        logits = dots.astype(np.float64) * (q_scale[b, h, g] * k_factor[b, h, span])
        folded = np.empty(hi + 1 - lo)
        scale = ar.fold_weights(logits, v_scale[b, h, span], v_scale[b, h, span].max(),
                                ar.ATTENTION_EXP, folded)
        want = (folded.astype(np.int64) @ values_t[b, h, :, span].T.astype(np.int64)) * scale
        assert np.array_equal(out[b, h, g], want)


def test_stepper_cache_is_int8_with_one_scale_per_vector(tiny_llama):
    engine, _ = open_engine(tiny_llama, None)
    cache = engine.stepper(3, 50).cache
    assert isinstance(cache, numba_backend.KVCache)
    assert cache.key_blocks.dtype == cache.values_t.dtype == np.int8
    assert engine.cache_bytes(3, 50) == (cache.key_blocks.nbytes + cache.values_t.base.nbytes
                                         + cache.k_factor.nbytes + cache.v_scale.nbytes)
    assert cache.key_blocks.shape[-3:] == (7, cache.net.head_dim // 2, 16)  # 51 in 8s
    lines, left = divmod(cache.values_t.strides[-2], 64)  # channels an odd number of lines
    assert left == 0 and lines % 2 == 1 and cache.values_t.shape[-1] == 51  # apart
