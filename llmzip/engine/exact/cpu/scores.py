"""Attention scores by int16 pair products, over keys stored in blocks of KEY_BLOCK positions.

A score is an exact integer: a query's int16 channels (`rules.quantize_queries`: sum
|q| <= 130,000 + D) times a key's int8 channels, below 2^24 in any order. The float32
kernels these replace widened every int8 key to float32 (two instructions for eight) to
share it among at most three queries. Here two channels of eight keys are sign-extended
to int16 at once (one instruction for sixteen), multiplied with a pair of a query's
channels and added in neighbouring pairs into eight int32 sums: x86's vpmaddwd, which
LLVM selects on any AVX2 CPU from the plain IR of `_pair_products` (no intrinsic, so the
same code compiles to the target's own instructions elsewhere). On AVX2 this takes less
than half the float32 kernel's time (docs/PERFORMANCE.md).

For sixteen bytes to hold two channels of eight keys, keys are stored in blocks: block b
holds positions 8b..8b+7, channel pair p at bytes 16p.., position 8b+j's two channels at
16p + 2j and 16p + 2j + 1 (`key_blocks`, `store_key`). A head's keys are then one
contiguous stream, where channel-major rows were 64 streams.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from llmzip.engine.exact.cpu.intrinsics import row_pointer

__all__ = ["KEY_BLOCK", "block_count", "check_layout", "key_blocks", "query_pairs", "store_key",
           "score_blocks"]

KEY_BLOCK = 8  # positions a block: eight int32 sums, one ymm register
_I8X16 = ir.VectorType(ir.IntType(8), 16)
_I16X16 = ir.VectorType(ir.IntType(16), 16)
_I32X16 = ir.VectorType(ir.IntType(32), 16)
_I32X8 = ir.VectorType(ir.IntType(32), 8)


def block_count(positions: int) -> int:
    return -(-positions // KEY_BLOCK)


def key_blocks(keys: np.ndarray) -> np.ndarray:
    """(..., T, D) int8 keys -> (..., ceil(T / 8), D / 2, 16) blocks, zeros past T."""
    *lead, t_len, dim = keys.shape
    padded = np.zeros((*lead, block_count(t_len) * KEY_BLOCK, dim), np.int8)
    padded[..., :t_len, :] = keys
    split = padded.reshape(*lead, -1, KEY_BLOCK, dim // 2, 2)
    return np.ascontiguousarray(np.moveaxis(split, -3, -2)).reshape(
        *lead, -1, dim // 2, 2 * KEY_BLOCK)


def query_pairs(q: np.ndarray) -> np.ndarray:
    """(..., D) int16-valued queries -> (..., D / 2) int32, each holding two channels."""
    return np.ascontiguousarray(q, dtype=np.int16).view(np.int32)


@njit(inline="always")
def store_key(key, pos, blocks):
    """One position's key (D,) int8 into blocks (NB, D / 2, 16)."""
    b, j = pos // KEY_BLOCK, 2 * (pos % KEY_BLOCK)
    for p in range(key.shape[0] // 2):
        blocks[b, p, j] = key[2 * p]
        blocks[b, p, j + 1] = key[2 * p + 1]


def _pair_products(builder, a, b):
    """<16 x i16> a, b -> <8 x i32>: a[2i] b[2i] + a[2i+1] b[2i+1] (vpmaddwd's pattern)."""
    product = builder.mul(builder.sext(a, _I32X16), builder.sext(b, _I32X16))
    even, odd = (builder.shuffle_vector(product, product,
                                        ir.Constant(_I32X8, list(range(first, 16, 2))))
                 for first in (0, 1))
    return builder.add(even, odd)


@intrinsic
def score_blocks(typingctx, pairs, blocks, first, last, out, groups_like):
    """out[g, 8 (b - first) + j] = query g's score against position 8b + j, for the blocks
    b in first..last - 1: int32 sums of pairs (G, D / 2) int32 against blocks (NB, D / 2,
    16) int8. groups_like: a tuple of G zeros, its type carrying G to the code generator.
    Each block's sixteen bytes of a channel pair are sign-extended once for the G queries;
    the G sums stay in registers for the block. The layout must have passed
    `check_layout`; out (G, >= 8 (last - first))."""
    groups = groups_like.count
    sig = types.void(pairs, blocks, first, last, out, groups_like)

    def codegen(context, builder, signature, args):
        i64, i32 = ir.IntType(64), ir.IntType(32)
        q, k, o = (context.make_array(signature.args[i])(context, builder, args[i])
                   for i in (0, 1, 4))
        q_at, k_at, o_at = (builder.ptrtoint(a.data, i64) for a in (q, k, o))
        q_stride, k_stride, o_stride = (builder.extract_value(a.strides, 0) for a in (q, k, o))
        n_pairs = builder.extract_value(k.shape, 1)
        q_rows = [row_pointer(builder, q_at, q_stride, g, i32) for g in range(groups)]
        o_rows = [row_pointer(builder, o_at, o_stride, g, _I32X8) for g in range(groups)]
        sums = [cgutils.alloca_once(builder, _I32X8) for _ in range(groups)]
        with cgutils.for_range(builder, builder.sub(args[3], args[2])) as block:
            b = builder.add(block.index, args[2])
            keys = builder.inttoptr(builder.add(k_at, builder.mul(k_stride, b)),
                                    _I8X16.as_pointer())
            for s in sums:
                builder.store(ir.Constant(_I32X8, None), s)
            with cgutils.for_range(builder, n_pairs) as pair:
                key = builder.sext(builder.load(builder.gep(keys, [pair.index]), align=1),
                                   _I16X16)
                for g, s in enumerate(sums):
                    two = builder.load(builder.gep(q_rows[g], [pair.index]))
                    spread = builder.insert_element(ir.Constant(_I32X8, ir.Undefined), two,
                                                    ir.Constant(i32, 0))
                    spread = builder.shuffle_vector(spread, spread, ir.Constant(_I32X8, None))
                    product = _pair_products(builder, key, builder.bitcast(spread, _I16X16))
                    builder.store(builder.add(builder.load(s), product), s)
            for row, s in zip(o_rows, sums):  # a block's eight sums: one <8 x i32> along out
                builder.store(builder.load(s), builder.gep(row, [block.index]), align=4)

    return sig, codegen


@njit(inline="always")
def check_layout(pairs, blocks, positions, groups_like):
    """Before a kernel's parallel loop (an assert inside one keeps it serial): pairs
    (..., G, D / 2) and blocks (..., NB, D / 2, 16) as `score_blocks` reads them, for
    `positions` keys."""
    assert pairs.shape[-2] == len(groups_like) and pairs.shape[-1] == blocks.shape[-2]
    assert pairs.strides[-1] == 4 and blocks.strides[-1] == 1
    assert blocks.strides[-2] == 2 * KEY_BLOCK == blocks.shape[-1]
    assert positions <= KEY_BLOCK * blocks.shape[-3]
