"""A layer's integer products on the device: int8 tensor cores where they prove exact there,
else float32 GEMMs.

The quantized activations are integers |x| <= ACT_MAX and the weights int8, and every sum of
products stays below 2^24 (`rules`' bounds). So there are two exact ways:
- **float32** (`Float32Products`): `x @ w` on integer-valued float32, exact in any
  summation order, split-K included, with TF32 off. It reads 4 bytes a weight and runs on
  the GPU's float32 units.
- **int8** (`Int8Products`): x = 256 hi + lo with both limbs int8 (lo in [-128, 127]); the
  limbs' rows in one `torch._int_mm` (int8 x int8 -> int32, integer sums, exact in any
  order), then 256 hi + lo. It reads 1 byte a weight and runs on the tensor cores, which do
  many times the float32 units' multiply-adds (an H100: ~2,000 int8 TOPS dense against
  67 float32 TFLOPS): what compute-bound forwards (the encoder, wide decoder steps) need.

`torch._int_mm` asks for more than 16 rows (the limbs are padded with zero rows) and inner
and outer sizes that are multiples of 8 (every preset's matrices; others go through
float32), and its layouts have had silent bugs (a non-contiguous second operand, torchao's
notes), so a device uses int8 only in a weights' layout that `int8_layout` finds exact
there, at the extremes. On the CPU (what CI runs), the int8 path runs its limbs and joins
with a float64 twin of `_int_mm` (limb sums are far below 2^53), so the conformance test
holds them to the same integers.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from llmzip.engine.exact.rules import ACT_MAX

__all__ = ["Float32Products", "Int8Products", "int8_layout", "int8_exact", "int8_for",
           "choose", "CPU_PRODUCTS"]

F32, F64 = torch.float32, torch.float64
MIN_LIMB_ROWS = 17  # _int_mm's least rows
CPU_PRODUCTS = "float32"  # on the CPU; tests set "int8" to run the int8 path's twin


class Float32Products:
    """Integer products as float32 GEMMs."""

    name = "float32"

    @staticmethod
    def weights(w8) -> torch.Tensor:
        """(N, K) int8 host weights as the (K, N) operand, on the host (the caller moves it)."""
        return torch.as_tensor(np.ascontiguousarray(w8.T, dtype=np.float32))

    def __call__(self, xq: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """(M, K) integer-valued activations times (K, N) weights: (M, N) exact sums."""
        return xq.to(F32) @ w


def _int_mm_twin(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`torch._int_mm`'s int32 sums, computed in float64 (exact for these limbs)."""
    return (a.to(F64) @ b.to(F64)).to(torch.int32)


class Int8Products:
    """Integer products as int8 x int8 -> int32 matmuls of two limbs; the (K, N) weights
    row-major, or column-major (a transposed view of the (N, K) rows)."""

    name = "int8"

    def __init__(self, matmul=torch._int_mm, column_major: bool = False):
        self.matmul, self.column_major = matmul, column_major

    def weights(self, w8) -> torch.Tensor:
        rows = torch.as_tensor(np.array(w8))  # (N, K), a copy of the (read-only) map
        return rows.t() if self.column_major else rows.t().contiguous()

    @staticmethod
    def fits(w: torch.Tensor) -> bool:
        return w.shape[0] % 8 == 0 and w.shape[1] % 8 == 0

    def __call__(self, xq: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if not self.fits(w):  # no preset's matrix: float32, converting the weights
            return xq.to(F32) @ w.to(F32)
        m = xq.shape[0]
        rows = max(m, -(-MIN_LIMB_ROWS // 2))
        x = xq.to(torch.int32)
        lo = ((x + 128) & 255) - 128
        limbs = torch.zeros((2 * rows, xq.shape[1]), dtype=torch.int8, device=xq.device)
        limbs[:m] = ((x - lo) >> 8).to(torch.int8)
        limbs[rows:rows + m] = lo.to(torch.int8)
        both = self.matmul(limbs, w)
        return both[:m] * 256 + both[rows:rows + m]


def _exact(products: Int8Products, device: torch.device) -> bool:
    """Are these products exact on this device: few rows and many, inputs at +-ACT_MAX
    and every limb edge, weights at 127 and -128, both presets' widths (576, 1,536)?"""
    gen = torch.Generator().manual_seed(0)
    try:
        for k, n in ((576, 1536), (1536, 576)):
            w8 = torch.randint(-128, 128, (n, k), generator=gen, dtype=torch.int8)
            w8[:8], w8[8:16] = 127, -128
            w = products.weights(w8.numpy()).to(device)
            for m in (1, 11, 300):
                x = torch.randint(-64, 65, (m, k), generator=gen).to(F32)
                x[0, :2], x[-1, 2:4] = ACT_MAX, -ACT_MAX
                x[:, :8] = torch.tensor([ACT_MAX, -ACT_MAX, 127, -128, 128, -129, 255, -256])
                expected = x.to(F64) @ w8.T.to(F64)
                if not torch.equal(products(x.to(device), w).cpu().to(F64), expected):
                    return False
    except (RuntimeError, NotImplementedError):  # no int8 matmul for this device or layout
        return False
    return True


@functools.cache
def int8_layout(device: torch.device) -> bool | None:
    """The weights' layout in which `torch._int_mm` gives the exact sums on this device:
    False row-major, True column-major, None neither (both are tried, in that order: which
    one cuBLASLt takes, and whether a layout is silently wrong, is the device's to say)."""
    for column_major in (False, True):
        if _exact(Int8Products(column_major=column_major), device):
            return column_major
    return None


def int8_exact(device: torch.device) -> bool:
    return int8_layout(device) is not None


def int8_for(device: torch.device) -> "Int8Products | None":
    """The int8 products this device runs exactly: `_int_mm` in a layout `int8_layout`
    found exact, its float64 twin on the CPU; None where neither."""
    if device.type == "cpu":
        return Int8Products(_int_mm_twin)
    layout = int8_layout(device)
    return None if layout is None else Int8Products(column_major=layout)


def choose(device: torch.device):
    """The products a device runs: int8 where it can (on the CPU, only where CPU_PRODUCTS
    asks for the twin), else float32."""
    if device.type == "cpu" and CPU_PRODUCTS != "int8":
        return Float32Products()
    return int8_for(device) or Float32Products()
