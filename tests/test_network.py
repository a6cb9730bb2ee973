"""The exact network against the model it comes from, and what names it."""

import math

import numpy as np
import pytest
from conftest import alice_ids, full_tables

from llmzip.engine.factory import open_engine


@pytest.fixture(params=["tiny_llama", "tiny_gemma"])
def engine_and_model(request):
    return open_engine(request.getfixturevalue(request.param), None)




def test_exact_cross_entropy_is_within_half_a_percent_of_the_float_model(engine_and_model):
    import torch
    engine, model = engine_and_model
    ids = alice_ids(model, 200)
    freqs = full_tables(engine, ids)
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
