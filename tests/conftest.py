"""Shared fixtures: an isolated cache, the committed tiny models, the corpus (corpus/).

The tiny models (tests/models, made by tests/models/make_tiny.py) are Hugging Face
directories used through `--model DIR`, the path a user's own model takes. Tests marked
`real_model` run the default SmolLM2-135M; `slow` ones need LLMZIP_SLOW=1.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # before numpy: see llmzip/__init__.py
os.environ.setdefault("GOMP_SPINCOUNT", "10000")
# Before llmzip is imported, which keeps its tables in the model cache (`tables.persisted`):
# a test run never touches the user's cache. One per process (each xdist worker its own).
_CACHE = Path(tempfile.mkdtemp(prefix="llmzip-test-cache-"))
os.environ["LLMZIP_CACHE"] = str(_CACHE)
atexit.register(shutil.rmtree, _CACHE, True)

import pytest

CORPUS = Path(__file__).resolve().parents[1] / "corpus"  # real files, with their provenance


def corpus_file(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def assert_exact_v2_golden_decodes(name: str, model: str | None = None) -> None:
    """tests/golden/{name}-exact-v2.llmz decodes to its .orig with the frozen v2 engine where
    torch rounds as the AMD machines that wrote these archives did. On Intel CPUs torch.sqrt
    (MKL's vector code) rounds other inputs wrongly, so the v2 fingerprint differs (found
    on an AVX-512 Xeon; no MKL_CBWR or ATEN_CPU_CAPABILITY setting reproduced AMD's): there
    decoding must refuse with its one-line reason, and the byte check is reported skipped."""
    from llmzip import Codec, ModelMismatchError
    from llmzip.container import Arithmetic, unpack
    from llmzip.engine.factory import open_engine
    golden = Path(__file__).parent / "golden"
    blob = (golden / f"{name}-exact-v2.llmz").read_bytes()
    written = unpack(blob)[0].model
    assert written.arithmetic == Arithmetic.EXACT
    here = open_engine(model or written.name, Arithmetic.EXACT, from_archive=model is None)[0]
    if here.fingerprint() != written.fingerprint and _cpu_vendor() == "GenuineIntel":
        with pytest.raises(ModelMismatchError, match="exact-v2 arithmetic .* rounds square roots"):
            Codec(model).decompress(blob)
        pytest.skip("exact-v2 archives written on AMD do not decode on Intel CPUs (torch.sqrt)")
    assert Codec(model).decompress(blob) == (golden / f"{name}-exact-v2.orig").read_bytes()


def _cpu_vendor() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        if line.startswith("vendor_id"):
            return line.split(":")[1].strip()
    return ""


def pytest_runtest_setup(item):
    """`threads` tests compare one numba thread with two: meaningless in a one-thread pool
    (the fast tier's workers run with NUMBA_NUM_THREADS=1; make test runs these apart)."""
    if "threads" in item.keywords:
        import numba
        if numba.config.NUMBA_NUM_THREADS < 2:
            pytest.skip("needs a pool of two numba threads (NUMBA_NUM_THREADS >= 2)")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("LLMZIP_SLOW") != "1":
        skip = pytest.mark.skip(reason="slow tier: set LLMZIP_SLOW=1")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    return _CACHE


@pytest.fixture(autouse=True)
def isolated_cache(cache_dir, monkeypatch):
    """Never touch the user's cache; conversions are shared within one test session."""
    monkeypatch.setenv("LLMZIP_CACHE", str(cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


MODELS = Path(__file__).resolve().parent / "models"


@pytest.fixture(scope="session")
def tiny_llama() -> str:
    """A 2-layer Llama (hidden 64, 400-token byte-level BPE), trained for a few seconds on
    alice29 so that it predicts text better than LZMA (committed: see tests/models)."""
    return str(MODELS / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_llama_other() -> str:
    """Same shape and tokenizer as tiny_llama, untrained: a mismatched (and useless) model."""
    return str(MODELS / "tiny-llama-untrained")


@pytest.fixture(scope="session")
def tiny_gemma() -> str:
    """A 3-layer Gemma 3 with a 16-token sliding window and norm gains spread from 0.2 to
    60, as Gemma 3 270M's span 0.16 to 300."""
    return str(MODELS / "tiny-gemma")


@pytest.fixture(scope="session")
def tiny_llama_missing_bytes() -> str:
    """A tiny Llama whose vocabulary lacks bytes 0x04, 0x1D, 0xC0 and 0xFF (escapes)."""
    return str(MODELS / "tiny-llama-nobytes")


@pytest.fixture(scope="session")
def codecs():
    """One Codec per (model, settings) for the session: models load once."""
    from llmzip import Codec
    made = {}

    def get(model, **settings):
        key = (model, tuple(sorted(settings.items())))
        if key not in made:
            made[key] = Codec(model, **settings)
        return made[key]
    return get


# --- what the engine tests share -----------------------------------------------------------------

import numpy as np  # noqa: E402

RNG = np.random.default_rng(0)
ADVERSARIAL_ROWS = {  # before quantizing: rows that reach the activation bounds
    "flat": np.ones(2048),
    "one spike": np.r_[1e6, np.ones(2047) * 1e-3],
    "alternating": np.tile([1.0, -1.0], 1024),
    "gaussian": RNG.standard_normal(2048),
    "heavy tail": RNG.standard_cauchy(2048),
}


def alice_ids(model, n: int = 80, offset: int = 0) -> list[int]:
    """n token ids of alice29 from `offset` (80: longer than the tiny Gemma's window)."""
    return model.tokenizer.encode(corpus_file("alice29.txt")[offset:offset + 4 * n])[:n]


def full_tables(engine, ids) -> np.ndarray:
    """The encoder's tables for every position of a segment."""
    return np.concatenate(list(engine.full_tables(ids)))


def stepped_tables(engine, sequences) -> np.ndarray:
    """The decoder's tables for every position of each sequence, rows stepped together:
    (rows, T, V)."""
    stepper = engine.stepper(len(sequences), len(sequences[0]))
    inputs = np.full(len(sequences), engine.context_start_id)
    out = []
    for t in range(len(sequences[0])):
        out.append(np.asarray(stepper.step(inputs)))
        inputs = np.array([s[t] for s in sequences])
    return np.stack(out, axis=1)
