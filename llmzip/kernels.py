"""Exact integer products: the same integers from any kernel, summation order or thread count.

Every sum here adds integer terms whose largest possible partial sum, by the bounds of
`arithmetic` (sum |x| <= 132,104 against |w| <= 127; folded attention weights below 2^17
against int8 values), stays below 2^24, so how it is computed cannot change the result.
Which kernel runs is a matter of speed:
- `products_blas`: one float32 sgemm of integer-valued arrays (float32 holds integers up
  to 2^24 exactly): the encoder's thousands of rows at BLAS speed on any CPU.
- `products_int32`: int16 activations times int8 weights with int32 sums (numba; vpmaddwd
  on x86), reading each weight byte once: the decoder's few rows. Measured on 2 AVX2 cores:
  ~35 GMAC/s at 4-22 rows, where float32 BLAS, streaming 4-byte weights, gets ~24.
- `attend_cached`: the decoder's attention over an int8 KV cache, int32 sums.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .arithmetic import fold_weights

__all__ = ["products_blas", "products_int32", "attend_cached"]


def products_blas(xq: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(M, K) float32 integers times (N, K) int8 weights, or (K, N) float32 ones: (M, N)."""
    if w.dtype != np.float32:
        w = transposed_float32(w)
    return xq @ w


def transposed_float32(w: np.ndarray) -> np.ndarray:
    """(N, K) weights as a C-ordered (K, N) float32 array, the layout OpenBLAS multiplies
    fastest (measured: 72-77 GMAC/s against 57-73 for the transposed view)."""
    return np.ascontiguousarray(w.T, dtype=np.float32)


@njit(inline="always")
def _dot(a, b):
    """int32 dot product; truncating each step keeps LLVM on 32-bit lanes (vpmaddwd)."""
    s = np.int32(0)
    for k in range(a.shape[0]):
        s = np.int32(s + np.int32(a[k]) * np.int32(b[k]))
    return s


@njit(inline="always")
def _dot_2x2(a0, a1, b0, b1):
    """Four int32 dot products sharing their loads."""
    s00 = s01 = s10 = s11 = np.int32(0)
    for k in range(b0.shape[0]):
        x0, x1 = np.int32(a0[k]), np.int32(a1[k])
        w0, w1 = np.int32(b0[k]), np.int32(b1[k])
        s00 = np.int32(s00 + x0 * w0)
        s01 = np.int32(s01 + x0 * w1)
        s10 = np.int32(s10 + x1 * w0)
        s11 = np.int32(s11 + x1 * w1)
    return s00, s01, s10, s11


@njit(parallel=True, cache=True)
def _products_int32(x, w, out):
    m_rows, n_out = x.shape[0], w.shape[0]
    for pair in prange((n_out + 1) // 2):
        n = 2 * pair
        if n + 1 == n_out:
            for m in range(m_rows):
                out[m, n] = _dot(x[m], w[n])
            continue
        m = 0
        while m + 1 < m_rows:
            out[m, n], out[m, n + 1], out[m + 1, n], out[m + 1, n + 1] = _dot_2x2(
                x[m], x[m + 1], w[n], w[n + 1])
            m += 2
        if m < m_rows:
            out[m, n], out[m, n + 1] = _dot(x[m], w[n]), _dot(x[m], w[n + 1])


def products_int32(xq: np.ndarray, w8: np.ndarray) -> np.ndarray:
    """(M, K) int16 times (N, K) int8 with int32 sums; the caller guarantees they fit."""
    out = np.empty((xq.shape[0], w8.shape[0]), np.int32)
    _products_int32(xq, w8, out)
    return out


@njit(inline="always")
def _scores(q, keys_t, out):
    """out[t] = q . keys_t[:, t] in int32, two channels a pass: with keys stored channel-
    major (D, T) the loop runs along the keys, vectorized, with no horizontal sums
    (measured: 32 GMAC/s against 17 for a dot product per key)."""
    out[:] = 0
    for d in range(0, keys_t.shape[0] - 1, 2):
        qa, qb = np.int32(q[d]), np.int32(q[d + 1])
        ka, kb = keys_t[d], keys_t[d + 1]
        for t in range(out.shape[0]):
            out[t] = np.int32(out[t] + qa * np.int32(ka[t]) + qb * np.int32(kb[t]))
    if keys_t.shape[0] % 2:
        d = keys_t.shape[0] - 1
        qa, ka = np.int32(q[d]), keys_t[d]
        for t in range(out.shape[0]):
            out[t] = np.int32(out[t] + qa * np.int32(ka[t]))


@njit(parallel=True, cache=True)
def attend_cached(q, q_scale, keys_t, k_factor, values, v_scale, lo, hi, table, out):
    """Attention of each row's G query heads over its cached keys lo..hi (inclusive).

    q (B, H, G, D) integers with q_scale (B, H, G); keys_t (B, H, D, T) int8, channel-
    major, with k_factor (each key's scale times the logit factor) (B, H, T); values
    (B, H, T, D) int8 with v_scale (B, H, T); out (B, H, G, D). The per-query rules are
    the encoder's (`arithmetic.fold_score_block`): `fold_weights`; sums exact in int32."""
    n_rows, n_heads, n_groups, dim = q.shape
    n = hi - lo + 1
    for i in prange(n_rows * n_heads):
        b, h = i // n_heads, i % n_heads
        key_cols, value_rows = keys_t[b, h, :, lo:hi + 1], values[b, h, lo:hi + 1]
        factors, v_scales = k_factor[b, h, lo:hi + 1], v_scale[b, h, lo:hi + 1]
        scores = np.empty(n, np.int32)
        logits = np.empty(n)
        folded = np.empty((n_groups, n))
        scales = np.empty(n_groups)
        for g in range(n_groups):
            _scores(q[b, h, g], key_cols, scores)
            qs = q_scale[b, h, g]
            for t in range(n):
                logits[t] = scores[t] * (qs * factors[t])
            scales[g] = fold_weights(logits, v_scales, table, folded[g])
        acc = np.zeros((n_groups, dim), np.int32)
        for t in range(n):
            for g in range(n_groups):
                weight = np.int32(folded[g, t])
                for d in range(dim):
                    acc[g, d] = np.int32(acc[g, d] + weight * np.int32(value_rows[t, d]))
        for g in range(n_groups):
            for d in range(dim):
                out[b, h, g, d] = np.float64(acc[g, d]) * scales[g]
