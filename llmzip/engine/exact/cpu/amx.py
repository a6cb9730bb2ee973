"""Integer products by Intel AMX tiles: many rows at the speed of reading the weights.

With 11 rows (alice29's 11 segments) a decoder step's products are 3 G multiply-adds of
bytes (two limbs a row): VNNI, and torch's int8 matmul (oneDNN's VNNI GEMM), are bound by
computing them. AMX's tdpbusd multiplies a 16 x 64 tile of unsigned bytes by a 64 x 16
tile of signed ones, 16,384 multiply-adds an instruction, so reading the weights bounds it
again (docs/PERFORMANCE.md). numba has no name for tiles either; the intrinsics here write
LLVM's (`llvm.x86.tileloadd64`, `llvm.x86.tdpbusd`, ...).

The inputs are `vnni`'s unsigned limbs (x + 32768 = 256 hi + lo), so the sums, and the
products scaled by `scale_products`'s rule, are the same integers and numbers as every
other kernel's. Weights are read as tiles of 16 outputs x 64 features, packed so (`pack`:
a copy of every matrix, 134 MB for SmolLM2-135M, made once a process, only by a decoder
that uses AMX).

Only where `available()`: the CPU has AMX-INT8, numba compiles for it, Linux lets the
process use tile data (arch_prctl), and a check against float64 passes; matrices must have
a multiple of 16 outputs and 64 features (both presets do).
"""

from __future__ import annotations

import ctypes
import functools

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from llmzip.engine.exact.cpu.intrinsics import exact_at_extremes, host_has
from llmzip.engine.exact.cpu.vnni import BLOCK, OFFSET, limbs, weight_sums

__all__ = ["available", "fits", "pack", "products_scaled", "TILE", "MAX_ROWS", "MIN_STEPS"]

TILE = 16  # rows of a tile; a tile row is BLOCK (64) bytes
MAX_ROWS = TILE  # two limb rows a row: up to two tiles of inputs
MIN_STEPS = 300  # packing the weights pays for itself over segments this long (against
# VNNI at 1 row; docs/PERFORMANCE.md)
_I8, _I64 = ir.IntType(8), ir.IntType(64)
_P8 = _I8.as_pointer()
C0, C1, A0, A1, B = 0, 1, 2, 3, 4  # tile registers: sums and inputs of each limb-row group, weights


def _function(builder, name, args):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), args),
                                          name)


def _data(context, builder, array_type, value):
    return builder.bitcast(context.make_array(array_type)(context, builder, value).data, _P8)


@intrinsic
def _configure(typingctx, config):
    """Load the tile configuration (`_config`) into this thread's tile registers."""
    def codegen(context, builder, signature, args):
        builder.call(_function(builder, "llvm.x86.ldtilecfg", [_P8]),
                     [_data(context, builder, signature.args[0], args[0])])
        return context.get_dummy_value()
    return types.void(config), codegen


@intrinsic
def _release(typingctx):
    """Free this thread's tile state (cheaper context switches once done)."""
    def codegen(context, builder, signature, args):
        builder.call(_function(builder, "llvm.x86.tilerelease", []), [])
        return context.get_dummy_value()
    return types.void(), codegen


@intrinsic
def _block_sums(typingctx, packed, n_block, u, sums, groups_like):
    """sums (32, 16) int32 = limb rows of u (2R, K) times outputs of weight tile row n_block
    of packed (N/16, K/64, 16, 64): one or two groups of 16 limb rows (groups_like: a tuple
    of that many zeros, its type carrying the count to the code generator)."""
    groups = groups_like.count

    def codegen(context, builder, signature, args):
        packed_val, n_val, u_val, sums_val = args[:4]
        packed_type, u_type = signature.args[0], signature.args[2]
        weights = context.make_array(packed_type)(context, builder, packed_val)
        k_blocks = builder.extract_value(weights.shape, 1)
        inputs = context.make_array(u_type)(context, builder, u_val)
        stride = builder.extract_value(inputs.strides, 0)  # K bytes a limb row
        load = _function(builder, "llvm.x86.tileloadd64", [_I8, _P8, _I64])
        store = _function(builder, "llvm.x86.tilestored64", [_I8, _P8, _I64])
        zero = _function(builder, "llvm.x86.tilezero", [_I8])
        dot = _function(builder, "llvm.x86.tdpbusd", [_I8, _I8, _I8])
        tile = lambda t: ir.Constant(_I8, t)  # noqa: E731
        row_bytes = ir.Constant(_I64, BLOCK)
        w_base = builder.ptrtoint(builder.bitcast(weights.data, _P8), _I64)
        u_base = builder.ptrtoint(builder.bitcast(inputs.data, _P8), _I64)
        first = builder.mul(n_val, k_blocks)
        for c in (C0, C1)[:groups]:
            builder.call(zero, [tile(c)])
        with cgutils.for_range(builder, k_blocks) as loop:
            at = builder.mul(builder.add(first, loop.index), ir.Constant(_I64, TILE * BLOCK))
            builder.call(load, [tile(B), builder.inttoptr(builder.add(w_base, at), _P8),
                                row_bytes])
            for g, (c, a) in enumerate(((C0, A0), (C1, A1))[:groups]):
                offset = builder.add(builder.mul(loop.index, row_bytes),
                                     builder.mul(stride, ir.Constant(_I64, g * TILE)))
                builder.call(load, [tile(a), builder.inttoptr(builder.add(u_base, offset), _P8),
                                    stride])
                builder.call(dot, [tile(c), tile(a), tile(B)])
        out = builder.ptrtoint(_data(context, builder, signature.args[3], sums_val), _I64)
        for g, c in enumerate((C0, C1)[:groups]):
            at = builder.add(out, ir.Constant(_I64, g * TILE * TILE * 4))
            builder.call(store, [tile(c), builder.inttoptr(at, _P8), row_bytes])
        return context.get_dummy_value()

    return types.void(packed, n_block, u, sums, groups_like), codegen


@njit(parallel=True, cache=True)
def _products(u, packed, w_sum, row, col, out, config, groups_like, threads):
    """out (R, N) = ((u's integers . w) * row) * col, by `scale_products`'s rule; each
    of the threads configures its tiles once and takes a contiguous share of the output
    tiles."""
    rows, n_blocks = out.shape[0], packed.shape[0]
    for t in prange(threads):
        sums = np.zeros((2 * TILE, TILE), np.int32)
        _configure(config)
        for nb in range(t * n_blocks // threads, (t + 1) * n_blocks // threads):
            _block_sums(packed, nb, u, sums, groups_like)
            for j in range(TILE):
                n = nb * TILE + j
                offset = np.int64(OFFSET) * w_sum[n]
                for r in range(rows):
                    acc = np.int64(256) * sums[2 * r, j] + sums[2 * r + 1, j] - offset
                    out[r, n] = (np.float64(acc) * row[r]) * col[n]
        _release()


@njit(parallel=True, cache=True)
def _pack(w, packed):
    """packed[nb, kb, r, 4 n + j] = w[16 nb + n, 64 kb + 4 r + j]: tdpbusd's weight tiles."""
    for nb in prange(packed.shape[0]):
        for kb in range(packed.shape[1]):
            for r in range(TILE):
                for n in range(TILE):
                    for j in range(4):
                        packed[nb, kb, r, 4 * n + j] = w[TILE * nb + n, BLOCK * kb + 4 * r + j]


def fits(w8: np.ndarray) -> bool:
    return w8.shape[0] % TILE == 0 and w8.shape[1] % BLOCK == 0


def pack(w8: np.ndarray) -> np.ndarray:
    """(N, K) int8 weights as AMX weight tiles (N/16, K/64, 16, 64); see `fits`."""
    packed = np.empty((w8.shape[0] // TILE, w8.shape[1] // BLOCK, TILE, BLOCK), np.int8)
    _pack(w8, packed)
    return packed


@functools.cache
def _config(rows: int) -> np.ndarray:
    """The 64-byte tile configuration for R rows (2R limb rows, one or two groups)."""
    config = np.zeros(64, np.uint8)
    config[0] = 1  # palette 1
    bytes_per_row, n_rows = config[16:32].view(np.uint16), config[48:56]
    limb_rows = 2 * rows
    for c, a, group_rows in ((C0, A0, min(TILE, limb_rows)), (C1, A1, limb_rows - TILE)):
        if group_rows > 0:
            bytes_per_row[c] = bytes_per_row[a] = BLOCK
            n_rows[c] = n_rows[a] = group_rows
    bytes_per_row[B], n_rows[B] = BLOCK, TILE
    return config


def products_scaled(xq: np.ndarray, packed: np.ndarray, w_sum: np.ndarray, row: np.ndarray,
                    col: np.ndarray, out: np.ndarray) -> None:
    """out (R, N) float64 = ((xq . w^T) * row) * col, as `scale_products` computes it, for
    xq (R, K) float32 integers |x| <= ACT_MAX, R <= MAX_ROWS, w packed by `pack`."""
    rows = xq.shape[0]
    u = np.empty((2 * rows, xq.shape[1]), np.uint8)
    limbs(xq, u)
    _products(u, packed, w_sum, row, col, out, _config(rows), (0,) * -(-2 * rows // TILE),
              numba.get_num_threads())


def _permitted() -> bool:
    """Ask Linux for this process's use of tile data (arch_prctl ARCH_REQ_XCOMP_PERM)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(158, 0x1023, 18) == 0  # SYS_arch_prctl, XFEATURE_XTILEDATA
    except (OSError, AttributeError):
        return False


@functools.cache
def available() -> bool:
    """Can this process use the AMX products, and are they exact here? (One group of limb
    rows and two.)"""
    return host_has("amx-tile", "amx-int8") and _permitted() and exact_at_extremes(
        lambda x, w, out: products_scaled(x, pack(w), weight_sums(w), np.ones(len(x)),
                                          np.ones(len(w)), out), 3 * TILE, 3 * BLOCK, (1, 11))
