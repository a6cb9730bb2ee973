"""The torch backend of exact-v3: its products on a torch device (a GPU), the same integers.

Every product exact arithmetic asks for is a sum of integers below 2^24 (`rules`), so a
float32 GEMM computes it exactly on any device that really computes in float32: TF32 and
other reduced-precision modes are switched off here. The linear layers' products and the
encoder's attention products (scores, weights x values, in blocks of QUERY_BLOCK queries)
run on the device; every other rule stays in `rules` on the host, and the decoder's
attention over its cache is numba's (`cpu.backend.KVCache`), so no table can differ from a
CPU-only run. Each result is copied back to the host.

Not yet run on a GPU; CI runs it with torch on the CPU (`--device torch:cpu`) and holds it
to the numba backend's integers (`tests/test_backends.py`).
"""

from __future__ import annotations

import numpy as np

from llmzip.engine.exact import rules as ar
from llmzip.engine.exact.cpu.backend import KVCache

__all__ = ["TorchBackend"]

QUERY_BLOCK = 256  # encoder: queries per attention block (skips most of the masked half)


class DeviceProducts:
    """Integer products of any number of rows on a torch device, weights uploaded once."""

    def __init__(self, device: str):
        import torch
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        assert torch.get_float32_matmul_precision() == "highest"
        self.torch, self.device, self._weights = torch, torch.device(device), {}

    def __call__(self, xq: np.ndarray, lin) -> np.ndarray:
        w = self._weights.get(id(lin.w8))
        if w is None:  # (K, N) float32 on the device, kept for the process
            w = self.torch.from_numpy(np.ascontiguousarray(lin.w8.T, np.float32)).to(self.device)
            self._weights[id(lin.w8)] = (lin.w8, w)  # w8 kept: its id stays its own
        else:
            w = w[1]
        return self._on_device(xq, w)

    def scaled(self, xq, factor, lin, out) -> bool:
        return False

    def mm(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """a @ b for integer-valued float32 arrays whose sums stay below 2^24."""
        return self._on_device(a, self.torch.from_numpy(np.ascontiguousarray(b, np.float32))
                               .to(self.device))

    def _on_device(self, a: np.ndarray, b) -> np.ndarray:
        x = self.torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(self.device)
        return (x @ b).cpu().numpy()


class TorchBackend:
    """exact-v3's products on a torch device."""

    name = "torch"

    def __init__(self, device: str):
        self.device = device
        self.products = DeviceProducts(device)

    def segment_products(self, n_rows: int) -> DeviceProducts:
        return self.products

    def head_products(self, n_rows: int, lm_head) -> DeviceProducts:
        return self.products

    def step_products(self, net, n_rows: int, max_len: int) -> DeviceProducts:
        return self.products

    def kv_cache(self, net, n_rows: int, max_len: int) -> KVCache:
        return KVCache(net, n_rows, max_len)

    def kv_cache_bytes(self, net, n_rows: int, max_len: int) -> int:
        return KVCache.size_bytes(net, n_rows, max_len)

    def attend_segment(self, net, layer, q, k, v) -> np.ndarray:
        """Causal (windowed) attention of a segment over itself in blocks of QUERY_BLOCK
        queries: scores and weights x values from the device's products, exact integers,
        folded by `rules.fold_score_block` as the numba kernels fold them."""
        qq, qs, kq, ks, vq, vs = net.quantize_qkv(q, k, v)
        t_len, g, d = q.shape[0], net.groups, net.head_dim
        out = np.empty((t_len, net.n_heads, d))
        q_pos = np.repeat(np.arange(t_len), g)
        for h in range(net.n_kv):
            queries = qq[:, h * g:(h + 1) * g].reshape(t_len * g, d)  # rows (t, g)
            q_scale = qs[:, h * g:(h + 1) * g].reshape(-1)
            keys = np.ascontiguousarray(kq[:, h], dtype=np.float32)
            values = np.ascontiguousarray(vq[:, h], dtype=np.float32)
            k_factor, v_scale = ks[:, h] * net.q_factor, np.ascontiguousarray(vs[:, h])
            for start in range(0, t_len, QUERY_BLOCK):
                stop = min(start + QUERY_BLOCK, t_len)
                k0 = max(0, start - layer.window + 1) if layer.window else 0
                rows = slice(start * g, stop * g)
                scores = self.products.mm(queries[rows], keys[k0:stop].T)  # exact integers
                folded = np.empty_like(scores)
                scale = np.empty(scores.shape[0])
                ar.fold_score_block(scores, q_scale[rows], q_pos[rows], k_factor[k0:stop],
                                    v_scale[k0:stop], k0, layer.window, ar.ATTENTION_EXP,
                                    folded, scale)
                acc = self.products.mm(folded, values[k0:stop]).astype(np.float64)  # exact
                out[start:stop, h * g:(h + 1) * g] = (acc * scale[:, None]).reshape(
                    stop - start, g, d)
        return out.reshape(t_len, net.n_heads * d)
