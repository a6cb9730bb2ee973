"""Matrix products on a torch device give the same tables as numpy and numba.

No GPU is available here: this runs the device path with torch on the CPU. On a GPU the
same code runs with device 'cuda' (skipped below where torch sees none)."""

import numpy as np
import pytest

from llmzip import Codec
from llmzip.engine import open_engine

from conftest import corpus_file


def _tables(engine, ids):
    full = np.concatenate(list(engine.full_tables(ids)))
    stepper = engine.stepper(1, len(ids))
    inputs, steps = np.array([engine.context_start_id]), []
    for t in range(len(ids)):
        steps.append(stepper.step(inputs))
        inputs = np.array([ids[t]])
    return full, np.concatenate(steps)


@pytest.mark.parametrize("device", ["torch:cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    "not __import__('torch').cuda.is_available()", reason="no CUDA device"))])
@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gemma"])
def test_device_products_give_identical_tables(request, fixture, device):
    engine, model = open_engine(request.getfixturevalue(fixture), None)
    ids = model.tokenizer.encode(corpus_file("alice29.txt")[:1200])[:300]  # >= 256: BLAS rows
    try:
        engine.place("cpu")
        reference = _tables(engine, ids)
        engine.place(device)
        on_device = _tables(engine, ids)
    finally:
        engine.place("cpu")
    assert np.array_equal(reference[0], on_device[0]) and np.array_equal(reference[1], on_device[1])


def test_archive_written_with_device_products_is_the_same(tiny_llama):
    data = corpus_file("argparse.py")[:3000]
    cpu = Codec(tiny_llama, segment_tokens=300).compress(data)
    try:
        device = Codec(tiny_llama, segment_tokens=300, device="torch:cpu").compress(data)
    finally:
        open_engine(tiny_llama, None)[0].place("cpu")
    assert cpu == device
