"""The torch backend of exact-v3: the whole network on a torch device, the CPU's integers.

Embedding, norms, products, RoPE, attention with its integer softmax fold, the MLP, the
final norm, the logits and the frequencies all run on the device, by the rules of
`device.rules` (each the numba rule's operations, bit for bit). The encoder runs a group's
segments as one batch, its attention in blocks of QUERY_BLOCK queries; the decoder keeps its
KV cache on the device, so a step takes token ids in and leaves its tables there
(`tables.DeviceTables`), for the coder to read its rows of them.

Products (`products`) run on int8 tensor cores where `torch._int_mm` proves exact on the
device, else as float32 GEMMs of integers; either way every partial sum stays below 2^24
(the bounds of `rules`), exact in any summation order, split-K included. TF32 and
reduced-precision modes are switched off, and checked, when the backend opens.

CI runs this backend with torch on the CPU (`--device torch:cpu`), which is also the CPU
twin of every kernel here; `tests/test_backends.py` holds it to the numba backend.
"""

from __future__ import annotations

import numpy as np
import torch

from llmzip.engine.exact import rules as ar
from llmzip.engine.exact.device import rules as tr
from llmzip.engine.exact.device.products import choose
from llmzip.engine.exact.device.tables import DeviceTables
from llmzip.engine.exact.network import LOGIT_ELEMENTS, segment_key, within

__all__ = ["TorchBackend"]

QUERY_BLOCK = 256  # encoder: queries per attention block (bounds the score tensors' memory)
PREFETCH_BATCH = 1 << 14  # prefetch: padded positions a forward (bounds its activations)
PREFETCH_KEPT = 1 << 16  # prefetch: positions whose outputs are kept (151 MB at d = 576)
F32, F64 = torch.float32, torch.float64


def _exact_float32(device: torch.device) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    if torch.get_float32_matmul_precision() != "highest":
        raise RuntimeError("float32 matmul precision is not 'highest': products would not be exact")


def _put(a, dtype, device) -> torch.Tensor:
    """A host array (often a read-only memory map of the cache) copied onto the device."""
    return torch.as_tensor(np.array(a, dtype=dtype), device=device)


class _Linear:
    """A linear layer on the device: its int8 weights as the products' (K, N) operand
    (`products`), its scales, and the gain of the norm before it where it is kept apart
    (Gemma)."""

    def __init__(self, lin, device, products):
        self.w = products.weights(lin.w8).to(device)
        self.scale = _put(lin.scale, np.float64, device)
        self.gain = _put(lin.gain, np.float64, device) if lin.gain.size else None


class _Layer:
    def __init__(self, layer, device, products):
        linear = lambda lin: _Linear(lin, device, products)  # noqa: E731
        self.qkv, self.o = linear(layer.qkv), linear(layer.o)
        self.gate_up, self.down = linear(layer.gate_up), linear(layer.down)
        self.theta, self.window = layer.theta, layer.window or 0
        self.norms = {name: _put(gain, np.float64, device) for name, gain in layer.norms.items()}


class DeviceNetwork:
    """An `ExactNetwork`'s weights on a device, and its forward there."""

    def __init__(self, net, device: torch.device, products):
        self.net, self.device, self.products = net, device, products
        self.embed = _put(net.embed, np.float32, device)
        self.layers = [_Layer(layer, device, products) for layer in net.layers]
        self.lm_head = _Linear(net.lm_head, device, products)
        self.tables = tr.Tables(device)
        self._rope: dict = {}

    # --- the rules' pieces, as the host network composes them -------------------------------

    def rope(self, theta: float, n_pos: int):
        kept = self._rope.get(theta)
        if kept is None or kept[0].shape[0] < n_pos:
            cos, sin = self.net.rope(theta, n_pos)
            kept = self._rope[theta] = (torch.as_tensor(cos, device=self.device),
                                        torch.as_tensor(sin, device=self.device))
        return kept

    def linear(self, lin: _Linear, x: torch.Tensor, normed: bool = False) -> torch.Tensor:
        """`ExactNetwork.linear`: lin applied to x (R, K) or RMSNorm(x), (R, N) float64."""
        if normed:
            xq, factor = tr.norm_quantize(x, lin.gain, self.net.eps)
        else:
            xq, factor = tr.quantize(x, ar.L1_CAP)
        return tr.scale_products(self.products(xq, lin.w), factor, lin.scale)

    def heads(self, layer: _Layer, qkv: torch.Tensor, positions: torch.Tensor):
        """`ExactNetwork.heads`: queries (R, Hq, D), keys and values (R, H, D), QK-normed
        where the model has gains, queries and keys rotated at positions (R,)."""
        net, rows = self.net, qkv.shape[0]
        nq, nkv, d = net.n_heads, net.n_kv, net.head_dim
        q = qkv[:, :nq * d].reshape(rows, nq, d)
        k = qkv[:, nq * d:(nq + nkv) * d].reshape(rows, nkv, d)
        v = qkv[:, (nq + nkv) * d:].reshape(rows, nkv, d)
        if "q" in layer.norms:
            q = tr.head_norm(q, layer.norms["q"], net.eps)
            k = tr.head_norm(k, layer.norms["k"], net.eps)
        cos, sin = self.rope(layer.theta, int(positions.max()) + 1)
        cos_p, sin_p = cos[positions][:, None, :], sin[positions][:, None, :]
        return tr.rotate(q, cos_p, sin_p), tr.rotate(k, cos_p, sin_p), v

    def quantize_heads(self, q, k, v):
        """Queries as integer-valued float32 (…, Hq, D) with scales; int8 keys and values
        with scales, the keys' times the logit factor."""
        qq, qs = tr.quantize(q, ar.L1_CAP)
        kq, ks = tr.quantize_kv(k)
        vq, vs = tr.quantize_kv(v)
        return qq.to(F32), qs, kq, ks * self.net.q_factor, vq, vs

    def after_attention(self, layer: _Layer, h: torch.Tensor, attn: torch.Tensor):
        """The rest of a layer once its attention is known: output projection, post-norm,
        MLP, post-norm (`ExactNetwork.layer`)."""
        net = self.net
        h = tr.add_post_norm(h, self.linear(layer.o, attn), layer.norms.get("post_attn"),
                             net.eps)
        act = tr.activation(self.linear(layer.gate_up, h, normed=True), net.arch["gelu"],
                            self.tables)
        return tr.add_post_norm(h, self.linear(layer.down, act), layer.norms.get("post_ffn"),
                                net.eps)

    def embed_rows(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed[ids].to(F64)
        return h * self.net.embed_scale if self.net.embed_scale is not None else h

    def frequencies(self, h: torch.Tensor) -> torch.Tensor:
        return tr.frequencies(self.linear(self.lm_head, h, normed=True), self.tables)

    # --- attention ----------------------------------------------------------------------------

    def attend_segment(self, layer: _Layer, q, k, v) -> torch.Tensor:
        """Causal (windowed) attention of a batch of segments over themselves: q (B, T, Hq,
        D), k, v (B, T, H, D) float64 -> (B, T, Hq * D), in blocks of QUERY_BLOCK queries."""
        net = self.net
        b, t_len, g, d = q.shape[0], q.shape[1], net.groups, net.head_dim
        qq, qs, kq, k_factor, vq, vs = self.quantize_heads(q, k, v)
        qq = qq.reshape(b, t_len, net.n_kv, g, d).permute(0, 2, 1, 3, 4)  # (B, H, T, G, D)
        qs = qs.reshape(b, t_len, net.n_kv, g).permute(0, 2, 1, 3)  # (B, H, T, G)
        keys = kq.to(F32).permute(0, 2, 3, 1)  # (B, H, D, T)
        values = vq.to(F32).permute(0, 2, 1, 3)  # (B, H, T, D)
        k_factor, vs = k_factor.permute(0, 2, 1), vs.permute(0, 2, 1)  # (B, H, T)
        out = torch.empty((b, net.n_kv, t_len, g, d), dtype=F64, device=self.device)
        key_pos = torch.arange(t_len, device=self.device)
        for start in range(0, t_len, QUERY_BLOCK):
            stop = min(start + QUERY_BLOCK, t_len)
            k0 = max(0, start - layer.window + 1) if layer.window else 0
            span = key_pos[k0:stop]
            query_pos = key_pos[start:stop, None]
            outside = (span[None, :] > query_pos)  # (Q, n)
            if layer.window:
                outside = outside | (span[None, :] <= query_pos - layer.window)
            scores = qq[:, :, start:stop].reshape(b, net.n_kv, -1, d) @ keys[..., k0:stop]
            scores = scores.reshape(b, net.n_kv, stop - start, g, -1)  # (B, H, Q, G, n)
            logits = scores.to(F64) * (qs[:, :, start:stop, :, None]
                                       * k_factor[:, :, None, None, k0:stop])
            logits = logits.masked_fill(outside[None, None, :, None, :], float("-inf"))
            v_span = vs[:, :, None, k0:stop].masked_fill(outside[None, None], 0.0)
            folded, scale = tr.fold_weights(logits, v_span[:, :, :, None, :],
                                            self.tables.attention_exp)
            acc = (folded.to(F32) @ values[:, :, None, k0:stop]).to(F64)  # exact integers
            out[:, :, start:stop] = acc * scale[..., None]
        return out.permute(0, 2, 1, 3, 4).reshape(b, t_len, net.n_heads * d)

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        """The last layer's output (B, T, d) for segments' inputs (B, T), all of one length
        or padded at the end (padding never reaches a real position)."""
        b, t_len = ids.shape
        positions = torch.arange(t_len, device=self.device).repeat(b)
        h = self.embed_rows(ids.reshape(-1))
        for layer in self.layers:
            qkv = self.linear(layer.qkv, h, normed=True)
            q, k, v = self.heads(layer, qkv, positions)
            attn = self.attend_segment(layer, q.reshape(b, t_len, *q.shape[1:]),
                                       k.reshape(b, t_len, *k.shape[1:]),
                                       v.reshape(b, t_len, *v.shape[1:]))
            h = self.after_attention(layer, h, attn.reshape(b * t_len, -1))
        return h.reshape(b, t_len, -1)


class KVCache:
    """The decoder's int8 keys and values with their scales on the device, for every layer,
    row and KV head; a step stores its rows' and attends over the window ending there."""

    def __init__(self, dnet: DeviceNetwork, n_rows: int, max_len: int):
        net, self.dnet = dnet.net, dnet
        shape = (len(net.layers), n_rows, net.n_kv, max_len + 1)
        self.keys = torch.zeros((*shape, net.head_dim), dtype=torch.int8, device=dnet.device)
        self.values = torch.zeros_like(self.keys)
        self.k_factor = torch.zeros(shape, dtype=F64, device=dnet.device)
        self.v_scale = torch.zeros(shape, dtype=F64, device=dnet.device)

    @staticmethod
    def size_bytes(net, n_rows: int, max_len: int) -> int:
        return len(net.layers) * n_rows * net.n_kv * (max_len + 1) * (2 * net.head_dim + 16)

    def attend(self, index: int, layer, qkv, pos: int):
        """`cpu.backend.KVCache.attend` with host arrays in and out (what the conformance
        test gives every backend)."""
        device_layer = self.dnet.layers[index]
        out = self.attend_step(index, device_layer, torch.as_tensor(qkv, device=self.dnet.device),
                               pos)
        return out.cpu().numpy()

    def attend_step(self, index: int, layer: _Layer, qkv: torch.Tensor, pos: int):
        """Store the rows' keys and values at pos (normed, rotated, quantized), then attend
        their queries over positions lo..pos: (R, Hq * D) float64."""
        dnet, net, rows = self.dnet, self.dnet.net, qkv.shape[0]
        positions = torch.full((rows,), pos, dtype=torch.long, device=dnet.device)
        q, k, v = dnet.heads(layer, qkv, positions)
        qq, qs, kq, k_factor, vq, vs = dnet.quantize_heads(q, k, v)
        self.keys[index, :rows, :, pos], self.k_factor[index, :rows, :, pos] = kq, k_factor
        self.values[index, :rows, :, pos], self.v_scale[index, :rows, :, pos] = vq, vs
        lo = max(0, pos - layer.window + 1) if layer.window else 0
        g, d = net.groups, net.head_dim
        keys = self.keys[index, :rows, :, lo:pos + 1].to(F32)  # (R, H, n, D)
        scores = qq.reshape(rows, net.n_kv, g, d) @ keys.transpose(-1, -2)  # (R, H, G, n)
        logits = scores.to(F64) * (qs.reshape(rows, net.n_kv, g, 1)
                                   * self.k_factor[index, :rows, :, None, lo:pos + 1])
        folded, scale = tr.fold_weights(logits, self.v_scale[index, :rows, :, None, lo:pos + 1],
                                        dnet.tables.attention_exp)
        values = self.values[index, :rows, :, lo:pos + 1].to(F32)  # (R, H, n, D)
        acc = (folded.to(F32) @ values).to(F64)  # exact integers
        return (acc * scale[..., None]).reshape(rows, net.n_heads * d)


class Stepper:
    """KV-cached decoding on the device: token ids in, the tables left on the device
    (`DeviceTables`: the host reads the coder's rows of them)."""

    def __init__(self, dnet: DeviceNetwork, n_rows: int, max_len: int):
        if max_len > ar.MAX_KEYS:
            raise ValueError(f"segment of {max_len} tokens exceeds the exact bound of {ar.MAX_KEYS}")
        self.dnet, self.pos = dnet, 0
        self.cache = KVCache(dnet, n_rows, max_len)

    def step(self, input_ids: np.ndarray) -> np.ndarray:
        dnet = self.dnet
        ids = torch.as_tensor(np.asarray(input_ids, np.int64), device=dnet.device)
        h = dnet.embed_rows(ids)
        for index, layer in enumerate(dnet.layers):
            qkv = dnet.linear(layer.qkv, h, normed=True)
            h = dnet.after_attention(layer, h, self.cache.attend_step(index, layer, qkv, self.pos))
        self.pos += 1
        return DeviceTables(dnet.frequencies(h))


class _Products:
    """`Products` on the device, host arrays in and out (the conformance test's view)."""

    def __init__(self, backend):
        self.backend = backend

    def __call__(self, xq: np.ndarray, lin) -> np.ndarray:
        w = self.backend.weights(lin)
        x = torch.as_tensor(np.ascontiguousarray(xq, np.float32), device=w.device)
        return self.backend.products(x, w).cpu().numpy()

    def scaled(self, xq, factor, lin, out) -> bool:
        return False


class TorchBackend:
    """exact-v3 on a torch device: 'cuda:N', or 'cpu' (what CI runs)."""

    name = "torch"

    def __init__(self, device: str):
        self.device = device
        self._device = torch.device(device)
        _exact_float32(self._device)
        self.products = choose(self._device)
        self._networks: dict = {}  # id(net) -> (net, DeviceNetwork)
        self._weights: dict = {}  # id(w8) -> (w8, its products operand on the device)
        self._prefetched: dict = {}  # a segment's inputs -> its last-layer output (`prefetch`)

    @property
    def label(self) -> str:
        name = torch.cuda.get_device_name(self._device) if self._device.type == "cuda" else "CPU"
        return f"torch ({self.device}: {name}; {self.products.name} products)"

    def network(self, net) -> DeviceNetwork:
        kept = self._networks.get(id(net))
        if kept is None:
            kept = self._networks[id(net)] = (net, DeviceNetwork(net, self._device,
                                                                  self.products))
        return kept[1]

    # --- the engine's entry points ----------------------------------------------------------

    def group_tables(self, net, segments: list[np.ndarray]):
        """`ExactNetwork.group_tables` on the device: one batched forward for the group,
        then the head in chunks of positions, each chunk's tables left on the device
        (each segment's rows a view of them, `DeviceTables`)."""
        dnet = self.network(net)
        lengths = [len(ids) for ids in segments]
        kept = (self._prefetched.pop(segment_key(segments[0]), None) if len(segments) == 1
                else None)
        hidden = kept[None] if kept is not None else self._hidden(dnet, segments)
        chunk = max(1, LOGIT_ELEMENTS // (net.vocab_size * len(segments)))
        for start in range(0, max(lengths), chunk):
            running = [i for i, n in enumerate(lengths) if n > start]
            parts = [hidden[i, start:min(start + chunk, lengths[i])] for i in running]
            freqs = dnet.frequencies(torch.cat(parts))
            bounds = np.cumsum([0] + [len(p) for p in parts])
            yield start, {i: DeviceTables(freqs, np.arange(a, b))
                          for i, a, b in zip(running, bounds[:-1], bounds[1:])}

    def prefetch(self, net, segments: list[np.ndarray]) -> None:
        """Many one-segment groups' forward at once (many short messages, or small files:
        each alone is a few dozen positions, far too few to fill a device), in padded
        batches of up to PREFETCH_BATCH positions, shortest first, a batch's longest at
        most twice its shortest (padding at most doubles the work); the outputs are kept,
        up to PREFETCH_KEPT positions, for `group_tables` to take. The next prefetch lets
        go of what was not taken."""
        dnet, self._prefetched = self.network(net), {}
        batch: list[np.ndarray] = []
        for ids in within(sorted(segments, key=len), PREFETCH_KEPT) + [None]:
            if batch and (ids is None or (len(batch) + 1) * len(ids) > PREFETCH_BATCH
                          or len(ids) > 2 * len(batch[0])):
                for seg, h in zip(batch, self._hidden(dnet, batch)):
                    self._prefetched[segment_key(seg)] = h[:len(seg)]
                batch = []
            if ids is not None:
                batch.append(ids)

    def _hidden(self, dnet: DeviceNetwork, segments: list[np.ndarray]) -> torch.Tensor:
        """The last layer's output (B, T, d) of segments padded at the end to one length."""
        longest = max(len(ids) for ids in segments)
        if longest > ar.MAX_KEYS:
            raise ValueError(f"segment of {longest} tokens exceeds the exact bound of "
                             f"{ar.MAX_KEYS}")
        ids = np.zeros((len(segments), longest), np.int64)
        for i, seg in enumerate(segments):
            ids[i, :len(seg)] = seg
        return dnet.hidden(torch.as_tensor(ids, device=self._device))

    def stepper(self, net, n_rows: int, max_len: int) -> Stepper:
        return Stepper(self.network(net), n_rows, max_len)

    def kv_cache_bytes(self, net, n_rows: int, max_len: int) -> int:
        return KVCache.size_bytes(net, n_rows, max_len)

    def cache_budget(self) -> int | None:
        """On a GPU, half of its free memory: the decoder's waves are sized to the device
        (the other half for the weights' copies, activations and attention blocks)."""
        if self._device.type != "cuda":
            return None
        free, _ = torch.cuda.mem_get_info(self._device)
        return free // 2

    # --- the operations, host arrays in and out (tests/test_backends.py) ----------------------

    def weights(self, lin) -> torch.Tensor:
        kept = self._weights.get(id(lin.w8))
        if kept is None:
            w = self.products.weights(lin.w8).to(self._device)
            kept = self._weights[id(lin.w8)] = (lin.w8, w)
        return kept[1]

    def segment_products(self, n_rows: int) -> _Products:
        return _Products(self)

    def head_products(self, n_rows: int, lm_head) -> _Products:
        return _Products(self)

    def step_products(self, net, n_rows: int, max_len: int) -> _Products:
        return _Products(self)

    def attend_segment(self, net, layer, q, k, v) -> np.ndarray:
        dnet = self.network(net)
        device_layer = dnet.layers[next(i for i, x in enumerate(net.layers) if x is layer)]
        put = lambda a: torch.as_tensor(a, device=self._device)[None]  # noqa: E731
        return dnet.attend_segment(device_layer, put(q), put(k), put(v))[0].cpu().numpy()

    def kv_cache(self, net, n_rows: int, max_len: int) -> KVCache:
        return KVCache(self.network(net), n_rows, max_len)
