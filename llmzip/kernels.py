"""Exact integer products: the same integers from any kernel, summation order or thread count.

Every sum here adds integer terms whose largest possible partial sum, by the bounds of
`arithmetic` (sum |x| <= 132,104 against |w| <= 127; folded attention weights below 2^17
against int8 values), stays below 2^24, so float32 holds every partial sum exactly and how
it is computed cannot change the result. That is also why the loops below may let LLVM
reassociate and fuse their float32 sums (`EXACT_SUMS`): on exact integers any order and
any FMA give the same number. Which kernel runs is a matter of speed:
- `products_blas`: one float32 sgemm: the encoder's thousands of rows at BLAS speed.
- `products_tiles`: a few rows times int8 weights read once: one int32 dot per output
  (vpmaddwd) under 4 rows, where streaming the weights bounds the step; from 4 rows,
  float32 tiles that widen each weight once for 4 rows (segments under
  `network.BLAS_ROWS` tokens; the decoder where none of the kernels below serves, and
  `avx2`'s vpmaddwd blocks do not either).
- `products_int8`: torch's int8 matmul (oneDNN, VNNI) on the activations' two int8 limbs,
  int32 sums, where `int8_matmul_serves`: the CPU has VNNI and the check finds it exact
  (an AVX2 AMD EPYC gets exact sums too, from a generic path 13-40x slower than the
  tiles). The decoder uses it
  from INT8_ROWS rows (on an AVX-512 VNNI Xeon, a step's products at 11 rows took 17 ms
  against the tiles' 31; the whole step at 2,000 cached positions 74 ms against 84), where
  neither of the decoder's byte-instruction kernels serves: AMX tiles (`amx`) and VNNI
  (`vnni`), which the decoder prefers (`network._StepProducts`).
- `attend_cached`: the decoder's attention over an int8 KV cache: the scores by int16 pair
  products over keys stored in blocks of positions (`scores`), the weights x values along
  the positions of values stored channel-major (D, T), vectorized, the query heads sharing
  a KV head widening each value once, four value rows a pass.
  `attend_segment`: the encoder's, on the CPU, by the same per-position kernel.
`bench/steps.py` shows what each costs in a decoder step.
"""

from __future__ import annotations

import functools
import warnings

import numba
import numpy as np
from numba import njit, prange

from .arithmetic import (ACT_MAX, fold_weights, norm_head, over_rows, quantize_kv_head,
                         quantize_query, rotate_head, top_of)
from .scores import KEY_BLOCK, check_layout, score_blocks, store_key

__all__ = ["TILE_ROWS", "INT8_ROWS", "products_blas", "products_tiles", "products_dots_scaled",
           "products_int8",
           "int8_weights", "int8_matmul_is_exact", "int8_matmul_serves", "store_step_heads",
           "attend_cached", "attend_segment"]

EXACT_SUMS = {"reassoc", "contract"}  # integer-valued float32: any order is exact
SEGMENT_CHUNKS = 32  # runs of positions a head's encoder attention is shared out in
TILE_ROWS = 4  # from this many rows, float32 tiles beat one int32 dot per output
INT8_ROWS = 6  # from this many, torch's int8 matmul beats the tiles (where it is exact):
# a step at 500 cached positions, 2 threads: 4 rows 30.0 ms against 29.4, 6 rows 34.2 vs 39.1


def products_blas(xq: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(M, K) float32 integers times (N, K) int8 weights, or (K, N) float32 ones: (M, N)."""
    if w.dtype != np.float32:
        w = transposed_float32(w)
    return xq @ w


def transposed_float32(w: np.ndarray) -> np.ndarray:
    """(N, K) weights as a C-ordered (K, N) float32 array, the layout OpenBLAS multiplies
    fastest (measured: 72-77 GMAC/s against 57-73 for the transposed view)."""
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
    (saturating int16 pairs) or exact but slow: on an AVX2 AMD EPYC, 11 rows of the
    49,152 x 576 head took 243 ms against the tiles' 6 (`products_tiles`)."""
    import llvmlite.binding as llvm
    found = llvm.get_host_cpu_features()
    has_vnni = found.get("avx512vnni", False) or found.get("avxvnni", False)
    return has_vnni and int8_matmul_is_exact()


@functools.cache
def int8_matmul_is_exact() -> bool:
    """Does torch's int8 matmul give exact int32 sums here, for a few rows and for many, at
    the extremes too? x86 CPUs without VNNI multiply in saturating int16 pairs
    (VPMADDUBSW): inexact there, so the numba kernels serve. Checked once a process (it
    imports torch: 0.9 s), and only by a decoder of INT8_ROWS rows or more."""
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


@njit(fastmath=EXACT_SUMS, cache=True)
def _weigh_pair(fa, fb, values_t, out_a, out_b):
    """out_a[d] = fa . values_t[d] and out_b likewise: two queries' weights x values,
    four channels a pass (eight sums in registers, four rows of values read at once)."""
    for d in range(0, values_t.shape[0], 4):
        v0, v1, v2, v3 = values_t[d:d + 4]
        s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = np.float32(0)
        for t in range(fa.shape[0]):
            x0, x1, x2, x3 = np.float32(v0[t]), np.float32(v1[t]), np.float32(v2[t]), np.float32(v3[t])
            a, b = fa[t], fb[t]
            s00, s01, s02, s03 = s00 + a * x0, s01 + a * x1, s02 + a * x2, s03 + a * x3
            s10, s11, s12, s13 = s10 + b * x0, s11 + b * x1, s12 + b * x2, s13 + b * x3
        out_a[d:d + 4] = s00, s01, s02, s03
        out_b[d:d + 4] = s10, s11, s12, s13


@njit(fastmath=EXACT_SUMS, cache=True)
def _weigh_triple(fa, fb, fc, values_t, out_a, out_b, out_c):
    """`_weigh_pair` for three queries: twelve sums in registers. Each value is widened
    just before its three products: with all four widened first (the pair's order), the
    four took four of AVX2's sixteen vector registers, LLVM kept two sums on the stack,
    and their load-add-store chains bound the loop (22.3 -> 13.0 us at 2,001 values;
    a decoder step's attention, 11 rows at 2,000 positions, ~9% less; ad hoc, AMD EPYC)."""
    for d in range(0, values_t.shape[0], 4):
        v0, v1, v2, v3 = values_t[d:d + 4]
        s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = s20 = s21 = s22 = s23 = np.float32(0)
        for t in range(fa.shape[0]):
            a, b, c = fa[t], fb[t], fc[t]
            x = np.float32(v0[t])
            s00, s10, s20 = s00 + a * x, s10 + b * x, s20 + c * x
            x = np.float32(v1[t])
            s01, s11, s21 = s01 + a * x, s11 + b * x, s21 + c * x
            x = np.float32(v2[t])
            s02, s12, s22 = s02 + a * x, s12 + b * x, s22 + c * x
            x = np.float32(v3[t])
            s03, s13, s23 = s03 + a * x, s13 + b * x, s23 + c * x
        out_a[d:d + 4] = s00, s01, s02, s03
        out_b[d:d + 4] = s10, s11, s12, s13
        out_c[d:d + 4] = s20, s21, s22, s23


@over_rows
@njit(parallel=True, cache=True)
def store_step_heads(qkv, pos, cos, sin, q_gain, k_gain, eps, q_factor, queries, q_scale,
                     key_blocks, k_factors, values_t, v_scales):
    """A decoder step's attention inputs, at position pos, from each row's qkv (R, (Hq +
    2 H) D) float64: the queries QK-normed (where a gain is given), rotated and quantized
    into queries (R, Hq, D) int16 with q_scale (R, Hq); the keys likewise and the values
    quantized, into the cache that `attend_cached` reads (R rows first): keys into their
    blocks (`scores.store_key`) with factors (scale times q_factor), values into column
    pos (channel-major) with their scales. The encoder's rules (`arithmetic`: norm_head,
    rotate_head, quantize_query, quantize_kv_head) vector by vector, in one call where
    the encoder makes ten (split, norm, rotate, quantize, convert, store); each value
    byte lands on its own cache line, cold by then."""
    rows, n_q, dim = queries.shape
    n_kv = key_blocks.shape[1]
    heads = n_q + n_kv
    cos_p, sin_p = cos[pos], sin[pos]
    for i in prange(rows * heads):
        r, h = i // heads, i % heads
        v = qkv[r, h * dim:(h + 1) * dim].copy()
        if h < n_q:
            if q_gain.size:
                norm_head(v, q_gain, eps)
            rotate_head(v, cos_p, sin_p)
            q_scale[r, h] = quantize_query(v, queries[r, h])
        else:
            kv = h - n_q
            if k_gain.size:
                norm_head(v, k_gain, eps)
            rotate_head(v, cos_p, sin_p)
            vq = np.empty(dim, np.int8)
            k_factors[r, kv, pos] = quantize_kv_head(v, vq) * q_factor
            store_key(vq, pos, key_blocks[r, kv])
            value = qkv[r, (heads + kv) * dim:(heads + kv + 1) * dim]
            v_scales[r, kv, pos] = quantize_kv_head(value, vq)
            for d in range(dim):
                values_t[r, kv, d, pos] = vq[d]


@njit(inline="always")
def _attend_one(pairs, q_scale, key_blocks, lo, hi, value_cols, factors, v_scales, table,
                scratch, out, groups_like):
    """Attention of one position's G query heads (pairs (G, D / 2), `scores.query_pairs`;
    q_scale (G,)) over the keys lo..hi (inclusive) of one KV head (key_blocks (NB, D / 2,
    16), `scores`) and their values (value_cols (D, n) int8, channel-major; factors,
    v_scales (n,)) into out (G, D). The per-query rules are the encoder's and the
    decoder's alike (`arithmetic.fold_weights`), in float64 outside the exact sums. The
    scores come whole blocks at a time (`scores.score_blocks`); the weights x values go
    in threes where G allows, else in pairs (the last one paired with itself when G is
    odd), each value widened once per group. scratch: `_scratch`."""
    scores, folded, acc, logits, weights, scales = scratch
    n_groups, dim = out.shape
    n = hi - lo + 1
    first = lo // KEY_BLOCK
    score_blocks(pairs, key_blocks, first, hi // KEY_BLOCK + 1, scores, groups_like)
    skip = lo - first * KEY_BLOCK
    triples = n_groups % 3 == 0
    top_vs = top_of(v_scales)
    for g in range(n_groups):
        factor = q_scale[g]
        for t in range(n):
            logits[t] = np.float64(scores[g, skip + t]) * (factor * factors[t])
        scales[g] = fold_weights(logits[:n], v_scales, top_vs, table, weights[:n])
        folded[g, :n] = weights[:n]  # integers below 2^17: exact in float32
    if not triples and n_groups % 2:  # the last query's pair is itself
        folded[n_groups, :n] = folded[n_groups - 1, :n]
    for g in range(0, n_groups, 3 if triples else 2):
        if triples:
            _weigh_triple(folded[g, :n], folded[g + 1, :n], folded[g + 2, :n], value_cols,
                          acc[g], acc[g + 1], acc[g + 2])
        else:
            _weigh_pair(folded[g, :n], folded[g + 1, :n], value_cols, acc[g], acc[g + 1])
    for g in range(n_groups):
        for d in range(dim):
            out[g, d] = np.float64(acc[g, d]) * scales[g]


@njit(inline="always")
def _scratch(n_groups, dim, n):
    """`_attend_one`'s working arrays for spans of up to n keys: scores (whole blocks),
    folded weights and sums (one row more, for a query paired with itself), logits,
    weights, output scales."""
    return (np.empty((n_groups, n + 2 * KEY_BLOCK), np.int32),
            np.empty((n_groups + 1, n), np.float32), np.empty((n_groups + 1, dim), np.float32),
            np.empty(n), np.empty(n), np.empty(n_groups))


@njit(parallel=True, cache=True)
def attend_cached(pairs, q_scale, key_blocks, k_factor, values_t, v_scale, lo, hi, table, out,
                  groups_like):
    """The decoder's attention: each row's G query heads over its cached keys lo..hi
    (inclusive), by `_attend_one`.

    pairs (B, H, G, D / 2) int32 (`scores.query_pairs`) with q_scale (B, H, G); key_blocks
    (B, H, NB, D / 2, 16) int8 (`scores`); values_t (B, H, D, T) int8, channel-major;
    k_factor (each key's scale times the logit factor) and v_scale (B, H, T); out (B, H,
    G, D); groups_like: G zeros (`scores.score_blocks`)."""
    n_rows, n_heads, n_groups, dim = out.shape
    check_layout(pairs, key_blocks, hi + 1, groups_like)
    for i in prange(n_rows * n_heads):
        b, h = i // n_heads, i % n_heads
        _attend_one(pairs[b, h], q_scale[b, h], key_blocks[b, h], lo, hi,
                    values_t[b, h, :, lo:hi + 1], k_factor[b, h, lo:hi + 1],
                    v_scale[b, h, lo:hi + 1], table, _scratch(n_groups, dim, hi - lo + 1),
                    out[b, h], groups_like)


@njit(parallel=True, cache=True)
def attend_segment(pairs, q_scale, key_blocks, k_factor, values_t, v_scale, window, table, out,
                   groups_like):
    """The encoder's attention on the CPU: every position of a segment over its causal
    (windowed) span of the segment's own keys, by the decoder's `_attend_one`, so the
    scores, weights and sums stay in the cache. (Float32 BLAS on blocks of 256 queries,
    then the fold, wrote and read each block's scores and weights through memory; ad hoc,
    AMD EPYC, alone, one layer, six interleaved runs: 4,096 positions 427-536 ms against
    357-475, 1,024 positions 46-60 against 34-52.)

    pairs (T, H, G, D / 2) int32 with q_scale (T, H, G); key_blocks (H, NB, D / 2, 16) and
    values_t (H, D, T) int8 with k_factor and v_scale (H, T); out (T, H, G, D). Positions
    go in pairs, p and T - 1 - p, so that each thread gets as many keys to read as the
    other; a head's pairs in SEGMENT_CHUNKS runs, each with one scratch (one per pair:
    3-7% slower, ad hoc, one layer at 1,024 and 3,500 positions)."""
    t_len, n_heads, n_groups, dim = out.shape
    check_layout(pairs, key_blocks, t_len, groups_like)
    half = (t_len + 1) // 2
    chunks = min(half, SEGMENT_CHUNKS)
    for i in prange(n_heads * chunks):
        h, c = i // chunks, i % chunks  # a thread stays on one head: its keys stay cached
        scratch = _scratch(n_groups, dim, t_len)
        for first in range(c * half // chunks, (c + 1) * half // chunks):
            for p in (first, t_len - 1 - first):
                lo = max(0, p - window + 1) if window > 0 else 0
                _attend_one(pairs[p, h], q_scale[p, h], key_blocks[h], lo, p,
                            values_t[h, :, lo:p + 1], k_factor[h, lo:p + 1],
                            v_scale[h, lo:p + 1], table, scratch, out[p, h], groups_like)
                if p == t_len - 1 - p:  # the middle position of an odd length: once
                    break
