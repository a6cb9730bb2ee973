"""Opening an engine: a model, an arithmetic and a backend, loaded once per process.

Engines are keyed by (arithmetic, backend): exact-v3 runs on any registered backend
(`exact.backend`), chosen from the `--device` when the engine is opened; exact-v2 (`exact.v2`,
archives of llmzip 0.1) and the float engine run on torch's CPU kernels alone.
"""

from __future__ import annotations

import functools

from llmzip.container import Arithmetic
from llmzip.errors import LlmzipError, ModelUnavailableError

__all__ = ["open_engine"]


def _exact_v3(model, backend: tuple[str, str]):
    from llmzip.engine.exact.backend import open_backend
    from llmzip.engine.exact.engine import ExactEngine
    return ExactEngine(model, open_backend(*backend))


def _exact_v2(model, backend: tuple[str, str]):
    from llmzip.engine.exact.v2 import LegacyEngine
    return LegacyEngine(model)


def _float(model, backend: tuple[str, str]):
    from llmzip.engine.float import FloatEngine
    return FloatEngine(model)


ENGINES = {Arithmetic.EXACT_V3: _exact_v3, Arithmetic.EXACT: _exact_v2, Arithmetic.FLOAT: _float}


@functools.lru_cache(maxsize=4)
def _loaded(model_name: str, from_archive: bool):
    from llmzip.models.model import load_model
    return load_model(model_name, from_archive)


def open_engine(model_name: str, arithmetic: Arithmetic | None, from_archive: bool = False,
                device: str = "auto"):
    """(engine, model) for a model (loaded once per process): `arithmetic` None means
    exact-v3 where the architecture allows it, else float; `device` picks exact-v3's
    backend (`exact.backend.resolve_device`); other arithmetics ignore it."""
    from llmzip.engine.exact.backend import resolve_device
    return _opened(model_name, arithmetic, from_archive, resolve_device(device))


@functools.lru_cache(maxsize=4)
def _opened(model_name: str, arithmetic: Arithmetic | None, from_archive: bool,
            backend: tuple[str, str]):
    from llmzip.engine.exact.weights import supports
    model = _loaded(model_name, from_archive)
    if arithmetic is None:
        arithmetic = Arithmetic.EXACT_V3 if supports(model.config) else Arithmetic.FLOAT
    if arithmetic != Arithmetic.FLOAT and not supports(model.config):
        raise LlmzipError(f"exact arithmetic does not cover the {model.architecture} "
                          f"architecture of {model_name!r}; use --arithmetic float")
    try:
        return ENGINES[arithmetic](model, backend), model
    except NotImplementedError as exc:
        raise ModelUnavailableError(f"{model_name!r}: {exc}; use --arithmetic float") from None
