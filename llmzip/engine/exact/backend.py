"""The backend seam of exact-v3: what an implementation of its kernels provides, and which runs.

`ExactNetwork` writes the forward once: the embedding, the small rules (`rules`: quantizing,
norms, RoPE, the activation, frequencies, run on the host for every backend) and the order
of everything. A backend supplies the parts that are worth a machine's own kernels, each
bound to give exactly the reference integers, whatever its summation order:
- products of int16-valued activations by int8 weights (`Products`): for a segment's rows
  (the encoder), for the vocabulary head over many segments, and for a decoder step;
- attention with the integer softmax fold of `rules`: a segment's causal attention over its
  own keys (the encoder), and a step's over a KV cache it keeps (`KVCache`, the decoder).

`BACKENDS` registers them: `numba` (the CPU's kernels, `cpu.backend`) and `torch` (products
and the encoder's attention products on a torch device, `torch_backend`). `open_backend`
turns a `--device` into one, when an engine is opened. `tests/test_backends.py` holds every
registered backend to the reference integers: each kernel at its extremes and on random
inputs, the full forward against the steps, and archives byte for byte.
"""

from __future__ import annotations

import importlib
import os
from typing import Protocol

import numpy as np

from llmzip.errors import LlmzipError

__all__ = ["Products", "KVCache", "Backend", "BACKENDS", "DEVICES", "resolve_device",
           "open_backend"]


class Products(Protocol):
    """Integer products of a set of rows by one weight matrix at a time."""

    def __call__(self, xq: np.ndarray, lin) -> np.ndarray:
        """xq (R, K) int16-valued float32 times lin.w8.T (K, N) int8: (R, N) exact integers
        (any float or integer dtype that holds them)."""

    def scaled(self, xq: np.ndarray, factor: np.ndarray, lin, out: np.ndarray) -> bool:
        """Where one pass does it: out = rules.scale_products(products, factor, lin.scale),
        and True; else False, and the caller scales `self(xq, lin)`."""


class KVCache(Protocol):
    """A decoder's keys and values for every layer, row and KV head."""

    def attend(self, index: int, layer, qkv: np.ndarray, pos: int) -> np.ndarray:
        """Store the step's keys and values (normed, rotated, quantized) at pos in layer
        `index`, then attend the rows' queries over the window ending at pos: (R, heads * D)
        float64, the same numbers as the segment attention's at that position."""


class Backend(Protocol):
    name: str  # the registry's key
    device: str  # where its kernels run: "cpu", "cuda:0", ...

    def segment_products(self, n_rows: int) -> Products: ...

    def head_products(self, n_rows: int, lm_head) -> Products: ...

    def step_products(self, net, n_rows: int, max_len: int) -> Products: ...

    def attend_segment(self, net, layer, q, k, v) -> np.ndarray:
        """Causal (windowed) attention of a segment over itself from its normed, rotated
        float64 queries (T, heads, D), keys and values (T, KV heads, D): (T, heads * D)."""

    def kv_cache(self, net, n_rows: int, max_len: int) -> KVCache: ...

    def kv_cache_bytes(self, net, n_rows: int, max_len: int) -> int: ...


BACKENDS = {  # name -> (module, class)
    "numba": ("llmzip.engine.exact.cpu.backend", "NumbaBackend"),
    "torch": ("llmzip.engine.exact.torch_backend", "TorchBackend"),
}
DEVICES = "cpu, cuda, cuda:N, auto or torch:cpu"


def resolve_device(device: str) -> tuple[str, str]:
    """A `--device` as (backend, torch device): 'cpu' is numba's kernels; 'cuda' is this
    process's GPU and 'cuda:N' a given one, through torch; 'auto' is a GPU where torch sees
    one, else 'cpu'; 'torch:cpu' runs the torch backend on the CPU (what CI can test)."""
    if device == "cpu":
        return "numba", "cpu"
    if device == "torch:cpu":
        return "torch", "cpu"
    if device == "auto" or device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            if device == "auto":
                return "numba", "cpu"
            raise LlmzipError(f"--device {device}: torch sees no CUDA device here")
        return "torch", _this_process_gpu(torch) if device in ("auto", "cuda") else device
    raise LlmzipError(f"unknown device {device!r} ({DEVICES})")


def _this_process_gpu(torch) -> str:
    """Under a launcher, each process of a machine takes its own GPU (LOCAL_RANK), as
    accelerate places a model; alone, the first."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return f"cuda:{local_rank % max(torch.cuda.device_count(), 1)}"


def open_backend(device: str = "cpu") -> Backend:
    """The backend that runs on `device` (see `resolve_device`)."""
    name, torch_device = resolve_device(device)
    module, cls = BACKENDS[name]
    backend_class = getattr(importlib.import_module(module), cls)
    return backend_class(torch_device) if name == "torch" else backend_class()
