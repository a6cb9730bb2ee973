"""Integer products by AVX2's vpmaddwd: the decoder's rows, each weight widened once for all.

On a CPU with AVX2 but neither VNNI nor AMX (the AMD EPYCs of Zen 2 and 3), a decoder step
multiplied its rows by the int8 weights with numba's kernels: under 4 rows one int32 dot
per output and row (each weight sign-extended again for every row), from 4 rows float32
tiles (each weight widened to float32, two instructions per eight, then eight products
an FMA). vpmaddwd multiplies sixteen int16 pairs and adds neighbours into eight int32
sums. numba turns one int16 x int8 dot into it, but turns several dots sharing a weight
into scalar code, so `_dot_block` writes the loop's LLVM IR itself
(`llvm.x86.avx2.pmadd.wd`): sixteen weights of one output sign-extended once, then
multiplied with every row of a group of up to twelve rows.

Activations are integers |x| <= ACT_MAX (int16) and weights int8, so each pair sums below
2^24 and every int32 sum is exact: the same integers as every other kernel's, scaled by
`scale_products`'s rule in the same pass. It beats numba's dots and tiles at every row
count, and one output a pass beats two outputs sharing their inputs
(docs/PERFORMANCE.md).

Only where `available()`: the CPU has AVX2, numba compiles for it, and a check against
float64 passes; inputs must have a multiple of 16 features (both presets do). The decoder
prefers AMX and VNNI where the CPU has them (`backend.STEP_KERNELS`).
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

__all__ = ["available", "fits", "products_scaled", "MAX_ROWS", "BLOCK"]

BLOCK = 16  # int16 lanes of a ymm register: inputs must have a multiple of this many features
MAX_ROWS = 16  # one compiled kernel per row count; more rows go in passes of this many
GROUP = 12  # rows whose sums stay in registers (16 ymm: 12 sums, the weights, an input)
_I16X16 = ir.VectorType(ir.IntType(16), 16)
_I8X16 = ir.VectorType(ir.IntType(8), 16)
_I32X8 = ir.VectorType(ir.IntType(32), 8)


@intrinsic
def _dot_block(typingctx, w, n, x, n_blocks, rows_like):
    """Raw int32 sums of output n of w (N, K) int8 against every row of x (R, K) int16: a
    tuple of R. rows_like is a tuple of R zeros: its type carries R to the code generator.
    Rows go in groups of GROUP; each group reads the output's weights once a block (from
    L1 after the first group)."""
    rows = rows_like.count
    sig = types.UniTuple(types.int32, rows)(w, n, x, n_blocks, rows_like)

    def codegen(context, builder, signature, args):
        blocks = args[3]
        w_at, _, x_base, x_stride = operand_rows(context, builder, signature, args)
        w_row = builder.inttoptr(w_at, _I8X16.as_pointer())
        madd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_I32X8, [_I16X16] * 2), "llvm.x86.avx2.pmadd.wd")
        total = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(32), [_I32X8]),
            "llvm.vector.reduce.add.v8i32")
        sums = [None] * rows
        for first in range(0, rows, GROUP):
            group = range(first, min(rows, first + GROUP))
            acc = {r: cgutils.alloca_once_value(builder, ir.Constant(_I32X8, None)) for r in group}
            x_rows = {r: row_pointer(builder, x_base, x_stride, r, _I16X16) for r in group}
            with cgutils.for_range(builder, blocks) as loop:
                w_vec = builder.sext(builder.load(builder.gep(w_row, [loop.index]), align=1),
                                     _I16X16)
                for r in group:
                    x_vec = builder.load(builder.gep(x_rows[r], [loop.index]), align=1)
                    product = builder.call(madd, [x_vec, w_vec])
                    builder.store(builder.add(builder.load(acc[r]), product), acc[r])
            for r, a in acc.items():
                sums[r] = builder.call(total, [builder.load(a)])
        return context.make_tuple(builder, signature.return_type, sums)

    return sig, codegen


@njit(parallel=True, cache=True)
def _products(x, w, row, col, out, rows_like):
    """out (R, N) = ((x . w) * row) * col, by scale_products's rule, an output a pass
    (rows_like: R zeros, one compiled kernel per row count)."""
    blocks = w.shape[1] // BLOCK
    for n in prange(w.shape[0]):
        sums = _dot_block(w, n, x, blocks, rows_like)
        for r in range(out.shape[0]):
            out[r, n] = (np.float64(sums[r]) * row[r]) * col[n]


def fits(w8: np.ndarray) -> bool:
    return w8.shape[1] % BLOCK == 0


def products_scaled(xq: np.ndarray, w8: np.ndarray, row: np.ndarray, col: np.ndarray,
                    out: np.ndarray) -> None:
    """out (R, N) float64 = ((xq . w8^T) * row) * col, as `scale_products` computes it, for
    xq (R, K) float32 integers |x| <= ACT_MAX, K a multiple of BLOCK; over MAX_ROWS rows,
    in passes of MAX_ROWS."""
    x = xq.astype(np.int16)
    for start in range(0, len(x), MAX_ROWS):
        part = slice(start, start + MAX_ROWS)
        rows = len(x[part])
        _products(x[part], w8, row[part], col, out[part], (0,) * rows)


@functools.cache
def available() -> bool:
    """Can this process use the AVX2 products, and are they exact here?"""
    return host_has("avx2") and exact_at_extremes(
        lambda x, w, out: products_scaled(x, w, np.ones(len(x)), np.ones(len(w)), out),
        37, 3 * BLOCK, (1, 2))
