"""What the byte-instruction kernels share: operands as rows of LLVM vectors, host checks.

`vnni`, `amx`, `avx2` and `scores` write LLVM IR through numba intrinsics; these helpers find
their operands' rows, say whether the host CPU has an instruction set, and check a kernel
against float64 products at the extremes of the bounds before it is trusted.
"""

from __future__ import annotations

import os

import numpy as np
from llvmlite import ir

from llmzip.engine.exact.rules import ACT_MAX


def operand_rows(context, builder, signature, args):
    """In a byte kernel's code generator, for arguments (w, n, inputs, ...): the address of
    row n of the weights and their row stride, the inputs' address and their row stride
    (LLVM i64 values)."""
    i64 = ir.IntType(64)
    weights = context.make_array(signature.args[0])(context, builder, args[0])
    inputs = context.make_array(signature.args[2])(context, builder, args[2])
    w_stride = builder.extract_value(weights.strides, 0)
    x_stride = builder.extract_value(inputs.strides, 0)
    w_row = builder.add(builder.ptrtoint(weights.data, i64), builder.mul(w_stride, args[1]))
    return w_row, w_stride, builder.ptrtoint(inputs.data, i64), x_stride


def row_pointer(builder, base, stride, index: int, vector):
    """In a code generator, row `index` of the array at base (i64) with this row stride,
    as a pointer to vectors of that type."""
    at = builder.add(base, builder.mul(stride, ir.Constant(ir.IntType(64), index)))
    return builder.inttoptr(at, vector.as_pointer())


def host_has(*features: str) -> bool:
    """Does this CPU have these features (LLVM's names), and does numba compile for it?"""
    import llvmlite.binding as llvm
    if os.environ.get("NUMBA_CPU_NAME", "host") != "host":
        return False  # numba compiles for another CPU, which may lack them
    found = llvm.get_host_cpu_features()
    return all(found.get(f, False) for f in features)


def exact_at_extremes(products, outputs: int, features: int, row_counts) -> bool:
    """Does products(x, w, out) (out = x . w^T at unit scales, float64) give the exact
    sums for these row counts, inputs at +-ACT_MAX and weights at 127 and -128 among
    them? Any failure to compile or run counts as no: other kernels serve. Each byte
    kernel's `available` asks this once, compiling it the first time (seconds, then
    numba's cache)."""
    rng = np.random.default_rng(0)
    w = rng.integers(-128, 128, (outputs, features), dtype=np.int8)
    w[:4], w[4:8] = 127, -128
    try:
        for rows in row_counts:
            x = rng.integers(-64, 65, (rows, features)).astype(np.float32)
            x[0, :2], x[-1, 2:4] = ACT_MAX, -ACT_MAX
            out = np.empty((rows, outputs))
            products(x, w, out)
            if not np.array_equal(out, x.astype(np.float64) @ w.T.astype(np.float64)):
                return False
    except Exception:  # noqa: BLE001  (a kernel that does not build here is not used)
        return False
    return True
