"""Matrix products on a torch device (a GPU): the same integers at the device's speed.

Every product exact arithmetic asks for is a sum of integers below 2^24 (`kernels`), so a
float32 GEMM computes it exactly on any device that really computes in float32: TF32 and
other reduced-precision modes are switched off here. Only the products move to the device
(the linear layers, and the encoder's attention scores and weights x values); every other
rule stays in `arithmetic`, on the CPU, so no table can differ from a CPU-only run.

Not run on a GPU here (none was available); `tests/test_device.py` runs this path with
torch on the CPU and checks it against the numpy path bit for bit.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DeviceProducts", "resolve_device"]


def resolve_device(name: str) -> str | None:
    """'cpu' -> None (numpy and numba); 'cuda', 'cuda:N', 'auto' -> a torch device string;
    'torch:cpu' runs the device path with torch on the CPU (for tests)."""
    from .errors import LlmzipError
    if name == "cpu":
        return None
    import torch
    if name == "auto":
        return _this_process_gpu(torch) if torch.cuda.is_available() else None
    if name == "torch:cpu":
        return "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise LlmzipError(f"--device {name}: torch sees no CUDA device here")
        return _this_process_gpu(torch) if name == "cuda" else name
    raise LlmzipError(f"unknown device {name!r} (cpu, cuda, cuda:N or auto)")


def _this_process_gpu(torch) -> str:
    """Under a launcher, each process of a machine takes its own GPU (LOCAL_RANK), as
    accelerate places a model; alone, the first."""
    import os
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return f"cuda:{local_rank % max(torch.cuda.device_count(), 1)}"


class DeviceProducts:
    """Integer products of any number of rows on a torch device, weights uploaded once."""

    def __init__(self, device: str):
        import torch
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        self.torch, self.device, self._weights = torch, torch.device(device), {}

    def __call__(self, xq: np.ndarray, lin) -> np.ndarray:
        w = self._weights.get(id(lin.w8))
        if w is None:  # (K, N) float32 on the device, kept for the process
            w = self.torch.from_numpy(np.ascontiguousarray(lin.w8.T, np.float32)).to(self.device)
            self._weights[id(lin.w8)] = w
        return self._on_device(xq, w)

    def mm(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """a @ b for integer-valued float32 arrays whose sums stay below 2^24."""
        return self._on_device(a, self.torch.from_numpy(np.ascontiguousarray(b, np.float32))
                               .to(self.device))

    def _on_device(self, a: np.ndarray, b) -> np.ndarray:
        x = self.torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(self.device)
        return (x @ b).cpu().numpy()
