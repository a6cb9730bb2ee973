"""Exact integer products: the same integers from any kernel, summation order or thread count.

Every sum here adds integer terms whose largest possible partial sum, by the bounds of
`rules` (sum |x| <= 132,104 against |w| <= 127), stays below 2^24, so float32 holds every
partial sum exactly and how it is computed cannot change the result. That is also why the
loops below may let LLVM reassociate and fuse their float32 sums (`EXACT_SUMS`): on exact
integers any order and any FMA give the same number. Which kernel runs is a matter of speed
(`backend` chooses; docs/PERFORMANCE.md says why):
- `products_blas`: one float32 sgemm, for the encoder's many rows;
- `products_tiles`: a few rows times int8 weights read once: one int32 dot per output under
  TILE_ROWS rows (`products_dots_scaled`, scaled in the same pass), float32 tiles that
  widen each weight once for four rows from there;
- `products_int8`: torch's int8 matmul on the activations' two int8 limbs, int32 sums,
  where `int8_matmul_serves`: the CPU has VNNI and a check finds it exact.
"""

from __future__ import annotations

import functools
import warnings

import numba
import numpy as np
from numba import njit, prange

from llmzip.engine.exact.rules import ACT_MAX

__all__ = ["TILE_ROWS", "INT8_ROWS", "products_blas", "products_tiles", "products_dots_scaled",
           "products_int8",
           "int8_weights", "int8_matmul_is_exact", "int8_matmul_serves", "EXACT_SUMS"]

EXACT_SUMS = {"reassoc", "contract"}  # integer-valued float32: any order is exact
TILE_ROWS = 4  # from this many rows, float32 tiles beat one int32 dot per output
INT8_ROWS = 6  # from this many, torch's int8 matmul beats the tiles (with VNNI, where it is
# exact; docs/PERFORMANCE.md)


def products_blas(xq: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(M, K) float32 integers times (N, K) int8 weights, or (K, N) float32 ones: (M, N)."""
    if w.dtype != np.float32:
        w = transposed_float32(w)
    return xq @ w


def transposed_float32(w: np.ndarray) -> np.ndarray:
    """(N, K) weights as a C-ordered (K, N) float32 array, the layout OpenBLAS multiplies
    fastest (faster than the transposed view; docs/PERFORMANCE.md)."""
    return np.ascontiguousarray(w.T, dtype=np.float32)


@njit(fastmath=EXACT_SUMS, cache=True)
def _tile_4x2(x, m, w, n, out):
    """out[m:m+4, n:n+2]: 8 sums sharing each load."""
    a0, a1, a2, a3, b0, b1 = x[m], x[m + 1], x[m + 2], x[m + 3], w[n], w[n + 1]
    s00 = s01 = s10 = s11 = s20 = s21 = s30 = s31 = np.float32(0)
    for k in range(b0.shape[0]):
        w0, w1 = np.float32(b0[k]), np.float32(b1[k])
        s00 += a0[k] * w0
        s01 += a0[k] * w1
        s10 += a1[k] * w0
        s11 += a1[k] * w1
        s20 += a2[k] * w0
        s21 += a2[k] * w1
        s30 += a3[k] * w0
        s31 += a3[k] * w1
    out[m, n], out[m, n + 1], out[m + 1, n], out[m + 1, n + 1] = s00, s01, s10, s11
    out[m + 2, n], out[m + 2, n + 1], out[m + 3, n], out[m + 3, n + 1] = s20, s21, s30, s31


@njit(fastmath=EXACT_SUMS, cache=True)
def _tile_1x4(x, m, w, n, out):
    """out[m, n:n+4]: a row left over from the blocks of 4."""
    a, b0, b1, b2, b3 = x[m], w[n], w[n + 1], w[n + 2], w[n + 3]
    s0 = s1 = s2 = s3 = np.float32(0)
    for k in range(a.shape[0]):
        s0 += a[k] * np.float32(b0[k])
        s1 += a[k] * np.float32(b1[k])
        s2 += a[k] * np.float32(b2[k])
        s3 += a[k] * np.float32(b3[k])
    out[m, n], out[m, n + 1], out[m, n + 2], out[m, n + 3] = s0, s1, s2, s3


@njit(fastmath=EXACT_SUMS, cache=True)
def _dot_float32(a, b):
    """One float32 integer dot: the outputs left over from the tiles."""
    s = np.float32(0)
    for k in range(a.shape[0]):
        s += a[k] * np.float32(b[k])
    return s


@njit(parallel=True, cache=True)
def _products_tiles(x, w, out):
    m_rows, n_out = x.shape[0], w.shape[0]
    for quad in prange((n_out + 3) // 4):
        n = 4 * quad
        if n + 4 > n_out:  # the last outputs, when N is not a multiple of 4
            for j in range(n, n_out):
                for m in range(m_rows):
                    out[m, j] = _dot_float32(x[m], w[j])
            continue
        m = 0
        while m + 4 <= m_rows:
            _tile_4x2(x, m, w, n, out)
            _tile_4x2(x, m, w, n + 2, out)
            m += 4
        while m < m_rows:
            _tile_1x4(x, m, w, n, out)
            m += 1


@njit(inline="always")
def _dot_int32(a, b):
    """int16 . int8 in int32; truncating each step keeps LLVM on 32-bit lanes, where it
    matches vpmaddwd (16 products an instruction). It does not for several sums at once."""
    s = np.int32(0)
    for k in range(a.shape[0]):
        s = np.int32(s + np.int32(a[k]) * np.int32(b[k]))
    return s


@njit(parallel=True, cache=True)
def _products_dots(x, w, out):
    for n in prange(w.shape[0]):
        for m in range(x.shape[0]):
            out[m, n] = _dot_int32(x[m], w[n])


@njit(parallel=True, cache=True)
def _products_dots_scaled(x, w, row, col, out):
    for n in prange(w.shape[0]):
        for m in range(x.shape[0]):
            out[m, n] = (np.float64(_dot_int32(x[m], w[n])) * row[m]) * col[n]


def products_dots_scaled(xq: np.ndarray, w8: np.ndarray, row: np.ndarray, col: np.ndarray,
                         out: np.ndarray) -> None:
    """out (R, N) float64 = ((xq . w8^T) * row) * col by `scale_products`'s rule, one int32
    dot per output as `products_tiles` does under TILE_ROWS rows, scaled in the same pass
    (a decoder step of 1 or 2 rows: 121 calls and a pass over the outputs fewer)."""
    _products_dots_scaled(xq.astype(np.int16), w8, row, col, out)


def products_tiles(xq: np.ndarray, w8: np.ndarray) -> np.ndarray:
    """(M, K) float32 integers times (N, K) int8 weights: (M, N) integer sums (float32, or
    int32 under TILE_ROWS rows); the caller guarantees they fit (below 2^24).

    Under TILE_ROWS rows (a small file's one or two segments) a step is bound by streaming
    the weights, and one vpmaddwd dot per output does it fastest; from TILE_ROWS rows on,
    the float32 tiles, which widen each weight once for 4 rows."""
    if xq.shape[0] < TILE_ROWS:
        out = np.empty((xq.shape[0], w8.shape[0]), np.int32)
        _products_dots(xq.astype(np.int16), w8, out)
    else:
        out = np.empty((xq.shape[0], w8.shape[0]), np.float32)
        _products_tiles(xq, w8, out)
    return out


@njit(cache=True)
def _int8_limbs(xq, limbs):
    """Integers |x| <= ACT_MAX (float32) as int8 limbs, x = 256 hi + lo: hi in rows
    0..M-1 of limbs (2M, K), lo (in [-128, 127]) in rows M..2M-1."""
    m = xq.shape[0]
    for i in range(m):
        for k in range(xq.shape[1]):
            x = np.int32(xq[i, k])
            lo = ((x + 128) & 255) - 128
            limbs[i, k] = (x - lo) >> 8
            limbs[m + i, k] = lo


@njit(cache=True)
def _joined_limbs(both, out):
    """out = 256 hi + lo from the limbs' products both (2M, N)."""
    m = out.shape[0]
    for i in range(m):
        for n in range(out.shape[1]):
            out[i, n] = (both[i, n] << 8) + both[m + i, n]


def int8_weights(w8: np.ndarray):
    """(N, K) int8 weights as the (K, N) torch view `products_int8` multiplies (no copy)."""
    import torch
    with warnings.catch_warnings():  # the weights are a read-only map; torch only reads them
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")
        return torch.from_numpy(w8).t()


def products_int8(xq: np.ndarray, weights) -> np.ndarray:
    """(M, K) float32 integers (|x| <= ACT_MAX) times weights (`int8_weights`): (M, N)
    int32, by torch's int8 matmul on two int8 limbs (one call: the weights are read once
    for both). Only where `int8_matmul_is_exact()`; the caller guarantees the sums fit
    (below 2^24)."""
    import torch
    threads = numba.get_num_threads()  # the thread tuner sets numba's count; torch follows
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    limbs = np.empty((2 * xq.shape[0], xq.shape[1]), np.int8)
    _int8_limbs(xq, limbs)
    both = torch._int_mm(torch.from_numpy(limbs), weights).numpy()
    out = np.empty((xq.shape[0], both.shape[1]), np.int32)
    _joined_limbs(both, out)
    return out


@functools.cache
def int8_matmul_serves() -> bool:
    """Is torch's int8 matmul the decoder's fastest exact product for many rows here? Only
    with VNNI (AVX-512 or AVX): oneDNN's GEMM for it. Without, it is either inexact
    (saturating int16 pairs) or exact but many times slower than `products_tiles`
    (docs/PERFORMANCE.md)."""
    import llvmlite.binding as llvm
    found = llvm.get_host_cpu_features()
    has_vnni = found.get("avx512vnni", False) or found.get("avxvnni", False)
    return has_vnni and int8_matmul_is_exact()


@functools.cache
def int8_matmul_is_exact() -> bool:
    """Does torch's int8 matmul give exact int32 sums here, for a few rows and for many, at
    the extremes too? x86 CPUs without VNNI multiply in saturating int16 pairs
    (VPMADDUBSW): inexact there, so the numba kernels serve. Checked once a process (it
    imports torch, which takes a while), and only by a decoder of INT8_ROWS rows or more."""
    try:
        import torch
        torch._int_mm  # noqa: B018  (older torch: no int8 matmul)
    except (ImportError, AttributeError):
        return False
    rng = np.random.default_rng(0)
    w = rng.integers(-128, 128, (72, 1536), dtype=np.int8)
    w[:8], w[8:16] = 127, -128
    threads = numba.get_num_threads()
    try:
        for n in sorted({1, numba.config.NUMBA_NUM_THREADS}):  # the thread tuner's choices
            numba.set_num_threads(n)
            for m in (1, 4, 6, 11, 300):  # rows within sum |x| <= L1_CAP, as quantized
                x = rng.integers(-64, 65, (m, w.shape[1])).astype(np.float32)
                x[:, rng.integers(0, w.shape[1], 2)] = rng.integers(-ACT_MAX, ACT_MAX + 1,
                                                                    (m, 2))
                x[0, :2], x[-1, 2:4] = ACT_MAX, -ACT_MAX  # limbs 127, 127 and -127, -127
                expected = x.astype(np.float64) @ w.T.astype(np.float64)
                if not np.array_equal(products_int8(x, int8_weights(w)), expected):
                    return False
    except RuntimeError:  # no int8 matmul on this platform
        return False
    finally:
        numba.set_num_threads(threads)
    return True


