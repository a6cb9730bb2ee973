"""The rules of exact arithmetic and their tables: bounds, roundings, exp, sigmoid, RoPE.

Every backend runs these rules (`engine.exact.rules`) as they are, so they are tested once,
here, against their written definitions; `test_backends.py` holds the backends to them.
"""

import math

import numpy as np
import pytest
from conftest import ADVERSARIAL_ROWS, RNG

from llmzip.engine.exact import rules as ar
from llmzip.engine.exact.tables import exp_table, grown, persisted, rope_table, sigmoid_table
from llmzip.engine.exact.weights import NO_GAIN, _quantize


@pytest.mark.parametrize("row", ADVERSARIAL_ROWS.values(), ids=ADVERSARIAL_ROWS.keys())
def test_matrix_inputs_keep_their_l1_below_the_float32_bound(row):
    x = row[None, :].copy()
    q, scale = np.empty(x.shape, np.float32), np.empty(1)  # the engine's types: no new compile
    ar.quantize_rows(x, q, scale)
    assert np.abs(q).max() <= ar.ACT_MAX
    assert np.abs(q).sum() <= ar.L1_CAP + x.shape[1]
    assert (ar.L1_CAP + 2048 + 1) * 127 < 2**24  # the margin the kernels rely on


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

    import llmzip.cache
    monkeypatch.setattr(llmzip.cache, "cache_root", no_home)
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
