"""The backend seam of exact-v3: what an implementation of the network provides, and which runs.

A backend computes exact-v3's frequency tables; every backend gives the same integers, so
an archive never depends on which one wrote or reads it. It provides:
- the engine's two entry points: `group_tables` (the encoder: a group of segments' whole
  forward) and `stepper` (the decoder: KV-cached steps), with `kv_cache_bytes` to size a
  decoder's waves;
- the operations those are made of, which `tests/test_backends.py` runs on host arrays and
  holds to the reference integers: products of int16-valued activations by int8 weights
  (`Products`) for a segment, the head and a step; a segment's causal attention over its
  own keys; a step's attention over a KV cache (`KVCache`);
- the small rules (quantizing, norms, RoPE, the activation, the integer softmax fold,
  frequencies): `rules` itself for numba; `device.rules` for torch, held to `rules`.

`BACKENDS` registers them: `numba` (`cpu.backend`: the host forward of `ExactNetwork` over
the CPU's kernels) and `torch` (`device.backend`: the whole network on a torch device, a GPU
or the CPU). `resolve_device` turns a `--device` into a backend and a device, and
`engine.factory.open_engine` opens one for each engine it opens.
"""

from __future__ import annotations

import glob
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
    label: str  # for people: the backend, its device and kernels

    def group_tables(self, net, segments: list[np.ndarray]):
        """(position, {index: frequencies (n, V) int64}) for segments' inputs, chunk by
        chunk, every chunk at the same positions in each segment still running."""

    def stepper(self, net, n_rows: int, max_len: int):
        """KV-cached steps of n_rows segments (`engine.contract.Stepper`)."""

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
    "torch": ("llmzip.engine.exact.device.backend", "TorchBackend"),
}
DEVICES = "auto, cpu, cuda, cuda:N or torch:cpu"


def resolve_device(device: str) -> tuple[str, str]:
    """A `--device` as (backend, torch device): 'cpu' is numba's kernels; 'cuda' is this
    process's GPU and 'cuda:N' a given one, through torch; 'auto' is a GPU where torch sees
    one, else 'cpu'; 'torch:cpu' runs the torch backend on the CPU (what CI can test)."""
    if device == "cpu":
        return "numba", "cpu"
    if device == "torch:cpu":
        return "torch", "cpu"
    if device == "auto" and not _nvidia_driver():
        return "numba", "cpu"  # decided without importing torch (a second of every run)
    if device == "auto" or device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            if device == "auto":
                return "numba", "cpu"
            raise LlmzipError(f"--device {device}: torch sees no CUDA device here")
        return "torch", _this_process_gpu(torch) if device in ("auto", "cuda") else device
    raise LlmzipError(f"unknown device {device!r} ({DEVICES})")


def _nvidia_driver() -> bool:
    """Whether this machine could have a CUDA device at all: NVIDIA's driver is loaded."""
    return os.path.exists("/proc/driver/nvidia/version") or bool(glob.glob("/dev/nvidia[0-9]*"))


def _this_process_gpu(torch) -> str:
    """Under a launcher, each process of a machine takes its own GPU (LOCAL_RANK), as
    accelerate places a model; alone, the first."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return f"cuda:{local_rank % max(torch.cuda.device_count(), 1)}"


def open_backend(name: str, torch_device: str = "cpu") -> Backend:
    """A new backend: `name` from BACKENDS, on torch_device (torch only); `resolve_device`
    turns a `--device` into these two."""
    module, cls = BACKENDS[name]
    backend_class = getattr(importlib.import_module(module), cls)
    return backend_class(torch_device) if name == "torch" else backend_class()
