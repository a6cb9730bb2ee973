"""Exact arithmetic: identical integer tables whatever the path, threads, batch or kernel."""

import math
import time

import numba
import numpy as np
import pytest

from llmzip import arithmetic as ar
from llmzip import amx, avx2, kernels, network, scores, vnni
from llmzip.engine import open_engine
from llmzip.lockstep import ThreadTuner
from llmzip.network import NO_GAIN, Stepper, _quantize
from llmzip.tables import exp_table, grown, persisted, rope_table, sigmoid_table

from conftest import corpus_file

N_TOKENS = 80  # longer than the tiny Gemma's 16-token sliding window
RNG = np.random.default_rng(0)


@pytest.fixture(params=["tiny_llama", "tiny_gemma"])
def engine_and_model(request):
    return open_engine(request.getfixturevalue(request.param), None)


def _ids(model, n=N_TOKENS, offset=0):
    return model.tokenizer.encode(corpus_file("alice29.txt")[offset:offset + 4 * n])[:n]


def _full(engine, ids):
    return np.concatenate(list(engine.full_tables(ids)))


def _stepped(engine, sequences):
    """Tables of every position of each sequence, rows stepped together, (rows, T, V)."""
    stepper = engine.stepper(len(sequences), len(sequences[0]))
    inputs = np.full(len(sequences), engine.context_start_id)
    out = []
    for t in range(len(sequences[0])):
        out.append(stepper.step(inputs))
        inputs = np.array([s[t] for s in sequences])
    return np.stack(out, axis=1)


def test_full_forward_equals_kv_cached_steps(engine_and_model):
    engine, model = engine_and_model
    ids = _ids(model)
    assert np.array_equal(_full(engine, ids), _stepped(engine, [ids])[0])


@pytest.mark.threads
def test_one_and_two_threads_give_identical_tables(engine_and_model):
    engine, model = engine_and_model
    ids = _ids(model)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _full(engine, ids), _stepped(engine, [ids])
        numba.set_num_threads(2)
        two = _full(engine, ids), _stepped(engine, [ids])
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


def test_a_row_gets_the_same_tables_alone_or_with_seven_others(engine_and_model):
    engine, model = engine_and_model
    sequences = [_ids(model, 40, offset=1000 * i) for i in range(8)]
    together = _stepped(engine, sequences)
    for i in (0, 5):
        assert np.array_equal(together[i], _stepped(engine, [sequences[i]])[0])
        assert np.array_equal(together[i], _full(engine, sequences[i]))


def test_rows_that_end_early_leave_the_others_unchanged(tiny_llama):
    engine, model = open_engine(tiny_llama, None)
    long, short = _ids(model, 30), _ids(model, 12, offset=500)
    stepper = engine.stepper(2, 30)
    inputs, tables = np.array([engine.context_start_id] * 2), []
    for t in range(30):
        tables.append(stepper.step(inputs)[0])
        inputs = np.array([long[t], short[t]]) if t + 1 < len(short) else np.array([long[t]])
    assert np.array_equal(np.stack(tables), _full(engine, long))


def test_exact_cross_entropy_is_within_half_a_percent_of_the_float_model(engine_and_model):
    import torch
    engine, model = engine_and_model
    ids = _ids(model, 200)
    freqs = _full(engine, ids)
    exact_bits = -np.log2(freqs[np.arange(len(ids)), ids] / freqs.sum(axis=1)).sum()
    with torch.no_grad():
        logits = model.hf_model()(torch.tensor([[engine.context_start_id] + ids[:-1]])).logits[0]
    float_bits = -torch.log_softmax(logits.double(), -1)[torch.arange(len(ids)), ids].sum().item() \
        / math.log(2)
    assert abs(exact_bits / float_bits - 1) < 0.005


def test_fingerprint_names_the_weights_and_the_arithmetic(tiny_llama, tiny_llama_other):
    a = open_engine(tiny_llama, None)[0].fingerprint()
    b = open_engine(tiny_llama_other, None)[0].fingerprint()
    assert a != b and len(a) == 16
    from llmzip.container import Arithmetic
    assert open_engine(tiny_llama, Arithmetic.EXACT)[0].fingerprint() != a  # exact-v2


# --- the bounds that make every product exact ----------------------------------------------

ADVERSARIAL_ROWS = {
    "flat": np.ones(2048),
    "one spike": np.r_[1e6, np.ones(2047) * 1e-3],
    "alternating": np.tile([1.0, -1.0], 1024),
    "gaussian": RNG.standard_normal(2048),
    "heavy tail": RNG.standard_cauchy(2048),
}


@pytest.mark.parametrize("row", ADVERSARIAL_ROWS.values(), ids=ADVERSARIAL_ROWS.keys())
def test_matrix_inputs_keep_their_l1_below_the_float32_bound(row):
    x = row[None, :].copy()
    q, scale = np.empty(x.shape, np.float32), np.empty(1)  # the engine's types: no new compile
    ar.quantize_rows(x, q, scale)
    assert np.abs(q).max() <= ar.ACT_MAX
    assert np.abs(q).sum() <= ar.L1_CAP + x.shape[1]
    assert (ar.L1_CAP + 2048 + 1) * 127 < 2**24  # the margin the kernels rely on


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


class _NumpyProducts:
    """The device path's matrix products, by numpy: `_attend_blocks` on the CPU."""

    @staticmethod
    def mm(a, b):
        return a @ b


@pytest.mark.parametrize("length", [1, 2, 7, 300])
def test_segment_attention_equals_blocked_attention(engine_and_model, length):
    """The encoder's attention on the CPU (position by position, the decoder's kernel)
    gives the numbers of the device path's blocks of float32 products, on every kind of
    layer (Gemma 3's sliding windows too), odd lengths and one longer than a block."""
    engine, _ = engine_and_model
    net = engine.net
    rng = np.random.default_rng(length)
    for layer in {layer.window or 0: layer for layer in net.layers}.values():
        q = rng.normal(size=(length, net.n_heads, net.head_dim)) * 3
        k = rng.normal(size=(length, net.n_kv, net.head_dim)) * 3
        v = rng.normal(size=(length, net.n_kv, net.head_dim))
        assert np.array_equal(net._attend_segment(layer, q.copy(), k.copy(), v.copy()),
                              net._attend_blocks(layer, q, k, v, _NumpyProducts()))


def test_kernels_over_rows_run_in_place_for_few_rows_with_the_same_numbers(monkeypatch):
    """A kernel over rows runs unthreaded up to SERIAL_ROWS rows and threaded above, and
    both forms give the same numbers (rows quantized, then rotated)."""
    calls = []
    for form in ("serial", "parallel"):
        kernel = getattr(ar.quantize_rows, form)
        monkeypatch.setattr(ar.quantize_rows, form,
                            lambda *a, kernel=kernel, form=form: calls.append(form) or kernel(*a))
    x = RNG.normal(size=(ar.SERIAL_ROWS + 1, 64)) * 100
    results = {}
    for form in ("serial", "parallel"):
        q, scale = np.empty(x.shape, np.float32), np.empty(len(x))
        getattr(ar.quantize_rows, form)(x, q, scale)
        heads = q.astype(np.float64).reshape(len(x), 4, 16)
        cos, sin = rope_table(10_000.0, 16, 8)
        getattr(ar.rotate, form)(heads, np.arange(len(x)), cos, sin)
        results[form] = q, scale, heads
    for a, b in zip(*results.values()):
        assert np.array_equal(a, b)
    calls.clear()
    q, scale = np.empty(x.shape, np.float32), np.empty(len(x))
    ar.quantize_rows(x[:ar.SERIAL_ROWS], q[:ar.SERIAL_ROWS], scale[:ar.SERIAL_ROWS])
    ar.quantize_rows(x, q, scale)
    assert calls == ["serial", "parallel"]


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
    monkeypatch.setattr(network, "int8_matmul_serves", lambda: True)
    engine, model = open_engine(tiny_llama, None)
    sequences = [_ids(model, 30, offset=700 * i) for i in range(kernels.INT8_ROWS + 1)]
    for module in (amx, avx2):  # (AMX would serve these rows; AVX2 the tiles' share)
        monkeypatch.setattr(module, "available", lambda: False)
    assert len(sequences) > vnni.MAX_ROWS  # (fewer rows would go to VNNI where it serves)
    assert engine.stepper(len(sequences), 30).products.int8
    with_int8 = _stepped(engine, sequences)
    monkeypatch.setattr(network, "int8_matmul_serves", lambda: False)
    assert not engine.stepper(len(sequences), 30).products.int8
    assert np.array_equal(with_int8, _stepped(engine, sequences))


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
    sequences = [_ids(model, 30, offset=700 * i) for i in range(3)]
    assert engine.stepper(3, 30).products.vnni
    with_vnni = _stepped(engine, sequences)
    for module in (vnni, avx2):
        monkeypatch.setattr(module, "available", lambda: False)
    assert not engine.stepper(3, 30).products.vnni
    assert np.array_equal(with_vnni, _stepped(engine, sequences))


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
    monkeypatch.setattr(network, "int8_matmul_serves", lambda: False)
    engine, model = open_engine(tiny_llama, None)
    sequences = [_ids(model, 30, offset=700 * i) for i in range(rows)]
    assert engine.stepper(rows, 30).products.avx2
    with_avx2 = _stepped(engine, sequences)
    monkeypatch.setattr(avx2, "available", lambda: False)
    assert not engine.stepper(rows, 30).products.avx2
    assert np.array_equal(with_avx2, _stepped(engine, sequences))


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
    assert not engine.stepper(9, 30).products.amx
    monkeypatch.setattr(amx, "MIN_STEPS", 30)
    sequences = [_ids(model, 30, offset=500 * i) for i in range(9)]
    assert engine.stepper(9, 30).products.amx
    with_amx = _stepped(engine, sequences)
    for module in (amx, vnni, avx2, network):
        name = "int8_matmul_serves" if module is network else "available"
        monkeypatch.setattr(module, name, lambda: False)
    products = engine.stepper(9, 30).products
    assert not (products.amx or products.vnni or products.avx2 or products.int8)
    assert np.array_equal(with_amx, _stepped(engine, sequences))


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
    kernels.attend_cached(scores.query_pairs(q), q_scale,
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


@pytest.mark.parametrize("spread", [0.5, 40.0, 4000.0])
def test_attention_weights_follow_the_written_rule(spread):
    """exact-v3's attention weights, written out in numpy: the max logit, the exp table at
    round-half-even steps below it (capped at the table's last entry, 0), their sum, and
    the folded weights. `fold_weights` takes the max on the floats' bits and sums in any
    order: it must give these numbers, bit for bit, for negative, zero and tied logits."""
    n, table = 3000, ar.ATTENTION_EXP
    logits = RNG.standard_normal(n) * spread * ar.LOGIT_STEPS
    logits[:5] = [0.0, -0.0, logits[5], logits[5], -1e-300]
    v_scale = RNG.random(n) * (RNG.random(n) > 0.1)
    top = logits.max()
    weights = table[np.round(np.minimum(top - logits, len(table) - 1.0)).astype(np.int64)]
    factor = (ar.WEIGHT_TOTAL / weights.sum()) / v_scale.max()
    want = np.round((weights * factor) * v_scale)
    folded = np.empty(n)
    scale = ar.fold_weights(logits.copy(), v_scale, ar.top_of(v_scale), table, folded)
    assert np.array_equal(folded, want) and scale == v_scale.max() / ar.WEIGHT_TOTAL
    assert ar.top_of(logits) == top and ar.top_of(-np.abs(logits)) == -np.abs(logits).min()


def test_folded_attention_weights_stay_below_2_to_the_17():
    n = ar.MAX_KEYS
    folded = np.empty(n)  # uniform attention over equal value scales: the most rounding up
    ar.fold_weights(np.zeros(n), np.ones(n), 1.0, ar.ATTENTION_EXP, folded)
    assert folded.sum() <= ar.WEIGHT_TOTAL + n / 2 and (ar.WEIGHT_TOTAL + n / 2) * 127 < 2**24


def test_spread_norm_gains_stay_out_of_the_int8_weights():
    """Gemma 3's (1 + w) gains span 0.16 to 300, and its activations are large where the
    gain is small. Folded into int8 weights, the small-gain channels round away (that cost
    +41% bits per byte on alice29); applied to the activations instead, only the int8
    weights' own rounding remains."""
    d = 640
    gain = 0.2 * np.exp(RNG.random(d) * math.log(300))
    weight = RNG.standard_normal((64, d))
    h = RNG.standard_normal((8, d)) / gain
    want = (h / np.sqrt((h * h).mean(-1, keepdims=True) + 1e-6) * gain) @ weight.T

    def error(fold):
        lin = _quantize(weight, gain, fold)
        q, factor = np.empty(h.shape, np.float32), np.empty(len(h))  # as the engine calls it
        kept = lin.get("gain", NO_GAIN).copy()
        kept.setflags(write=False)  # the engine's gains are read-only: the same compiled kernel
        ar.norm_quantize_rows(h, kept, 1e-6, q, factor)
        got = (q @ lin["w8"].astype(np.float64).T * factor[:, None]) * lin["scale"]
        return np.linalg.norm(got - want) / np.linalg.norm(want)

    assert error(fold=False) < 0.01 < 0.2 < error(fold=True)


# --- tables and IEEE operations --------------------------------------------------------------

def test_exp_table_values():
    table = exp_table(256, 32)
    assert table[0] == 2**32 and table[256] == round(2**32 / math.e) and table[-1] == 0


def test_persisted_tables_are_built_once_checked_on_load_and_rebuilt_when_damaged(
        tmp_path, monkeypatch):
    monkeypatch.setenv("LLMZIP_CACHE", str(tmp_path))
    builds = []

    def small_exp(bits):
        builds.append(bits)
        return exp_table(256, bits)

    def small_rope(theta):  # a table of two arrays
        builds.append(theta)
        return rope_table(theta, 8, 16)

    first = persisted(small_exp, 18)
    assert np.array_equal(persisted(small_exp, 18), first) and builds == [18]
    assert np.array_equal(first, exp_table(256, 18))
    stored = tmp_path / "tables" / "small_exp-18.npz"
    with np.load(stored) as f:
        digest, damaged = f["sha256"], f["a0"].copy()
    damaged[7] += 1  # a changed entry under the old checksum is not used
    np.savez(stored, sha256=digest, a0=damaged)
    assert np.array_equal(persisted(small_exp, 18), first) and builds == [18, 18]
    stored.write_bytes(b"not a table")
    assert np.array_equal(persisted(small_exp, 18), first) and builds == [18, 18, 18]
    stored.write_bytes(stored.read_bytes()[:-40])  # a truncated archive
    assert np.array_equal(persisted(small_exp, 18), first) and builds == [18, 18, 18, 18]
    assert np.array_equal(persisted(small_exp, 18), first) and builds == [18, 18, 18, 18]
    assert [p.name for p in stored.parent.iterdir()] == [stored.name]  # no temporary left

    built, loaded = persisted(small_rope, 10000.0), persisted(small_rope, 10000.0)
    assert builds[4:] == [10000.0] and len(loaded) == 2
    for want, a, b in zip(rope_table(10000.0, 8, 16), built, loaded):
        assert np.array_equal(want, a) and np.array_equal(want, b)


def test_a_cache_that_cannot_be_written_still_gives_the_tables(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("LLMZIP_CACHE", str(tmp_path / "file"))  # not a directory
    assert np.array_equal(persisted(exp_table, 256, 18), exp_table(256, 18))

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    from llmzip import models
    monkeypatch.setattr(models, "cache_root", no_home)
    assert np.array_equal(persisted(exp_table, 256, 18), exp_table(256, 18))


def test_sigmoid_table_error_below_1e_6():
    x = np.linspace(-20, 20, 100000)[:, None]  # no zero: silu(x) / x is the sigmoid
    out = np.empty((len(x), 1))
    table, diff = sigmoid_table(ar.SIGMOID_RANGE, ar.SIGMOID_STEPS)
    ar.gated_activation(np.hstack([x, np.ones_like(x)]), False, table, diff, out)
    assert np.abs(out[:, 0] / x[:, 0] - 1 / (1 + np.exp(-x[:, 0]))).max() < 1e-6


def test_a_decoder_past_the_rope_table_rebuilds_it_rarely_and_rows_do_not_change():
    """One more position a step (a segment longer than the first table) must not rebuild
    the table each step; and a row of a longer table equals the shorter table's row."""
    cache, builds = {}, []

    def build(n):
        builds.append(n)
        return rope_table(10000.0, 8, n)

    for n_pos in range(20, 400):
        cos, sin = grown(cache, "theta", n_pos, build)
        assert cos.shape[0] >= n_pos
    assert builds == [20, 40, 80, 160, 320, 640]
    short = rope_table(10000.0, 8, 20)
    assert np.array_equal(cos[:20], short[0]) and np.array_equal(sin[:20], short[1])


def test_rope_table_matches_cos_and_sin():
    cos, sin = rope_table(10000.0, 64, 3000)
    angle = np.arange(3000)[:, None] * (10000.0 ** (-np.arange(0, 64, 2) / 64))
    assert np.abs(cos[:, :32] - np.cos(angle)).max() < 1e-9
    assert np.abs(sin[:, 32:] - np.sin(angle)).max() < 1e-9


def test_numba_rules_are_single_ieee_operations_never_fused():
    """RoPE's x cos + y sin must be two roundings then an addition: an FMA would change
    results on CPUs that have one."""
    x = RNG.standard_normal((500, 1, 64))
    cos, sin = RNG.standard_normal((1, 64)), RNG.standard_normal((1, 64))
    got = x.copy()
    ar.rotate(got, np.zeros(500, np.int64), cos, sin)
    half = np.concatenate([-x[..., 32:], x[..., :32]], axis=-1)
    assert np.array_equal(got, x * cos[0] + half * sin[0])


def test_stepper_cache_is_int8_with_one_scale_per_vector(tiny_llama):
    engine, _ = open_engine(tiny_llama, None)
    stepper = engine.stepper(3, 50)
    assert isinstance(stepper, Stepper)
    assert stepper.key_blocks.dtype == stepper.values_t.dtype == np.int8
    assert engine.cache_bytes(3, 50) == (stepper.key_blocks.nbytes + stepper.values_t.base.nbytes
                                         + stepper.k_factor.nbytes + stepper.v_scale.nbytes)
    assert stepper.key_blocks.shape[-3:] == (7, stepper.net.head_dim // 2, 16)  # 51 in 8s
    lines, left = divmod(stepper.values_t.strides[-2], 64)  # channels an odd number of lines
    assert left == 0 and lines % 2 == 1 and stepper.values_t.shape[-1] == 51  # apart
