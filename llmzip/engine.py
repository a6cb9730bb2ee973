"""Engines: a model behind one contract, next-token frequency tables for many segments at once.

The codec sees only `Engine`: frequency tables from KV-cached steps (`stepper`), and, where
the engine has one, a whole-segment forward (`full_tables`, the exact encoder's fast path,
which the steps reproduce bit for bit). `open_engine` is the one factory:
- `ExactEngine` (exact-v3, `network`): integer arithmetic, identical tables on any machine;
- `LegacyEngine` (exact-v2, `legacy`): decodes archives of llmzip 0.1;
- `FloatEngine`: the model's own float32 forward through transformers, for architectures
  exact arithmetic does not cover; its tables depend on the torch build, CPU and threads,
  which the header records.
Every engine turns logits into frequencies with `arithmetic.frequencies`.
"""

from __future__ import annotations

import functools
import hashlib
import platform
from typing import Iterator, Protocol

import numpy as np

from .arithmetic import frequencies
from .container import Arithmetic
from .errors import LlmzipError, ModelUnavailableError

__all__ = ["Engine", "Stepper", "ExactEngine", "FloatEngine", "open_engine"]


class Stepper(Protocol):
    """KV-cached decoding of a batch of segments, one token per segment per call."""

    def step(self, input_ids: np.ndarray) -> np.ndarray:
        """Feed one token to each of the first len(input_ids) rows; return their next-token
        frequencies (rows, V) int64."""


class Engine(Protocol):
    arithmetic: Arithmetic
    vocab_size: int
    context_start_id: int
    batch_invariant: bool  # tables independent of which rows share a step
    full_forward: bool  # full_tables() is available: the encoder's fast path

    def fingerprint(self) -> bytes: ...

    def stepper(self, n_rows: int, max_len: int) -> Stepper: ...

    def cache_bytes(self, n_rows: int, max_len: int) -> int: ...

    def full_tables(self, ids: list[int]) -> Iterator[np.ndarray]:
        """Frequencies for every position of a segment, in chunks (where full_forward)."""

    def group_tables(self, segments: list[list[int]]) -> Iterator[tuple[int, dict]]:
        """(position, {index: tables}) for several segments advancing chunk by chunk
        together, every chunk at the same positions in each (where full_forward)."""


def _keep_large_allocations() -> None:
    """Keep freed large blocks in glibc's heap: the encoder's fresh 10-100 MB temporaries
    otherwise cost page faults that take longer than the arithmetic on them. Speed only."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, (1 << 31) - 1)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def _fingerprint(digest: bytes, model) -> bytes:
    """A network's digest, the token table and the context-start id: BLAKE2b-128."""
    h = hashlib.blake2b(digest, digest_size=16)
    h.update(model.tokenizer.digest())
    h.update(model.context_start_id.to_bytes(4, "little"))
    return h.digest()


class ExactEngine:
    """exact-v3: integer arithmetic, the same tables on any machine, thread count or batch."""

    arithmetic = Arithmetic.EXACT_V3
    batch_invariant = True
    full_forward = True

    def __init__(self, model):
        from .network import Stepper as ExactStepper
        _keep_large_allocations()
        self._stepper_class = ExactStepper
        self.net, digest = model.exact_network()
        self.vocab_size = self.net.vocab_size
        self.context_start_id = model.context_start_id
        self._fingerprint = _fingerprint(digest, model)
        self.device = None  # products on the CPU (numpy BLAS, numba)
        self._placed = None  # the torch device string of `device`, if any

    def place(self, device: str) -> None:
        """Run the matrix products on a torch device ('cuda', 'auto', 'cpu'...): the same
        integers anywhere (`device`)."""
        from .device import DeviceProducts, resolve_device
        resolved = resolve_device(device)
        if resolved != self._placed:  # weights uploaded once per device, not once per call
            self.device = DeviceProducts(resolved) if resolved else None
            self._placed = resolved

    def fingerprint(self) -> bytes:
        return self._fingerprint

    def full_tables(self, ids: list[int]) -> Iterator[np.ndarray]:
        return self.net.full_tables(self._inputs(ids), self.device)

    def group_tables(self, segments: list[list[int]]) -> Iterator[tuple[int, dict]]:
        return self.net.group_tables([self._inputs(ids) for ids in segments], self.device)

    def _inputs(self, ids: list[int]) -> np.ndarray:
        """What the network reads to predict ids: the context start, then all but the last."""
        return np.array([self.context_start_id, *ids[:-1]], dtype=np.int64)

    def stepper(self, n_rows: int, max_len: int):
        return self._stepper_class(self.net, n_rows, max_len, self.device)

    def cache_bytes(self, n_rows: int, max_len: int) -> int:
        return self._stepper_class.cache_bytes(self.net, n_rows, max_len)


class _FloatStepper:
    def __init__(self, model, n_rows: int):
        from transformers import DynamicCache
        self.model, self.cache, self.n_rows = model, DynamicCache(), n_rows

    def step(self, input_ids: np.ndarray) -> np.ndarray:
        import torch
        with torch.inference_mode():
            ids = torch.as_tensor(np.asarray(input_ids, np.int64)).view(self.n_rows, 1)
            out = self.model(input_ids=ids, past_key_values=self.cache, use_cache=True)
            self.cache = out.past_key_values
            return frequencies(out.logits[:, -1, :].double().numpy(), serial=True)


class FloatEngine:
    """The model's own float32 forward with transformers' KV cache (not portable)."""

    arithmetic = Arithmetic.FLOAT
    batch_invariant = False  # the decoder must feed exactly the rows the encoder fed
    full_forward = False

    def __init__(self, model):
        self.model = model
        self.hf = model.hf_model()
        self.vocab_size = self.hf.get_output_embeddings().weight.shape[0]
        self.context_start_id = model.context_start_id
        self._fingerprint = None

    def fingerprint(self) -> bytes:
        """BLAKE2b-128 of the float weights, token table and context-start id."""
        if self._fingerprint is None:
            h = hashlib.blake2b(digest_size=16)
            h.update(b"float\0" + self.context_start_id.to_bytes(4, "little"))
            h.update(self.model.tokenizer.digest())
            for name, tensor in sorted(self.hf.state_dict().items()):
                h.update(name.encode() + b"\0")
                h.update(tensor.detach().contiguous().numpy().tobytes())
            self._fingerprint = h.digest()
        return self._fingerprint

    @staticmethod
    def runtime() -> str:
        """What else the decoder must match: the torch build and CPU architecture."""
        import torch
        return f"torch {torch.__version__} {platform.machine()}"

    def stepper(self, n_rows: int, max_len: int = 0) -> _FloatStepper:
        return _FloatStepper(self.hf, n_rows)

    def cache_bytes(self, n_rows: int, max_len: int) -> int:
        """transformers' float32 keys and values for every layer."""
        c = self.hf.config
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        return 2 * 4 * c.num_hidden_layers * n_rows * c.num_key_value_heads * max_len * head_dim


def _legacy_engine(model):
    from .legacy import LegacyEngine
    return LegacyEngine(model)


ENGINES = {Arithmetic.EXACT_V3: ExactEngine, Arithmetic.EXACT: _legacy_engine,
           Arithmetic.FLOAT: FloatEngine}


@functools.lru_cache(maxsize=2)
def open_engine(model_name: str, arithmetic: Arithmetic | None, from_archive: bool = False):
    """The engine for a model (loaded once per process): `arithmetic` None means exact-v3
    where the architecture allows it, else float."""
    from .models import load_model
    from .network import supports
    model = load_model(model_name, from_archive)
    if arithmetic is None:
        arithmetic = Arithmetic.EXACT_V3 if supports(model.config) else Arithmetic.FLOAT
    if arithmetic != Arithmetic.FLOAT and not supports(model.config):
        raise LlmzipError(f"exact arithmetic does not cover the {model.architecture} "
                          f"architecture of {model_name!r}; use --arithmetic float")
    try:
        return ENGINES[arithmetic](model), model
    except NotImplementedError as exc:
        raise ModelUnavailableError(f"{model_name!r}: {exc}; use --arithmetic float") from None
