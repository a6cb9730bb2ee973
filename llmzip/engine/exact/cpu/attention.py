"""Exact attention on the CPU: a step's over an int8 KV cache, and a segment's over itself.

`store_step_heads` norms, rotates and quantizes a step's queries, keys and values and stores
the keys in blocks of positions (`scores`) and the values channel-major (D, T).
`attend_cached` scores a step's queries by int16 pair products, folds them into integer
weights (`rules.fold_weights`: they sum to about 2^16, each value's scale folded in) and
sums weights x values along the positions, the query heads sharing a KV head widening each
value once, four value rows a pass. `attend_segment` is the encoder's, by the same
per-position kernel, so both directions compute the same numbers. Folded weights stay below
2^17 and values are int8, so every float32 partial sum is an exact integer.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from llmzip.engine.exact.cpu.products import EXACT_SUMS
from llmzip.engine.exact.cpu.scores import (
    KEY_BLOCK,
    check_layout,
    score_blocks,
    store_key,
)
from llmzip.engine.exact.rules import (
    fold_weights,
    norm_head,
    over_rows,
    quantize_kv_head,
    quantize_query,
    rotate_head,
    top_of,
)

SEGMENT_CHUNKS = 32  # runs of positions a head's encoder attention is shared out in


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
    and their load-add-store chains bound the loop (docs/PERFORMANCE.md)."""
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
    pos (channel-major) with their scales. The encoder's rules (`rules`: norm_head,
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
    decoder's alike (`rules.fold_weights`), in float64 outside the exact sums. The
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
    then the fold, wrote and read each block's scores and weights through memory, and
    was slower: docs/PERFORMANCE.md.)

    pairs (T, H, G, D / 2) int32 with q_scale (T, H, G); key_blocks (H, NB, D / 2, 16) and
    values_t (H, D, T) int8 with k_factor and v_scale (H, T); out (T, H, G, D). Positions
    go in pairs, p and T - 1 - p, so that each thread gets as many keys to read as the
    other; a head's pairs in SEGMENT_CHUNKS runs, each with one scratch (one per pair
    was slower)."""
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
