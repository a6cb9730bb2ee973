"""Integer products by AVX-512 VNNI: the decoder's few rows at the speed of reading the weights.

A decoder step of a small file (one or two segments, so one or two rows) multiplies its
activations by 134 MB of int8 weights (SmolLM2-135M): streaming them bounds the step. numba's
own loops cannot get there: LLVM turns one int16 x int8 dot into vpmaddwd, which needs each
weight sign-extended first, and turns several dots sharing a weight into scalar code. VNNI's
vpdpbusd multiplies 64 unsigned by 64 signed bytes and adds them into sixteen int32 sums in
one instruction, straight from the int8 weights. numba has no name for it, so `_dot_block`
is a numba intrinsic that writes the LLVM IR of the loop itself (`llvm.x86.avx512.vpdpbusd.512`).

Activations are integers |x| <= ACT_MAX (32,639), so x + 32768 is two unsigned bytes,
x + 32768 = 256 hi + lo, and

    sum x w = 256 sum hi w + sum lo w - 32768 sum w,

every term an exact integer (each int32 sum stays below 255 * 128 * K, 2^26 for K = 2,048),
so the products are the same integers as every other kernel's, and `scale_products`'s rule
turns them into the same float64 numbers, in the same kernel (one pass less).

Only where `available()`: the CPU has AVX-512 BW and VNNI, numba compiles for it (not for a
generic CPU named in NUMBA_CPU_NAME), and a check against float64 passes; inputs must have
a multiple of 64 features (both presets do). The decoder prefers AMX tiles (`amx`, same
limbs) where the CPU has them and its segments are long; elsewhere numba's kernels serve.
"""

from __future__ import annotations

import functools

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from llmzip.engine.exact.cpu.intrinsics import (
    exact_at_extremes,
    host_has,
    operand_rows,
    row_pointer,
)

__all__ = ["available", "fits", "weight_sums", "limbs", "products_scaled", "MAX_ROWS", "BLOCK",
           "OFFSET"]

BLOCK = 64  # bytes per vpdpbusd operand: inputs must have a multiple of this many features
MAX_ROWS = 6  # up to this many rows it beats torch's int8 matmul; beyond, they are even, or
# torch wins (docs/PERFORMANCE.md)
OFFSET = 32768  # x + OFFSET is unsigned 16-bit for |x| <= ACT_MAX
ACCUMULATORS = 24  # zmm registers for sums of one pass (32 in all: weights and inputs load too)
_I32X16 = ir.VectorType(ir.IntType(32), 16)


@intrinsic
def _dot_block(typingctx, w, n, u, n_blocks, rows_like, outputs_like):
    """Raw sums of outputs n .. n+O-1 of w (N, K) int8 against every limb row of u (2R, K)
    uint8: a tuple of O x 2R int32, output-major. rows_like and outputs_like are tuples of
    R and O zeros: their types carry R and O to the code generator. The rows go in groups
    whose sums fit in ACCUMULATORS registers; each group's inputs are read once per block
    for all O outputs."""
    outputs, rows = outputs_like.count, rows_like.count
    sig = types.UniTuple(types.int32, outputs * 2 * rows)(w, n, u, n_blocks, rows_like,
                                                         outputs_like)

    def codegen(context, builder, signature, args):
        blocks = args[3]
        w_base, w_stride, u_base, u_stride = operand_rows(context, builder, signature, args)
        dot = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_I32X16, [_I32X16] * 3), "llvm.x86.avx512.vpdpbusd.512")
        total = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(32), [_I32X16]), "llvm.vector.reduce.add.v16i32")
        w_rows = [row_pointer(builder, w_base, w_stride, o, _I32X16) for o in range(outputs)]
        sums = [[None] * (2 * rows) for _ in range(outputs)]
        group = max(1, ACCUMULATORS // (2 * outputs))
        for first in range(0, rows, group):
            streams = range(2 * first, 2 * min(rows, first + group))  # limb rows of the group
            acc = {(o, s): cgutils.alloca_once_value(builder, ir.Constant(_I32X16, None))
                   for o in range(outputs) for s in streams}
            u_rows = {s: row_pointer(builder, u_base, u_stride, s, _I32X16) for s in streams}
            with cgutils.for_range(builder, blocks) as loop:
                w_vecs = [builder.load(builder.gep(p, [loop.index]), align=1) for p in w_rows]
                for s in streams:
                    u_vec = builder.load(builder.gep(u_rows[s], [loop.index]), align=1)
                    for o in range(outputs):
                        builder.store(builder.call(dot, [builder.load(acc[o, s]), u_vec,
                                                         w_vecs[o]]), acc[o, s])
            for (o, s), a in acc.items():
                sums[o][s] = builder.call(total, [builder.load(a)])
        return context.make_tuple(builder, signature.return_type,
                                  [v for per_output in sums for v in per_output])

    return sig, codegen


@njit(cache=True)
def limbs(xq, u):
    """Integers |x| <= ACT_MAX (float32 rows of xq) as unsigned bytes: x + OFFSET = 256 u[2r]
    + u[2r + 1]."""
    for r in range(xq.shape[0]):
        for k in range(xq.shape[1]):
            v = np.int32(xq[r, k]) + OFFSET
            u[2 * r, k] = v >> 8
            u[2 * r + 1, k] = v & 255


@njit(inline="always")
def _store(sums, first, w_sum, rows, row, col, n, out):
    """out[:, n] by scale_products's rule from one output's raw limb sums."""
    offset = np.int64(OFFSET) * w_sum
    for r in range(rows):
        acc = np.int64(256) * sums[first + 2 * r] + sums[first + 2 * r + 1] - offset
        out[r, n] = (np.float64(acc) * row[r]) * col[n]


@njit(parallel=True, cache=True)
def _products(u, w, w_sum, row, col, out, rows_like):
    """out (R, N) = ((u's integers . w) * row) * col, two outputs a pass (rows_like: R
    zeros, one compiled kernel per row count)."""
    rows, blocks = out.shape[0], w.shape[1] // BLOCK
    for pair in prange(w.shape[0] // 2):
        n = 2 * pair
        sums = _dot_block(w, n, u, blocks, rows_like, (0, 0))
        _store(sums, 0, w_sum[n], rows, row, col, n, out)
        _store(sums, 2 * rows, w_sum[n + 1], rows, row, col, n + 1, out)
    if w.shape[0] % 2:
        n = w.shape[0] - 1
        _store(_dot_block(w, n, u, blocks, rows_like, (0,)), 0, w_sum[n], rows, row, col, n, out)


def fits(w8: np.ndarray) -> bool:
    return w8.shape[1] % BLOCK == 0


def weight_sums(w8: np.ndarray) -> np.ndarray:
    """Each output's weight sum (int64): the offset's share of its products."""
    return w8.sum(axis=1, dtype=np.int64)


def products_scaled(xq: np.ndarray, w8: np.ndarray, w_sum: np.ndarray, row: np.ndarray,
                    col: np.ndarray, out: np.ndarray) -> None:
    """out (R, N) float64 = ((xq . w8^T) * row) * col, as `scale_products` computes it, for
    xq (R, K) float32 integers |x| <= ACT_MAX, R <= MAX_ROWS, K a multiple of BLOCK."""
    rows = xq.shape[0]
    u = np.empty((2 * rows, xq.shape[1]), np.uint8)
    limbs(xq, u)
    _products(u, w8, w_sum, row, col, out, (0,) * rows)


@functools.cache
def available() -> bool:
    """Can this process use the VNNI products, and are they exact here?"""
    return host_has("avx512f", "avx512bw", "avx512vnni") and exact_at_extremes(
        lambda x, w, out: products_scaled(x, w, weight_sums(w), np.ones(len(x)),
                                          np.ones(len(w)), out), 37, 3 * BLOCK, (1, 2))
