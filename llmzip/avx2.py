"""Integer products by AVX2's vpmaddwd: a few rows, each weight widened once for all of them.

On a CPU with AVX2 but neither VNNI nor AMX (the AMD EPYCs of Zen 2 and 3), a decoder step
multiplied its rows by the int8 weights with numba's float32 tiles: each weight widened
to float32 (two instructions per eight), then one FMA per row, eight products each. vpmaddwd
multiplies sixteen int16 pairs and adds neighbours into eight int32 sums: twice the FMA's
products an instruction, on integers. numba turns one int16 x int8 dot into it, but turns
several dots sharing a weight into scalar code, so `_dot_block` writes the loop's LLVM IR
itself (`llvm.x86.avx2.pmadd.wd`): sixteen weights sign-extended to int16 once, then
multiplied with every row of a group of rows, two outputs a pass.

Activations are integers |x| <= ACT_MAX (int16) and weights int8, so each pair sums below
2^24 and every int32 sum is exact: the same integers as every other kernel's, scaled by
`scale_products`'s rule in the same pass (`vnni._store` with no limbs). Measured ad hoc on
an AMD EPYC (Zen 3, 2 threads, alone): 11 rows of the 49,152 x 576 head 81 G multiply-adds
a second against the tiles' 38; 2 rows of the 3,072 x 576 up-projection 46 against 23.

Only where `available()`: the CPU has AVX2, numba compiles for it, and a check against
float64 passes; inputs must have a multiple of 16 features (both presets do). The decoder
prefers AMX and VNNI where the CPU has them (`network._StepProducts`).
"""

from __future__ import annotations

import functools

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .arithmetic import ACT_MAX
from .vnni import host_has

__all__ = ["available", "fits", "products_scaled", "MIN_ROWS", "MAX_ROWS", "BLOCK"]

BLOCK = 16  # int16 lanes of a ymm register: inputs must have a multiple of this many features
MIN_ROWS = 4  # under 4 rows numba's own int32 dots, one weight row at a time, are faster:
# a whole step at 1,000 positions, 2 rows 16.1 ms against 19.0, 3 rows 21.4 against 22.6
MAX_ROWS = 16  # one compiled kernel per row count; more rows go in passes of this many
GROUP = 6  # rows whose sums (two outputs each: 12 registers) stay in registers in one pass
_I16X16 = ir.VectorType(ir.IntType(16), 16)
_I8X16 = ir.VectorType(ir.IntType(8), 16)
_I32X8 = ir.VectorType(ir.IntType(32), 8)


@intrinsic
def _dot_block(typingctx, w, n, x, n_blocks, rows_like):
    """Raw int32 sums of outputs n and n+1 of w (N, K) int8 against every row of x (R, K)
    int16: a tuple of 2R, output-major. rows_like is a tuple of R zeros: its type carries R
    to the code generator. Rows go in groups of GROUP; each group reads the two outputs'
    weights once a block (from L1 after the first group)."""
    rows = rows_like.count
    sig = types.UniTuple(types.int32, 2 * rows)(w, n, x, n_blocks, rows_like)

    def codegen(context, builder, signature, args):
        w_val, n_val, x_val, blocks = args[:4]
        i64 = ir.IntType(64)
        weights = context.make_array(signature.args[0])(context, builder, w_val)
        inputs = context.make_array(signature.args[2])(context, builder, x_val)
        w_stride = builder.extract_value(weights.strides, 0)
        x_stride = builder.extract_value(inputs.strides, 0)
        w_base = builder.add(builder.ptrtoint(weights.data, i64), builder.mul(w_stride, n_val))
        x_base = builder.ptrtoint(inputs.data, i64)

        def row(base, stride, index, vector):
            at = builder.add(base, builder.mul(stride, ir.Constant(i64, index)))
            return builder.inttoptr(at, vector.as_pointer())

        madd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_I32X8, [_I16X16] * 2), "llvm.x86.avx2.pmadd.wd")
        total = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(32), [_I32X8]), "llvm.vector.reduce.add.v8i32")
        w_rows = [row(w_base, w_stride, o, _I8X16) for o in range(2)]
        sums = [[None] * rows for _ in range(2)]
        for first in range(0, rows, GROUP):
            group = range(first, min(rows, first + GROUP))
            acc = {(o, r): cgutils.alloca_once_value(builder, ir.Constant(_I32X8, None))
                   for o in range(2) for r in group}
            x_rows = {r: row(x_base, x_stride, r, _I16X16) for r in group}
            with cgutils.for_range(builder, blocks) as loop:
                w_vecs = [builder.sext(builder.load(builder.gep(p, [loop.index]), align=1),
                                       _I16X16) for p in w_rows]
                for r in group:
                    x_vec = builder.load(builder.gep(x_rows[r], [loop.index]), align=1)
                    for o in range(2):
                        product = builder.call(madd, [x_vec, w_vecs[o]])
                        builder.store(builder.add(builder.load(acc[o, r]), product), acc[o, r])
            for (o, r), a in acc.items():
                sums[o][r] = builder.call(total, [builder.load(a)])
        return context.make_tuple(builder, signature.return_type,
                                  [v for per_output in sums for v in per_output])

    return sig, codegen


@njit(inline="always")
def _store(sums, first, rows, row, col, n, out):
    """out[:, n] by scale_products's rule from one output's int32 sums."""
    for r in range(rows):
        out[r, n] = (np.float64(sums[first + r]) * row[r]) * col[n]


@njit(parallel=True, cache=True)
def _products(x, w, row, col, out, rows_like):
    """out (R, N) = ((x . w) * row) * col, two outputs a pass (rows_like: R zeros, one
    compiled kernel per row count)."""
    rows, blocks = out.shape[0], w.shape[1] // BLOCK
    for pair in prange(w.shape[0] // 2):
        n = 2 * pair
        sums = _dot_block(w, n, x, blocks, rows_like)
        _store(sums, 0, rows, row, col, n, out)
        _store(sums, rows, rows, row, col, n + 1, out)
    if w.shape[0] % 2:  # the last output, paired with itself
        n = w.shape[0] - 1
        _store(_dot_block(w, n - 1, x, blocks, rows_like), rows, rows, row, col, n, out)


def fits(w8: np.ndarray) -> bool:
    return w8.shape[1] % BLOCK == 0 and w8.shape[0] >= 2


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
    """Can this process use the AVX2 products, and are they exact here? Checked once, at
    the extremes too (compiling them the first time: seconds, then numba's cache)."""
    if not host_has("avx2"):
        return False
    rng = np.random.default_rng(0)
    w = rng.integers(-128, 128, (37, 3 * BLOCK), dtype=np.int8)
    w[:4], w[4:8] = 127, -128
    try:
        for rows in (2, 3):  # other row counts compile on first use
            x = rng.integers(-64, 65, (rows, w.shape[1])).astype(np.float32)
            x[0, :2], x[-1, 2:4] = ACT_MAX, -ACT_MAX
            row, col = np.ones(rows), np.ones(w.shape[0])
            out = np.empty((rows, w.shape[0]))
            products_scaled(x, w, row, col, out)
            if not np.array_equal(out, x.astype(np.float64) @ w.T.astype(np.float64)):
                return False
    except Exception:  # noqa: BLE001  (any failure to compile or run: the numba kernels serve)
        return False
    return True
