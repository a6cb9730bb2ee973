"""Exact arithmetic: identical integer tables whatever the path, threads or batch."""

import math

import numpy as np
import pytest
import torch

from llmzip import exact
from llmzip.engine import exp_table, lookup

from conftest import corpus_file

N_TOKENS = 80  # longer than the tiny Gemma's 16-token sliding window


@pytest.fixture(params=["tiny_llama", "tiny_gemma"])
def model_and_engine(request, codecs):
    model = request.getfixturevalue(request.param)
    return model, codecs(model).engine(model, None)


def _ids(codecs, model, n=N_TOKENS, offset=0):
    tokenizer = codecs(model).loaded_model(model).tokenizer
    return tokenizer.encode(corpus_file("alice29.txt")[offset:offset + 4 * n])[:n]


def _full(engine, ids):
    return np.concatenate(list(engine.full_tables(ids)))


def _stepped(engine, sequences, max_batch=None):
    stepper = engine.stepper(len(sequences), len(sequences[0]), max_batch=max_batch)
    inputs = np.full(len(sequences), engine.context_start_id)
    out = []
    for t in range(len(sequences[0])):
        out.append(stepper.step(inputs))
        inputs = np.array([s[t] for s in sequences])
    return np.stack(out, axis=1)  # (rows, T, V)


def test_full_forward_equals_kv_cached_steps(model_and_engine, codecs):
    model, engine = model_and_engine
    ids = _ids(codecs, model)
    assert np.array_equal(_full(engine, ids), _stepped(engine, [ids])[0])


def test_one_and_two_threads_give_identical_tables(model_and_engine, codecs):
    model, engine = model_and_engine
    ids = _ids(codecs, model)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _full(engine, ids), _stepped(engine, [ids])
        torch.set_num_threads(2)
        two = _full(engine, ids), _stepped(engine, [ids])
    finally:
        torch.set_num_threads(before)
    assert np.array_equal(one[0], two[0]) and np.array_equal(one[1], two[1])


def test_batch_of_eight_equals_eight_batches_of_one(model_and_engine, codecs):
    model, engine = model_and_engine
    sequences = [_ids(codecs, model, 40, offset=1000 * i) for i in range(8)]
    together = _stepped(engine, sequences)
    assert np.array_equal(together, _stepped(engine, sequences, max_batch=1))
    assert np.array_equal(together, _stepped(engine, sequences, max_batch=3))
    for i in (0, 5):
        assert np.array_equal(together[i], _full(engine, sequences[i]))


def test_exact_cross_entropy_matches_the_float_model(model_and_engine, codecs):
    model, engine = model_and_engine
    ids = _ids(codecs, model, 200)
    freqs = _full(engine, ids)
    exact_bits = -np.log2(freqs[np.arange(len(ids)), ids] / freqs.sum(axis=1)).sum()
    hf = codecs(model).loaded_model(model).hf_model
    with torch.no_grad():
        logits = hf(torch.tensor([[engine.context_start_id] + ids[:-1]])).logits[0].double()
    float_bits = -torch.log_softmax(logits, -1)[torch.arange(len(ids)), ids].sum().item() / math.log(2)
    assert abs(exact_bits / float_bits - 1) < 0.002


def test_spread_norm_gains_stay_out_of_the_int8_weights():
    """Gemma 3's (1 + w) gains span 0.16 to 300, and its activations are large where the
    gain is small. Folded into int8 weights, the small-gain channels round away (that cost
    +41% bits per byte on alice29); applied to the activations instead, only the int8
    weights' own rounding remains."""
    gen = torch.Generator().manual_seed(0)
    d = 640
    gain = 0.2 * torch.exp(torch.rand(d, generator=gen, dtype=torch.float64) * math.log(300))
    weight = torch.randn(64, d, generator=gen, dtype=torch.float64)
    h = torch.randn(8, d, generator=gen, dtype=torch.float64) / gain
    want = (h / h.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt() * gain) @ weight.T

    def error(fold_gain):
        got = exact.Linear(weight, gain, fold_gain=fold_gain).normed(h, 1e-6)
        return ((got - want).norm() / want.norm()).item()

    assert error(fold_gain=False) < 0.01 < 0.2 < error(fold_gain=True)


def test_fingerprint_names_the_weights(tiny_llama, tiny_llama_other, codecs):
    a = codecs(tiny_llama).engine(tiny_llama, None).fingerprint()
    b = codecs(tiny_llama_other).engine(tiny_llama_other, None).fingerprint()
    again = codecs(tiny_llama, threads=1).engine(tiny_llama, None).fingerprint()
    assert a != b and a == again and len(a) == 16


def test_exp_table_values():
    table = exp_table(256, 32)
    assert table[0] == 2**32 and table[256] == round(2**32 / math.e) and table[-1] == 0


def test_lookup_rounds_half_to_even():
    table = torch.arange(10, dtype=torch.float64) * 10
    pos = torch.tensor([0.0, 0.5, 1.5, 2.5, 2.49, 9.0], dtype=torch.float64)
    assert lookup(table, pos).tolist() == [0, 0, 20, 20, 20, 90]


def test_sigmoid_table_error_below_1e_6():
    x = torch.linspace(-20, 20, 100001, dtype=torch.float64)
    err = (exact.sigmoid(x) - torch.sigmoid(x)).abs().max().item()
    assert err < 1e-6


def test_rope_table_matches_cos_and_sin():
    cos, sin = exact._rope_table(10000.0, 64, 3000)
    pos = torch.arange(3000, dtype=torch.float64)[:, None]
    angle = pos * (10000.0 ** (-torch.arange(0, 64, 2, dtype=torch.float64) / 64))
    assert (cos[:, :32] - torch.cos(angle)).abs().max() < 1e-9
    assert (sin[:, 32:] - torch.sin(angle)).abs().max() < 1e-9


def test_quantize_fixed_clamps_to_the_bound():
    q = exact.quantize_fixed(torch.tensor([1.0, -5.0, 2.5]), torch.tensor(1.0), 2.0)
    assert q.tolist() == [1.0, -2.0, 2.0]


def test_float64_fallback_gives_the_same_tables_as_the_int8_kernel(model_and_engine, codecs,
                                                                    monkeypatch):
    """Where torch._int_mm is missing or inexact (pre-VNNI x86 saturates), the same integer
    products come from float64: archives must not depend on which path a machine takes."""
    model, engine = model_and_engine
    ids = _ids(codecs, model, 40)
    fast = _full(engine, ids)  # int8 kernel where it is exact (it is on x86 with VNNI)
    monkeypatch.setattr(exact, "_INT_MM_EXACT", False)  # a machine without one
    assert np.array_equal(fast, _full(engine, ids))
    assert np.array_equal(fast, _stepped(engine, [ids])[0])


def test_int8_limbs_recombine_exactly():
    x = torch.tensor([-exact.ACT_MAX, -32768 + 129, -129, -128, -1, 0, 1, 127, 128, 255, 256,
                      exact.ACT_MAX], dtype=torch.float64)
    hi, lo = exact._int8_limbs(x)
    assert hi.dtype == lo.dtype == torch.int8
    assert torch.equal(hi.to(torch.float64) * 256 + lo.to(torch.float64), x)
