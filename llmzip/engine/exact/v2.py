"""exact-v2 arithmetic, kept only to decode the archives written with it (llmzip 0.1).

Frozen: these lines compute exactly what the exact-v2 encoder computed, in torch, so its
archives keep decoding bit for bit; nothing here writes archives. exact-v3 (`rules`,
`network`) replaced it because its numbers are not machine-independent after all:
torch.sqrt on x86 CPUs (MKL/SLEEF vector code) is not correctly rounded for about 1% of
inputs and depends on the vector lane an element lands in, so v2 fingerprints and norms
hold only for torch builds that round alike (x86 torch 2.13 here); and its float64 KV cache
made decoding slow and memory-hungry. The docstrings below are v2's own.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from llmzip.container import Arithmetic
from llmzip.engine.exact.rules import frequencies
from llmzip.engine.exact.tables import exp_table as _exp_table_np
from llmzip.engine.exact.tables import grown
from llmzip.engine.exact.tables import rope_table as _rope_table_np
from llmzip.engine.exact.tables import sigmoid_table as _sigmoid_table_np
from llmzip.engine.exact.weights import LayerProducts

__all__ = ["LegacyEngine"]

ARITHMETIC_VERSION = b"exact-v2"  # part of the fingerprint: change it when any number changes
ACT_MAX = float(127 * 256 + 127)  # activations and queries: int16 that split into int8 limbs
WEIGHT_MAX = 127.0  # weights: int8 per output channel
K_MAX = float(2**22 - 1)  # keys, fixed scale per head
Q_MAX = ACT_MAX  # queries, per token and head
V_MAX = float(2**20 - 1)  # values, fixed scale per channel
MAX_FEATURES = 2**13  # largest matmul inner dimension the bounds above allow
MAX_KEYS = 2**14  # longest attention span the bounds above allow
LOGIT_STEPS = 256  # attention logits compared at 1/256 nat
ATT_BITS = 18  # attention weights: integers up to 2^18
SIGMOID_RANGE, SIGMOID_STEPS = 16, 128  # sigmoid table on [-16, 16] every 1/128, interpolated
GELU_TANH_K = 1.5957691216057308  # 2*sqrt(2/pi): gelu_tanh(x) = x * sigmoid(k*(x + c*x^3))
GELU_TANH_C = 0.044715
BOUND_MARGIN = 1 + 2.0**-20  # covers the rounding of the few IEEE steps behind a bound

# --- tables (the same decimal-built values as exact-v3's) ------------------------------------

_SIGMOID, _SIGMOID_DIFF = (torch.from_numpy(t) for t in _sigmoid_table_np(SIGMOID_RANGE,
                                                                         SIGMOID_STEPS))
_ATT_EXP = torch.from_numpy(_exp_table_np(LOGIT_STEPS, ATT_BITS))  # last entry is 0
_ROUNDING_MAGIC = 2.0**52  # x + 2^52 rounds x half-to-even into the low mantissa bits
_ROUNDING_MAGIC_BITS = 0x4330000000000000  # the bit pattern of 2^52


def lookup(table: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """table[round(position)] for float64 positions in [0, len(table) - 1]; overwrites
    `position`."""
    index = position.add_(_ROUNDING_MAGIC).view(torch.int64).sub_(_ROUNDING_MAGIC_BITS)
    return torch.take(table, index)


def _rope_table(theta, head_dim, n_pos):
    return tuple(torch.from_numpy(t) for t in _rope_table_np(theta, head_dim, n_pos))


# --- exact building blocks -------------------------------------------------------------------

def quantize(x: torch.Tensor, limit: float = ACT_MAX) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row integers: x ~ q * scale, |q| <= limit (both float64)."""
    amax = x.abs().amax(dim=-1, keepdim=True)
    scale = torch.where(amax > 0, amax / limit, torch.ones_like(amax))
    return torch.round(x / scale), scale


def quantize_fixed(x: torch.Tensor, scale: torch.Tensor, limit: float) -> torch.Tensor:
    """Integers on a fixed scale; the clamp only absorbs rounding at a proven bound."""
    return torch.round(x / scale).clamp_(-limit, limit)


def inv_rms(q: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """1 / rms(q * scale), divided by scale: RMSNorm(x) = q * inv_rms(q, scale, eps)."""
    mean_sq = (q * q).sum(dim=-1, keepdim=True) / q.shape[-1]  # integer sum < 2^53: exact
    return 1.0 / torch.sqrt(mean_sq + eps / (scale * scale))


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Table sigmoid with linear interpolation (error < 1e-6)."""
    pos = (x.clamp(-SIGMOID_RANGE, SIGMOID_RANGE) + SIGMOID_RANGE) * SIGMOID_STEPS
    index = pos.floor()
    frac = pos - index
    index = index.to(torch.int64)
    return _SIGMOID[index] + frac * _SIGMOID_DIFF[index]


def _int8_limbs(xq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integers |x| <= ACT_MAX (float64) as int8 limbs hi, lo with x = 256 hi + lo."""
    x = xq.to(torch.int32).clamp_(-int(ACT_MAX), int(ACT_MAX))
    lo = torch.bitwise_and(x + 128, 255).sub_(128)  # [-128, 127]
    hi = torch.div(x - lo, 256, rounding_mode="floor")  # exact: x - lo is a multiple of 256
    return hi.to(torch.int8), lo.to(torch.int8)


def _int_mm_is_exact() -> bool:
    """Does this platform's int8 matmul give exact int32 sums, even at the extremes that
    saturate VPMADDUBSW on x86 CPUs without VNNI?"""
    try:
        gen = torch.Generator().manual_seed(0)
        a = torch.randint(-128, 128, (24, 2048), dtype=torch.int8, generator=gen)
        w = torch.randint(-128, 128, (40, 2048), dtype=torch.int8, generator=gen)
        a[:4] = 127
        a[4:8] = -128
        w[:4] = 127
        w[4:8] = -128
        got = torch._int_mm(a, w.t())
    except (RuntimeError, AttributeError):
        return False
    return torch.equal(got.to(torch.float64), a.to(torch.float64) @ w.to(torch.float64).t())


def _int_mm_is_fast() -> bool:
    """Is torch's int8 matmul at least as fast as float64 here? (Either gives the same
    integers.)"""
    import time
    a = torch.ones(64, 1024, dtype=torch.int8)
    w = torch.ones(1024, 1024, dtype=torch.int8)
    timings = []
    for f in (lambda: torch._int_mm(a, w.t()), lambda: a.double() @ w.t().double()):
        f()
        started = time.perf_counter()
        f()
        timings.append(time.perf_counter() - started)
    return timings[0] <= timings[1]


_INT_MM_EXACT: bool | None = None  # checked on first use


def int_matmul(xq: torch.Tensor, w8: torch.Tensor) -> torch.Tensor:
    """(..., K) integer activations (float64, |x| <= ACT_MAX) times (N, K) int8 weights:
    the exact (..., N) integer products, as float64."""
    global _INT_MM_EXACT
    if _INT_MM_EXACT is None:  # AVX2 without VNNI: exact but a slow reference loop
        _INT_MM_EXACT = _int_mm_is_exact() and _int_mm_is_fast()
    lead, k = xq.shape[:-1], xq.shape[-1]
    hi, lo = _int8_limbs(xq.reshape(-1, k))
    m = hi.shape[0]
    limbs = torch.cat([hi, lo])  # (2M, K): one product reads the weights once
    if _INT_MM_EXACT:
        both = torch._int_mm(limbs, w8.t()).to(torch.float64)
    else:  # the same integers; float64 sums stay below 2^53, hence exact too
        both = limbs.to(torch.float64) @ w8.t().to(torch.float64)
    y = both[:m].mul_(256).add_(both[m:])
    return y.view(*lead, w8.shape[0])


class Linear:
    """int8 weights per output channel, applied exactly to int16 activations."""

    def __init__(self, weight: torch.Tensor, gain: torch.Tensor | None = None,
                 fold_gain: bool = True):
        """gain: the preceding norm's per-channel gain; folded into the weights, or kept to
        scale the activations in `normed` (see the module's docstring)."""
        w = weight.detach().to(torch.float64)  # (out, in)
        if w.shape[1] > MAX_FEATURES:
            raise NotImplementedError(f"{w.shape[1]} input features exceed exact bounds")
        self.gain = None
        if gain is not None and fold_gain:
            w = w * gain.to(torch.float64)
        elif gain is not None:
            self.gain = gain.to(torch.float64).contiguous()
        q, scale = quantize(w, WEIGHT_MAX)
        self.w8 = q.to(torch.int8).contiguous()  # (out, in)
        self.scale = scale.view(-1)  # (out,)

    def __call__(self, xq: torch.Tensor, row_factor: torch.Tensor) -> torch.Tensor:
        return (int_matmul(xq, self.w8) * row_factor) * self.scale

    def normed(self, h: torch.Tensor, eps: float) -> torch.Tensor:
        """This layer applied to RMSNorm(h) times the norm's gain."""
        xq, scale = quantize(h)
        factor = inv_rms(xq, scale, eps)
        if self.gain is None:  # folded into the weights
            return self(xq, factor)
        xq, scale = quantize((xq * factor) * self.gain)
        return self(xq, scale)

    def normed_output_bound(self) -> torch.Tensor:
        """(out,) bound on |output| for any input of RMS <= 1: ||W_j * gain||_2 sqrt(in)."""
        q = self.w8.to(torch.float64)
        if self.gain is None:
            norms = torch.sqrt((q * q).sum(dim=1))  # integer sums: exact
        else:  # products are single IEEE operations; fsum is correctly rounded: no order
            scaled = q * self.gain
            sq = (scaled * scaled).numpy()  # not ** 2: pow need not be a single IEEE op
            norms = torch.sqrt(torch.tensor([math.fsum(row) for row in sq], dtype=torch.float64))
        return (norms * self.scale) * math.sqrt(q.shape[1])

    def digest_into(self, h):
        h.update(self.w8.numpy().tobytes())
        h.update(self.scale.numpy().tobytes())
        if self.gain is not None:
            h.update(self.gain.numpy().tobytes())


def attend(qq, q_scale, kq, vq, v_scale, mask=None):
    """Exact softmax attention over integer keys and values.

    qq (B, Hkv, G*Tq, D) integer queries, the G query heads of each key head one after
    another; q_scale (B, Hkv, G*Tq, 1) turns q.k into logits in table steps; kq, vq
    (B, Hkv, Tk, D) integers (views into a cache are fine: nothing is copied); v_scale
    (Hkv, 1, D); mask (Tq, Tk) True where a query may attend. Each query's result depends
    only on its own valid keys, so blocks, batches and steps all give the same bits.
    """
    if qq.shape[-2] > 16:  # (B, Hkv, G*Tq, Tk); exact either way, so take the faster form
        scores = qq @ kq.transpose(-1, -2)
    else:  # a few queries against a long cache: MKL streams K faster this way round
        scores = (kq @ qq.transpose(-1, -2)).transpose(-1, -2).contiguous()
    scores.mul_(q_scale)
    if mask is not None:
        b, h, gt, tk = scores.shape
        scores.view(b, h, gt // mask.shape[0], mask.shape[0], tk).masked_fill_(~mask, -math.inf)
    gap = torch.sub(scores.amax(dim=-1, keepdim=True), scores, out=scores)  # >= 0
    weights = lookup(_ATT_EXP, gap.clamp_(max=len(_ATT_EXP) - 1))  # integers <= 2^18
    total = weights.sum(dim=-1, keepdim=True)  # exact
    return ((weights @ vq) * v_scale) / total  # exact matmul, then two IEEE operations


def rotate(x, cos, sin):
    """RoPE in HF's rotate_half layout: x*cos + rotate_half(x)*sin."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def _pair_bound(bound: torch.Tensor) -> torch.Tensor:
    """Bound after RoPE, which mixes channel i with i + D/2: sqrt(b_i^2 + b_(i+D/2)^2)."""
    half = bound.shape[-1] // 2
    lo, hi = bound[..., :half], bound[..., half:]
    pair = torch.sqrt(lo * lo + hi * hi)
    return torch.cat([pair, pair], dim=-1)


# --- the network -----------------------------------------------------------------------------

@dataclass
class Layer(LayerProducts):  # window: None for none
    k_scale: torch.Tensor | None = None  # (Hkv, 1, 1): fixed key scale per head
    v_scale: torch.Tensor | None = None  # (Hkv, 1, D): fixed value scale per channel
    q_gain: torch.Tensor | None = None  # Gemma 3 QK-norm gains (1 + w)
    k_gain: torch.Tensor | None = None
    post_attn_gain: torch.Tensor | None = None  # Gemma 3 post-norms (1 + w)
    post_ffn_gain: torch.Tensor | None = None


class ExactTransformer:
    """A Llama or Gemma 3 decoder whose every number is reproducible bit for bit."""

    def __init__(self, hf_model):
        cfg = hf_model.config
        self.arch = cfg.model_type
        gemma = self.arch == "gemma3_text"
        self.gemma = gemma
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.eps = float(cfg.rms_norm_eps)
        # 1/sqrt via IEEE sqrt and division (pow() is libm, not correctly rounded everywhere)
        scale = 1.0 / math.sqrt(cfg.query_pre_attn_scalar if gemma else self.head_dim)
        self.q_factor = scale * LOGIT_STEPS
        if getattr(cfg, "attn_logit_softcapping", None) or \
                getattr(cfg, "final_logit_softcapping", None):
            raise NotImplementedError("logit soft-capping is not in exact arithmetic yet")
        model = hf_model.model
        norm_gain = (lambda w: 1.0 + w.detach().to(torch.float64)) if gemma \
            else (lambda w: w.detach().to(torch.float64))
        self.embed = model.embed_tokens.weight.detach()  # (V, d) float32
        self.embed_scale = math.sqrt(cfg.hidden_size) if gemma else None
        self.layers = [self._layer(cfg, i, layer, norm_gain)
                       for i, layer in enumerate(model.layers)]
        self.lm_head = Linear(hf_model.get_output_embeddings().weight,
                              norm_gain(model.norm.weight), fold_gain=not gemma)
        self.vocab_size = self.lm_head.w8.shape[0]
        self._rope: dict = {}

    def _layer(self, cfg, i, layer, norm_gain) -> Layer:
        att, mlp = layer.self_attn, layer.mlp
        ffn_norm = layer.pre_feedforward_layernorm if self.gemma else layer.post_attention_layernorm
        qkv = torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight])
        layer_type = (getattr(cfg, "layer_types", None) or ["full_attention"] * (i + 1))[i]
        rope = getattr(cfg, "rope_parameters", None) or {"rope_theta": cfg.rope_theta}
        if layer_type in rope:  # per-layer-type RoPE (Gemma 3)
            rope = rope[layer_type]
        if rope.get("rope_type", "default") != "default":
            raise NotImplementedError(f"RoPE type {rope['rope_type']} is not in exact arithmetic")
        window = cfg.sliding_window if layer_type == "sliding_attention" else None
        fold = not self.gemma
        out = Layer(Linear(qkv, norm_gain(layer.input_layernorm.weight), fold),
                    Linear(att.o_proj.weight),
                    Linear(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]),
                           norm_gain(ffn_norm.weight), fold),
                    Linear(mlp.down_proj.weight), float(rope["rope_theta"]), window)
        if self.gemma:
            out.q_gain = norm_gain(att.q_norm.weight)
            out.k_gain = norm_gain(att.k_norm.weight)
            out.post_attn_gain = norm_gain(layer.post_attention_layernorm.weight)
            out.post_ffn_gain = norm_gain(layer.post_feedforward_layernorm.weight)
        self._fixed_kv_scales(out)
        return out

    def _fixed_kv_scales(self, layer: Layer):
        d, nq, nkv = self.head_dim, self.n_heads, self.n_kv
        bound = layer.qkv.normed_output_bound()
        if layer.k_gain is not None:  # after QK-norm each head has RMS 1, then the gain
            k_bound = (layer.k_gain.abs() * math.sqrt(d)).expand(nkv, d)
        else:
            k_bound = bound[nq * d:(nq + nkv) * d].view(nkv, d)
        k_head = _pair_bound(k_bound).amax(dim=-1)  # (Hkv,)
        layer.k_scale = ((k_head * BOUND_MARGIN) / K_MAX).view(nkv, 1, 1)
        v_bound = bound[(nq + nkv) * d:].view(nkv, 1, d)
        layer.v_scale = torch.where(v_bound > 0, (v_bound * BOUND_MARGIN) / V_MAX,
                                    torch.ones_like(v_bound))
        if ATT_BITS + math.log2(V_MAX + 1) + math.log2(MAX_KEYS) > 53:
            raise AssertionError("attention bounds exceed 2^53")

    def digest(self) -> bytes:
        from llmzip.engine.exact.weights import network_digest
        layers = [((layer.qkv, layer.o, layer.gate_up, layer.down),
                   [t.contiguous().numpy() for t in (layer.k_scale, layer.v_scale, layer.q_gain,
                    layer.k_gain, layer.post_attn_gain, layer.post_ffn_gain) if t is not None],
                   layer.theta, layer.window or 0) for layer in self.layers]
        return network_digest(ARITHMETIC_VERSION, self.arch, (self.n_heads, self.n_kv,
                              self.head_dim), (self.eps, self.q_factor),
                              self.embed.contiguous().numpy(), layers, self.lm_head)

    def rope(self, theta: float, n_pos: int):
        return grown(self._rope, theta, n_pos,
                     lambda n: _rope_table(theta, self.head_dim, max(n, 2048 + 1)))

    # --- per-token pieces shared by the full forward and the steps --------------------------

    def embed_rows(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed[ids].to(torch.float64)
        if self.embed_scale is not None:
            h = h * torch.tensor(self.embed_scale, dtype=torch.float32).to(torch.float64)
        return h

    def qkv_rows(self, layer: Layer, h, positions):
        """h (..., T, d) -> integer queries (..., Hkv, G, T, D) with their logit scale, and
        integer keys and values (..., Hkv, T, D)."""
        qkv = layer.qkv.normed(h, self.eps)
        lead, t = h.shape[:-2], h.shape[-2]
        d, nq, nkv = self.head_dim, self.n_heads, self.n_kv
        q = qkv[..., :nq * d].reshape(*lead, t, nq, d)
        k = qkv[..., nq * d:(nq + nkv) * d].reshape(*lead, t, nkv, d)
        v = qkv[..., (nq + nkv) * d:].reshape(*lead, t, nkv, d)
        if layer.q_gain is not None:  # Gemma 3 QK-norm, per head
            q1, s1 = quantize(q)
            q = (q1 * inv_rms(q1, s1, self.eps)) * layer.q_gain
            k1, s1 = quantize(k)
            k = (k1 * inv_rms(k1, s1, self.eps)) * layer.k_gain
        cos, sin = self.rope(layer.theta, int(positions[-1]) + 1)
        cos, sin = cos[positions][:, None, :], sin[positions][:, None, :]  # (T, 1, D)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        g = nq // nkv
        qq, q_scale = quantize(q.reshape(*lead, t, nkv, g, d).movedim(-4, -2), Q_MAX)  # (.., Hkv, G, T, D)
        q_scale = (q_scale * layer.k_scale.unsqueeze(-1)) * self.q_factor
        kq = quantize_fixed(k.movedim(-3, -2), layer.k_scale, K_MAX)
        vq = quantize_fixed(v.movedim(-3, -2), layer.v_scale, V_MAX)
        return qq, q_scale, kq, vq

    def finish_layer(self, layer: Layer, h, attn):
        """Residual stream after attention output attn (..., Hkv, G*T, D) and the MLP."""
        lead, t = h.shape[:-2], h.shape[-2]
        g = self.n_heads // self.n_kv
        attn = attn.reshape(*lead, self.n_kv, g, t, self.head_dim).movedim(-2, -4)
        attn = attn.reshape(*lead, t, self.n_heads * self.head_dim)
        aq, scale = quantize(attn)
        h = h + self._post_norm(layer.o(aq, scale), layer.post_attn_gain)
        gate, up = layer.gate_up.normed(h, self.eps).chunk(2, dim=-1)
        if self.gemma:
            inner = ((gate * gate) * gate) * GELU_TANH_C + gate
            act = (gate * sigmoid(inner * GELU_TANH_K)) * up
        else:
            act = (gate * sigmoid(gate)) * up
        aq, scale = quantize(act)
        return h + self._post_norm(layer.down(aq, scale), layer.post_ffn_gain)

    def _post_norm(self, x, gain):
        if gain is None:
            return x
        xq, scale = quantize(x)
        return (xq * inv_rms(xq, scale, self.eps)) * gain

    def logits(self, h) -> torch.Tensor:
        return self.lm_head.normed(h, self.eps)


class ExactStepper:
    """KV-cached decoding of n_rows segments in lockstep, max_batch rows per forward."""

    def __init__(self, net: ExactTransformer, n_rows: int, max_len: int):
        if max_len > MAX_KEYS:
            raise ValueError(f"segment of {max_len} tokens exceeds the exact bound of {MAX_KEYS}")
        self.net, self.n_rows, self.pos = net, n_rows, 0
        shape = (n_rows, net.n_kv, max_len + 1, net.head_dim)
        self.cache = [(torch.zeros(shape, dtype=torch.float64),
                       torch.zeros(shape, dtype=torch.float64)) for _ in net.layers]

    @torch.inference_mode()
    def step(self, input_ids: np.ndarray) -> np.ndarray:
        """Feed one token to each of the first len(input_ids) rows (rows that have ended
        come last and are skipped); return their next-token frequencies."""
        out = self._rows(torch.as_tensor(np.asarray(input_ids, np.int64)), 0)
        self.pos += 1
        return out

    def _rows(self, ids, first: int) -> np.ndarray:
        net, pos = self.net, self.pos
        rows = slice(first, first + len(ids))
        positions = torch.tensor([pos])
        h = net.embed_rows(ids[:, None])  # (B, 1, d)
        for layer, (k_cache, v_cache) in zip(net.layers, self.cache):
            qq, q_scale, kq, vq = net.qkv_rows(layer, h, positions)  # qq (B, Hkv, G, 1, D)
            k_cache[rows, :, pos] = kq[:, :, 0]
            v_cache[rows, :, pos] = vq[:, :, 0]
            lo = 0 if layer.window is None else max(0, pos - layer.window + 1)
            attn = attend(qq.flatten(2, 3), q_scale.flatten(2, 3), k_cache[rows, :, lo:pos + 1],
                          v_cache[rows, :, lo:pos + 1], layer.v_scale)
            h = net.finish_layer(layer, h, attn)
        return frequencies(net.logits(h[:, 0]).numpy(), serial=True)


class LegacyEngine:
    """Decodes exact-v2 archives: the v2 network's KV-cached steps (see the module's
    docstring). It cannot write archives."""

    arithmetic = Arithmetic.EXACT
    batch_invariant = True
    full_forward = False

    def __init__(self, model):
        with torch.inference_mode():
            self.net = ExactTransformer(model.hf_model())
        self.model = model
        self.vocab_size = self.net.vocab_size
        self.context_start_id = model.context_start_id
        self._fingerprint = None

    def fingerprint(self) -> bytes:
        if self._fingerprint is None:
            h = hashlib.blake2b(self.net.digest(), digest_size=16)
            h.update(self.model.tokenizer.digest())
            h.update(self.context_start_id.to_bytes(4, "little"))
            self._fingerprint = h.digest()
        return self._fingerprint

    def cache_bytes(self, n_rows: int, max_len: int) -> int:
        """Memory of a stepper's KV cache (float64 keys and values for every layer)."""
        net = self.net
        return 2 * 8 * len(net.layers) * n_rows * net.n_kv * (max_len + 1) * net.head_dim

    def stepper(self, n_rows: int, max_len: int) -> ExactStepper:
        return ExactStepper(self.net, n_rows, max_len)
