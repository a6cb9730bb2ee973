"""The numba backend of exact-v3: the CPU's kernels behind the backend protocol.

Products: float32 BLAS for the encoder's many rows, and for a decoder step the first kernel
of `STEP_KERNELS` that serves its rows (AMX tiles, AVX-512 VNNI, AVX2, numba dots), with
torch's int8 matmul for wide steps where it is exact. Attention: numba loops over int8 keys
and values, the segment's own (`attend_segment`) or a KV cache's (`KVCache`). Every choice
gives the same integers; it only decides how fast they come. Why each kernel serves the
rows it does: docs/PERFORMANCE.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from llmzip.engine.exact import rules as ar
from llmzip.engine.exact.cpu import amx, avx2, vnni
from llmzip.engine.exact.cpu.attention import (
    attend_cached,
    attend_segment,
    store_step_heads,
)
from llmzip.engine.exact.cpu.products import (
    INT8_ROWS,
    TILE_ROWS,
    int8_matmul_serves,
    int8_weights,
    products_blas,
    products_dots_scaled,
    products_int8,
    products_tiles,
    transposed_float32,
)
from llmzip.engine.exact.cpu.scores import (
    KEY_BLOCK,
    block_count,
    key_blocks,
    query_pairs,
)
from llmzip.engine.exact.weights import NO_GAIN, Layer, Linear

__all__ = ["NumbaBackend", "STEP_KERNELS", "KVCache", "row_bytes"]

BLAS_ROWS = 256  # from this many rows, float32 BLAS beats int8 tiles despite converting weights


class BlasProducts:
    """Integer products of many rows: float32 sgemm."""

    def __init__(self, weights32: np.ndarray | None = None):
        self.weights32 = weights32  # the one matrix this is used with, as (K, N) float32

    def __call__(self, xq, lin: Linear):
        weights = self.weights32 if self.weights32 is not None else lin.w8
        return products_blas(xq, weights)

    def scaled(self, xq, factor, lin: Linear, out) -> bool:
        return False


class TileProducts(BlasProducts):
    """Integer products of a few rows: float32 tiles over the int8 weights."""

    def __call__(self, xq, lin: Linear):
        return products_tiles(xq, lin.w8)


@dataclass(frozen=True)
class StepKernel:
    """A kernel that computes a step's products and scales them in one pass. Its module
    says, when asked, whether the CPU has it (`available`), which weights it takes (`fits`),
    the most rows it serves (`MAX_ROWS`) and how long a segment must be to pay for its
    set-up (`MIN_STEPS`, if any)."""

    name: str
    module: object
    run: Callable  # (products, xq, factor, lin, out)
    any_rows: bool = False  # serves any number of rows (in passes of MAX_ROWS)

    @property
    def max_rows(self) -> int:
        return 1 << 30 if self.any_rows else self.module.MAX_ROWS

    @property
    def min_steps(self) -> int:
        return getattr(self.module, "MIN_STEPS", 0)

    def available(self) -> bool:
        return self.module.available()

    def fits(self, w8: np.ndarray) -> bool:
        return self.module.fits(w8)


class _Dots:
    """numba's int32 dots, one per output: any CPU, any weights, a few rows."""

    MAX_ROWS = TILE_ROWS - 1

    @staticmethod
    def available() -> bool:
        return True

    @staticmethod
    def fits(w8: np.ndarray) -> bool:
        return True


def _amx(p, xq, factor, lin, out):
    amx.products_scaled(xq, p.form("amx", lin.w8, amx.pack),
                        p.form("sums", lin.w8, vnni.weight_sums), factor, lin.scale, out)


def _vnni(p, xq, factor, lin, out):
    vnni.products_scaled(xq, lin.w8, p.form("sums", lin.w8, vnni.weight_sums), factor,
                         lin.scale, out)


def _avx2(p, xq, factor, lin, out):
    avx2.products_scaled(xq, lin.w8, factor, lin.scale, out)


def _dots(p, xq, factor, lin, out):
    products_dots_scaled(xq, lin.w8, factor, lin.scale, out)


STEP_KERNELS = (  # best first: a step takes the first that is available, fits and serves its rows
    StepKernel("amx", amx, _amx),
    StepKernel("vnni", vnni, _vnni),
    StepKernel("avx2", avx2, _avx2, any_rows=True),
    StepKernel("dots", _Dots, _dots),
)
FUSED_ALL = ("amx", "vnni")  # kernels that, serving a step's first rows, serve all of its steps


class StepProducts(TileProducts):
    """The decoder's integer products, by a step's rows; each call chooses, as rows end
    with their segments: the first of `STEP_KERNELS` that serves, else torch's int8
    matmul on two limbs from INT8_ROWS rows where it is exact and no AMX or VNNI kernel
    serves the whole group, else float32 tiles. The forms of the weights a kernel needs
    (AMX's packed tiles, weight sums, torch's views) are kept by the backend, made once."""

    def __init__(self, n_rows: int, max_len: int, forms: dict):
        self.kernels = [k for k in STEP_KERNELS if max_len >= k.min_steps and k.available()]
        fused_all = any(k.name in FUSED_ALL and n_rows <= k.max_rows for k in self.kernels)
        self.int8 = n_rows >= INT8_ROWS and not fused_all and int8_matmul_serves()
        if fused_all:  # AVX2 would only stand in for them
            self.kernels = [k for k in self.kernels if k.name != "avx2"]
        self._forms = forms  # (kind, id(w8)) -> (w8, that form of it): w8 keeps its id

    def form(self, kind: str, w8: np.ndarray, make):
        kept = self._forms.get((kind, id(w8)))
        if kept is None:
            kept = self._forms[kind, id(w8)] = (w8, make(w8))
        return kept[1]

    def kernel(self, rows: int, w8: np.ndarray) -> StepKernel | None:
        """The fused kernel a step of `rows` rows takes for w8, if any."""
        for k in self.kernels:
            if rows <= k.max_rows and k.fits(w8):
                if k.name == "avx2" and self.int8 and rows >= INT8_ROWS:
                    return None  # torch's int8 matmul serves these wide steps
                return k
        return None

    def scaled(self, xq, factor, lin: Linear, out) -> bool:
        kernel = self.kernel(len(xq), lin.w8)
        if kernel is None:
            return False
        kernel.run(self, xq, factor, lin, out)
        return True

    def __call__(self, xq, lin: Linear):
        if not self.int8 or len(xq) < INT8_ROWS:
            return super().__call__(xq, lin)
        return products_int8(xq, self.form("torch", lin.w8, int8_weights))


def row_bytes(positions: int) -> int:
    """Bytes between two channels of a cached value: the positions rounded up to an odd
    number of 64-byte lines, so that the channels attention reads together do not fall in
    the same cache sets (docs/PERFORMANCE.md)."""
    return 64 * (-(-positions // 64) | 1)


class KVCache:
    """The decoder's int8 keys (in blocks of KEY_BLOCK positions, `scores`) and values
    (channel-major) with a float64 scale each, for every layer, row and KV head."""

    def __init__(self, net, n_rows: int, max_len: int):
        self.net = net
        heads = (len(net.layers), n_rows, net.n_kv)
        self.key_blocks = np.zeros((*heads, block_count(max_len + 1), net.head_dim // 2,
                                    2 * KEY_BLOCK), np.int8)
        self.values_t = np.zeros((*heads, net.head_dim, row_bytes(max_len + 1)),
                                 np.int8)[..., :max_len + 1]  # (.., D, T)
        scales = (len(net.layers), n_rows, net.n_kv, max_len + 1)
        self.k_factor, self.v_scale = np.zeros(scales), np.zeros(scales)

    @staticmethod
    def size_bytes(net, n_rows: int, max_len: int) -> int:
        keys, values = block_count(max_len + 1) * KEY_BLOCK, row_bytes(max_len + 1)
        return len(net.layers) * n_rows * net.n_kv * (
            (keys + values) * net.head_dim + 2 * (max_len + 1) * 8)

    def attend(self, index: int, layer: Layer, qkv: np.ndarray, pos: int) -> np.ndarray:
        """Store the rows' keys and values at pos (normed, rotated, quantized), then attend
        their queries over positions up to pos: (R, heads * D)."""
        net, rows = self.net, qkv.shape[0]
        queries = np.empty((rows, net.n_heads, net.head_dim), np.int16)
        q_scale = np.empty((rows, net.n_heads))
        cos, sin = net.rope(layer.theta, pos + 1)
        store_step_heads(qkv, pos, cos, sin, layer.norms.get("q", NO_GAIN),
                         layer.norms.get("k", NO_GAIN), net.eps, net.q_factor, queries, q_scale,
                         self.key_blocks[index], self.k_factor[index], self.values_t[index],
                         self.v_scale[index])
        lo = max(0, pos - layer.window + 1) if layer.window else 0
        shape = (rows, net.n_kv, net.groups, net.head_dim)
        out = np.empty(shape)
        attend_cached(query_pairs(queries).reshape(*shape[:3], -1), q_scale.reshape(shape[:3]),
                      self.key_blocks[index, :rows], self.k_factor[index, :rows],
                      self.values_t[index, :rows], self.v_scale[index, :rows], lo, pos,
                      ar.ATTENTION_EXP, out, (0,) * net.groups)
        return out.reshape(rows, net.n_heads * net.head_dim)


class NumbaBackend:
    """exact-v3 on the CPU: numpy's BLAS and numba's kernels."""

    name = "numba"
    device = "cpu"

    def __init__(self):
        self._forms: dict = {}  # the decoder's forms of the weights (`StepProducts`)

    @property
    def label(self) -> str:
        kernels = ", ".join(k.name for k in STEP_KERNELS if k.available())
        return f"numba (cpu; decoder kernels {kernels})"

    def group_tables(self, net, segments: list[np.ndarray]):
        return net.group_tables(segments, self)

    def prefetch(self, net, segments: list[np.ndarray]) -> None:
        net.prefetch(segments, self)

    def stepper(self, net, n_rows: int, max_len: int):
        from llmzip.engine.exact.stepper import Stepper
        return Stepper(net, self, n_rows, max_len)

    def segment_products(self, n_rows: int):
        return BlasProducts() if n_rows >= BLAS_ROWS else TileProducts()

    def head_products(self, n_rows: int, lm_head: Linear):
        return BlasProducts(transposed_float32(lm_head.w8)) if n_rows >= BLAS_ROWS else TileProducts()

    def step_products(self, net, n_rows: int, max_len: int):
        return StepProducts(n_rows, max_len, self._forms)

    def kv_cache(self, net, n_rows: int, max_len: int) -> KVCache:
        return KVCache(net, n_rows, max_len)

    def kv_cache_bytes(self, net, n_rows: int, max_len: int) -> int:
        return KVCache.size_bytes(net, n_rows, max_len)

    def attend_segment(self, net, layer: Layer, q, k, v) -> np.ndarray:
        """Causal (windowed) attention of a segment over itself, position by position with
        the decoder's rules (`attention.attend_segment`)."""
        qq, qs, kq, ks, vq, vs = net.quantize_qkv(q, k, v)
        t_len, nkv, g, d = q.shape[0], net.n_kv, net.groups, net.head_dim
        values_t = np.empty((nkv, d, row_bytes(t_len)), np.int8)[..., :t_len]  # as cached
        values_t[:] = vq.transpose(1, 2, 0)
        out = np.empty((t_len, nkv, g, d))
        attend_segment(query_pairs(qq).reshape(t_len, nkv, g, d // 2),
                       qs.reshape(t_len, nkv, g), key_blocks(kq.transpose(1, 0, 2)),
                       np.ascontiguousarray((ks * net.q_factor).T), values_t,
                       np.ascontiguousarray(vs.T), layer.window or 0, ar.ATTENTION_EXP, out,
                       (0,) * g)
        return out.reshape(t_len, net.n_heads * d)
