"""The exact transformer: Llama and Gemma 3 as integer weights, one forward for both directions.

`ExactNetwork.layer` is the one forward step of a layer over any set of rows (token
positions). The encoder runs it over a whole segment (`forward_full`, attention from float32
BLAS over the segment's own keys); the decoder runs it one position per row (`Stepper`,
attention over an int8 KV cache). Both call the same rules (`arithmetic`) and get the same
integer products (`kernels`), so their frequency tables are identical bit for bit.

Weights come from the float checkpoint: int8 per output channel, with norm gains folded
into them (Llama) or kept to scale the activation (Gemma 3, whose gains span 0.16 to 300:
folded, the small-gain channels rounded away and cost +41%). `ARCHITECTURES` lists what
differs between the two families; anything else is refused, and keeps the float engine.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from . import arithmetic as ar
from . import amx, avx2, vnni
from .kernels import (INT8_ROWS, TILE_ROWS, attend_cached, attend_segment, int8_matmul_serves,
                      int8_weights, products_blas, products_dots_scaled, products_int8,
                      products_tiles, store_step_heads, transposed_float32)
from .scores import KEY_BLOCK, block_count, key_blocks, query_pairs
from .tables import grown, persisted, rope_table

__all__ = ["ARCHITECTURES", "ExactNetwork", "Stepper", "quantize_checkpoint", "supports"]

ARCHITECTURES = {  # model_type -> what exact arithmetic must do differently
    "llama": dict(gain_offset=0.0, fold_gains=True, qk_norm=False, post_norms=False,
                  scale_embeddings=False, gelu=False, query_scale_key="head_dim"),
    "gemma3_text": dict(gain_offset=1.0, fold_gains=False, qk_norm=True, post_norms=True,
                        scale_embeddings=True, gelu=True, query_scale_key="query_pre_attn_scalar"),
}
QUERY_BLOCK = 256  # encoder: queries per attention block (skips most of the masked half)
LOGIT_ELEMENTS = 2**23  # encoder: vocabulary logits per chunk (170 rows of 49k, 32 of 262k):
# each chunk's logits, frequencies and products are ~400 MB at 2^24, the encoder's peak
RECALL_TOKENS = 8192  # encoder: a group this small keeps its outputs for a second pass
BLAS_ROWS = 256  # from this many rows, float32 BLAS beats int8 tiles despite converting weights
MAX_FEATURES = 2048  # widest matmul input the bound (L1 + K rounding) x 127 < 2^24 allows


def supports(config: dict) -> bool:
    return config.get("model_type") in ARCHITECTURES


@dataclass
class Linear:
    """int8 weights per output channel; `gain`: a preceding norm's gain kept apart (Gemma)."""

    w8: np.ndarray  # (out, in) int8
    scale: np.ndarray  # (out,) float64
    gain: np.ndarray  # (in,) float64, or empty when folded into w8 or absent

    def digest_into(self, h) -> None:
        h.update(np.ascontiguousarray(self.w8))  # the array's bytes, hashed without a copy
        h.update(np.ascontiguousarray(self.scale))
        if self.gain.size:
            h.update(np.ascontiguousarray(self.gain))


@dataclass
class LayerProducts:
    """What a layer holds in either exact engine: four products (each engine's own Linear),
    the RoPE base and the sliding window. legacy.Layer (exact-v2) adds its float gains."""

    qkv: Linear
    o: Linear
    gate_up: Linear
    down: Linear
    theta: float
    window: int | None  # sliding window (keys within window - 1 positions); 0 or None: none


@dataclass
class Layer(LayerProducts):
    norms: dict = field(default_factory=dict)  # Gemma 3: q, k, post_attn, post_ffn gains


LINEARS = ("qkv", "o", "gate_up", "down")
NO_GAIN = np.empty(0)
NO_GAIN.setflags(write=False)  # like the cached (memory-mapped) gains: one numba type, one compile
NORMS = ("q", "k", "post_attn", "post_ffn")


def _quantize(weight: np.ndarray, gain: np.ndarray | None = None, fold: bool = True) -> dict:
    """int8 per output channel (round half to even), the gain folded in or kept apart."""
    w = weight.astype(np.float64)
    if gain is not None and fold:
        w = w * gain
    amax = np.abs(w).max(axis=1, keepdims=True)
    scale = np.where(amax > 0, amax / ar.WEIGHT_MAX, 1.0)
    out = {"w8": np.round(w / scale).astype(np.int8), "scale": scale[:, 0]}
    if gain is not None and not fold:
        out["gain"] = gain
    return out


def quantize_checkpoint(config: dict, state: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """The integer network (a description and named arrays) from a float checkpoint:
    config.json and its weights by Hugging Face name. What `ExactNetwork` is built from,
    and what the model cache stores."""
    arch_name = config.get("model_type")
    if arch_name not in ARCHITECTURES:
        raise NotImplementedError(f"exact arithmetic does not cover the {arch_name} architecture")
    arch = ARCHITECTURES[arch_name]
    if config.get("attn_logit_softcapping") or config.get("final_logit_softcapping"):
        raise NotImplementedError("logit soft-capping is not in exact arithmetic yet")
    meta = _network_meta(config, arch_name, arch)
    if meta["head_dim"] % 8:
        raise NotImplementedError(f"head size {meta['head_dim']} is not a multiple of 8, "
                                  "which the exact attention kernels step by")
    arrays = {"embed": np.ascontiguousarray(state["model.embed_tokens.weight"], np.float32)}
    gains = _gains(state, arch)
    for i in range(config["num_hidden_layers"]):
        meta["layers"].append(_layer_meta(config, i))
        arrays.update(_layer_arrays(state, arch, gains, i))
    head = state.get("lm_head.weight", state["model.embed_tokens.weight"])
    lm = _quantize(head, gains("model.norm.weight"), arch["fold_gains"])
    arrays.update({f"lm_head.{k}": v for k, v in lm.items()})
    return meta, arrays


def _network_meta(config: dict, arch_name: str, arch: dict) -> dict:
    n_heads = config["num_attention_heads"]
    return {"arch": arch_name, "n_heads": n_heads, "n_kv": config["num_key_value_heads"],
            "head_dim": config.get("head_dim") or config["hidden_size"] // n_heads,
            "eps": float(config["rms_norm_eps"]),
            # 1/sqrt by IEEE sqrt and division (pow is libm, not correctly rounded everywhere)
            "q_factor": (1.0 / math.sqrt(config[arch["query_scale_key"]])) * ar.LOGIT_STEPS,
            "embed_scale": float(np.float32(math.sqrt(config["hidden_size"])))
            if arch["scale_embeddings"] else None, "layers": []}


def _gains(state: dict, arch: dict):
    """A norm's gains as the architecture stores them (Gemma: 1 + w)."""
    return lambda name: arch["gain_offset"] + state[name].astype(np.float64)


def _layer_meta(config: dict, i: int) -> dict:
    """Layer i's RoPE base and sliding window (Gemma 3 alternates them by layer type)."""
    layer_type = (config.get("layer_types") or ["full_attention"] * (i + 1))[i]
    rope = config.get("rope_parameters") or {"rope_theta": config["rope_theta"]}
    rope = rope.get(layer_type, rope)
    if rope.get("rope_type", "default") != "default":
        raise NotImplementedError(f"RoPE type {rope['rope_type']} is not in exact arithmetic")
    return {"theta": float(rope["rope_theta"]),
            "window": config["sliding_window"] if layer_type == "sliding_attention" else 0}


def _layer_arrays(state: dict, arch: dict, gains, i: int) -> dict:
    """Layer i's int8 linears (norm gains folded in where the architecture allows) and,
    for Gemma 3, its other norms' gains."""
    p, fold = f"model.layers.{i}.", arch["fold_gains"]
    ffn_norm = "pre_feedforward_layernorm" if arch["post_norms"] else "post_attention_layernorm"
    linears = {
        "qkv": _quantize(np.concatenate([state[p + f"self_attn.{n}_proj.weight"] for n in "qkv"]),
                         gains(p + "input_layernorm.weight"), fold),
        "o": _quantize(state[p + "self_attn.o_proj.weight"]),
        "gate_up": _quantize(np.concatenate([state[p + "mlp.gate_proj.weight"],
                                             state[p + "mlp.up_proj.weight"]]),
                             gains(p + ffn_norm + ".weight"), fold),
        "down": _quantize(state[p + "mlp.down_proj.weight"])}
    arrays = {}
    for name, lin in linears.items():
        if lin["w8"].shape[1] > MAX_FEATURES:
            raise NotImplementedError(f"{lin['w8'].shape[1]} input features exceed exact bounds")
        arrays.update({f"{i}.{name}.{k}": v for k, v in lin.items()})
    if arch["qk_norm"]:
        for name, key in zip(NORMS, ("self_attn.q_norm", "self_attn.k_norm",
                                     "post_attention_layernorm", "post_feedforward_layernorm")):
            arrays[f"{i}.norm.{name}"] = gains(p + key + ".weight")
    return arrays


def network_digest(version: bytes, arch: str, heads: tuple, factors: tuple, embed, layers,
                   lm_head) -> bytes:
    """The fingerprint's network part, for exact-v3 and (`legacy`) exact-v2 alike: the
    version, shapes and factors, the embedding table, then per layer its linears (their own
    `digest_into`), its other arrays, RoPE base and window, then the head."""
    h = hashlib.blake2b(digest_size=16)
    h.update(version + arch.encode())
    h.update(np.array(heads, np.int64).tobytes())
    h.update(np.array(factors, np.float64).tobytes())
    h.update(np.ascontiguousarray(embed))
    for linears, arrays, theta, window in layers:
        for lin in linears:
            lin.digest_into(h)
        for a in arrays:
            h.update(np.ascontiguousarray(a))
        h.update(np.array([theta, window], np.float64).tobytes())
    lm_head.digest_into(h)
    return h.digest()


class ExactNetwork:
    """A Llama or Gemma 3 decoder whose every number is reproducible bit for bit."""

    def __init__(self, meta: dict, arrays: dict[str, np.ndarray]):
        """meta, arrays: from `quantize_checkpoint` (or the cache that stores them)."""
        self.meta = meta
        self.arch_name = meta["arch"]
        self.arch = ARCHITECTURES[self.arch_name]
        self.n_heads, self.n_kv, self.head_dim = meta["n_heads"], meta["n_kv"], meta["head_dim"]
        self.groups = self.n_heads // self.n_kv
        self.eps, self.q_factor, self.embed_scale = meta["eps"], meta["q_factor"], meta["embed_scale"]
        self.embed = arrays["embed"]

        def linear(prefix):
            return Linear(arrays[f"{prefix}.w8"], arrays[f"{prefix}.scale"],
                          arrays.get(f"{prefix}.gain", NO_GAIN))

        self.layers = [Layer(*(linear(f"{i}.{n}") for n in LINEARS), layer["theta"],
                             layer["window"], {n: arrays[f"{i}.norm.{n}"] for n in NORMS
                                               if f"{i}.norm.{n}" in arrays})
                       for i, layer in enumerate(meta["layers"])]
        self.lm_head = linear("lm_head")
        self.vocab_size = self.lm_head.w8.shape[0]
        self._rope: dict = {}
        self._recent: dict = {}  # a small group's last outputs (`_hidden`)
        self.step_forms: dict = {}  # the decoder's forms of the weights (`_StepProducts`)

    def digest(self) -> bytes:
        """BLAKE2b-128 of the arithmetic's version and everything a probability depends on."""
        layers = [((layer.qkv, layer.o, layer.gate_up, layer.down),
                   [layer.norms[n] for n in ("q", "k", "post_attn", "post_ffn") if n in layer.norms],
                   layer.theta, layer.window) for layer in self.layers]
        return network_digest(ar.VERSION.encode(), self.arch_name, (self.n_heads, self.n_kv,
                              self.head_dim), (self.eps, self.q_factor), self.embed, layers,
                              self.lm_head)

    # --- one forward step, shared by the encoder and the decoder ---------------------------

    def rope(self, theta: float, n_pos: int):
        return grown(self._rope, theta, n_pos,
                     lambda n: persisted(rope_table, theta, self.head_dim, max(n, 4096 + 1)))

    def embed_rows(self, ids: np.ndarray) -> np.ndarray:
        h = self.embed[ids].astype(np.float64)
        return h * self.embed_scale if self.embed_scale is not None else h

    def linear(self, lin: Linear, x: np.ndarray, products,
               normed: bool = False) -> np.ndarray:
        """lin applied to x (R, K), or to RMSNorm(x) (times the kept gain): (R, N) float64.
        The quantized input is int16-valued float32, what every product kernel reads."""
        xq = np.empty(x.shape, np.float32)
        factor = np.empty(x.shape[0])
        if normed:
            ar.norm_quantize_rows(x, lin.gain, self.eps, xq, factor)
        else:
            ar.quantize_rows(x, xq, factor)
        out = np.empty((x.shape[0], lin.w8.shape[0]))
        fused = getattr(products, "scaled", None)  # products and scaling in one pass
        if fused is None or not fused(xq, factor, lin, out):
            ar.scale_products(products(xq, lin), factor, lin.scale, out)
        return out

    def layer(self, layer: Layer, h: np.ndarray, attend, products) -> np.ndarray:
        """h (R, d) through one layer; attend(qkv) -> (R, heads * D) from the rows' queries,
        keys and values side by side (R, (heads + 2 KV heads) * D)."""
        attn = attend(self.linear(layer.qkv, h, products, normed=True))
        ar.add_post_norm(h, self.linear(layer.o, attn, products),
                         layer.norms.get("post_attn", NO_GAIN), self.eps)
        act = ar.activation(self.linear(layer.gate_up, h, products, normed=True),
                            self.arch["gelu"])
        ar.add_post_norm(h, self.linear(layer.down, act, products),
                         layer.norms.get("post_ffn", NO_GAIN), self.eps)
        return h

    def heads(self, layer: Layer, qkv: np.ndarray, positions: np.ndarray):
        """Queries (R, heads, D), keys and values (R, KV heads, D) from qkv at positions
        (R,): QK-normed where the model has gains, queries and keys rotated (RoPE)."""
        rows, d, nq, nkv = qkv.shape[0], self.head_dim, self.n_heads, self.n_kv
        q = np.ascontiguousarray(qkv[:, :nq * d]).reshape(rows, nq, d)
        k = np.ascontiguousarray(qkv[:, nq * d:(nq + nkv) * d]).reshape(rows, nkv, d)
        v = np.ascontiguousarray(qkv[:, (nq + nkv) * d:]).reshape(rows, nkv, d)
        if "q" in layer.norms:
            ar.head_norm(q, layer.norms["q"], self.eps)
            ar.head_norm(k, layer.norms["k"], self.eps)
        cos, sin = self.rope(layer.theta, int(positions.max()) + 1)
        ar.rotate(q, positions, cos, sin)
        ar.rotate(k, positions, cos, sin)
        return q, k, v

    @staticmethod
    def quantize_qkv(q, k, v):
        """Queries (R, heads, D) as int16-valued float32 with scales (R, heads); int8 keys
        and values (R, H, D) with a scale per (row, head)."""
        qq, qs = np.empty(q.shape, np.float32), np.empty(q.shape[:2])
        ar.quantize_queries(q, qq, qs)
        kq, ks = np.empty(k.shape, np.int8), np.empty(k.shape[:2])
        ar.quantize_kv(k, kq, ks)
        vq, vs = np.empty(v.shape, np.int8), np.empty(v.shape[:2])
        ar.quantize_kv(v, vq, vs)
        return qq, qs, kq, ks, vq, vs

    def logits(self, h: np.ndarray, products) -> np.ndarray:
        return self.linear(self.lm_head, h, products, normed=True)

    # --- whole segments (encoder) --------------------------------------------------------------

    def full_tables(self, ids: np.ndarray, device=None):
        """Frequencies, in chunks of rows, for every position of a segment whose inputs (the
        context start, then every token but the last) are ids."""
        for _, tables in self.group_tables([ids], device):
            yield tables[0]

    def group_tables(self, segments: list[np.ndarray], device=None):
        """(position, {index: tables}) for several segments at once, chunk by chunk, every
        chunk at the same positions in each segment still running: one forward per segment,
        then one head product per chunk over all of them (the head's 28M weights read once
        per 2^24 table entries, not once per segment's share). device: products on a torch
        device (`device.DeviceProducts`), else float32 BLAS or int8 tiles."""
        hidden = self._recalled(segments, device)  # (T_i, d) each
        rows = sum(len(h) for h in hidden)
        head = device or (_Blas(transposed_float32(self.lm_head.w8)) if rows >= BLAS_ROWS
                          else _Tiles())
        chunk = max(1, LOGIT_ELEMENTS // (self.vocab_size * len(segments)))
        for start in range(0, max(len(h) for h in hidden), chunk):
            running = [i for i, h in enumerate(hidden) if len(h) > start]
            parts = [hidden[i][start:start + chunk] for i in running]
            freqs = ar.frequencies(self.logits(np.concatenate(parts), head))  # (sum, V)
            bounds = np.cumsum([len(p) for p in parts])[:-1]
            yield start, dict(zip(running, np.split(freqs, bounds)))

    def _recalled(self, segments: list[np.ndarray], device) -> list[np.ndarray]:
        """Each segment's last-layer output, recalled when the same group comes again: a
        file whose adaptation does not pay is coded a second time with the model alone
        (`modelcoding.encode`), and that second forward was a third of compressing a few-KB
        file. The latest groups are kept, up to RECALL_TOKENS positions (38 MB) in all, so
        a small file's groups all are, and a big file's pass through. The device does not
        enter the key: any device computes the same integers."""
        key = tuple(np.asarray(ids, np.int64).tobytes() for ids in segments)
        if key in self._recent:
            return self._recent[key]
        hidden = [self._hidden(ids, device) for ids in segments]
        self._recent[key] = hidden
        while sum(len(h) for group in self._recent.values() for h in group) > RECALL_TOKENS:
            del self._recent[next(iter(self._recent))]  # the oldest group
        return hidden

    def _hidden(self, ids: np.ndarray, device) -> np.ndarray:
        """The last layer's output (T, d) for a segment's inputs."""
        if len(ids) > ar.MAX_KEYS:
            raise ValueError(f"segment of {len(ids)} tokens exceeds the exact bound of {ar.MAX_KEYS}")
        positions = np.arange(len(ids))
        h = self.embed_rows(ids)
        products = device or (_Blas() if len(ids) >= BLAS_ROWS else _Tiles())

        def attend(layer, qkv):
            q, k, v = self.heads(layer, qkv, positions)
            return (self._attend_blocks(layer, q, k, v, device) if device
                    else self._attend_segment(layer, q, k, v))

        for layer in self.layers:
            h = self.layer(layer, h, functools.partial(attend, layer), products)
        return h

    def _attend_segment(self, layer: Layer, q, k, v) -> np.ndarray:
        """Causal (windowed) attention of a segment over itself on the CPU, position by
        position with the decoder's kernel (`kernels.attend_segment`)."""
        qq, qs, kq, ks, vq, vs = self.quantize_qkv(q, k, v)
        t_len, nkv, g, d = q.shape[0], self.n_kv, self.groups, self.head_dim
        values_t = np.empty((nkv, d, _row_bytes(t_len)), np.int8)[..., :t_len]  # as cached
        values_t[:] = vq.transpose(1, 2, 0)
        out = np.empty((t_len, nkv, g, d))
        attend_segment(query_pairs(qq).reshape(t_len, nkv, g, d // 2),
                       qs.reshape(t_len, nkv, g), key_blocks(kq.transpose(1, 0, 2)),
                       np.ascontiguousarray((ks * self.q_factor).T), values_t,
                       np.ascontiguousarray(vs.T), layer.window or 0, ar.ATTENTION_EXP, out,
                       (0,) * g)
        return out.reshape(t_len, self.n_heads * d)

    def _attend_blocks(self, layer: Layer, q, k, v, products) -> np.ndarray:
        """Causal (windowed) attention of a segment over itself on a device, in blocks of
        QUERY_BLOCK queries: scores and weights x values from its matrix products, exact
        integers, the same as `_attend_segment`'s."""
        qq, qs, kq, ks, vq, vs = self.quantize_qkv(q, k, v)
        t_len, g, d = q.shape[0], self.groups, self.head_dim
        out = np.empty((t_len, self.n_heads, d))
        q_pos = np.repeat(np.arange(t_len), g)
        for h in range(self.n_kv):
            queries = qq[:, h * g:(h + 1) * g].reshape(t_len * g, d)  # rows (t, g)
            q_scale = qs[:, h * g:(h + 1) * g].reshape(-1)
            keys = np.ascontiguousarray(kq[:, h], dtype=np.float32)
            values = np.ascontiguousarray(vq[:, h], dtype=np.float32)
            k_factor, v_scale = ks[:, h] * self.q_factor, np.ascontiguousarray(vs[:, h])
            for start in range(0, t_len, QUERY_BLOCK):
                stop = min(start + QUERY_BLOCK, t_len)
                k0 = max(0, start - layer.window + 1) if layer.window else 0
                rows = slice(start * g, stop * g)
                scores = products.mm(queries[rows], keys[k0:stop].T)  # exact integers
                folded = np.empty_like(scores)
                scale = np.empty(scores.shape[0])
                ar.fold_score_block(scores, q_scale[rows], q_pos[rows], k_factor[k0:stop],
                                    v_scale[k0:stop], k0, layer.window, ar.ATTENTION_EXP,
                                    folded, scale)
                acc = products.mm(folded, values[k0:stop]).astype(np.float64)  # exact
                out[start:stop, h * g:(h + 1) * g] = (acc * scale[:, None]).reshape(
                    stop - start, g, d)
        return out.reshape(t_len, self.n_heads * d)


class _Blas:
    """Integer products of many rows: float32 sgemm."""

    def __init__(self, weights32: np.ndarray | None = None):
        self.weights32 = weights32  # the one matrix this is used with, as (K, N) float32

    def __call__(self, xq, lin: Linear):
        weights = self.weights32 if self.weights32 is not None else lin.w8
        return products_blas(xq, weights)


class _Tiles:
    """Integer products of a few rows: float32 tiles over the int8 weights."""

    def __call__(self, xq, lin: Linear):
        return products_tiles(xq, lin.w8)


class _StepProducts(_Tiles):
    """The decoder's integer products, by a step's rows; each call chooses, as rows end
    with their segments. A step's products at 2 threads (Intel Xeon, scaling included):
    - AMX tiles (`amx`) up to amx.MAX_ROWS rows, where available and the segments are
      long enough to pay for packing the weights: 2 rows 9.3 -> 8.1 ms, 11 rows 18.8 ->
      12.3 ms against VNNI and torch;
    - AVX-512 VNNI (`vnni`) up to vnni.MAX_ROWS, where available: 2 rows 15.0 -> 8.9 ms;
    - torch's int8 matmul on two limbs (`kernels.products_int8`) from INT8_ROWS rows,
      where it serves (VNNI, and exact: 11 rows 31 -> 17 ms against the tiles);
    - AVX2's vpmaddwd (`avx2`), where available: CPUs without VNNI (AMD EPYC, Zen 3);
    - else the numba kernels.
    The forms of the weights each needs (AMX's packed tiles, weight sums, torch views) are
    kept by the network, made once a process. (torch's int8 matmul is not the encoder's: on
    5,400 rows it saved 1 s of 18 and its process grew by 64 MB per head product, memory
    freed but not given back.)"""

    def __init__(self, n_rows: int, max_len: int, forms: dict):
        self.amx = max_len >= amx.MIN_STEPS and amx.available()
        self.vnni = vnni.available()
        fused_all = (self.amx and n_rows <= amx.MAX_ROWS) or (self.vnni and n_rows <= vnni.MAX_ROWS)
        self.int8 = n_rows >= INT8_ROWS and not fused_all and int8_matmul_serves()
        self.avx2 = not fused_all and avx2.available()
        self._forms = forms  # (kind, id(w8)) -> (w8, that form of it): w8 keeps its id

    def _form(self, kind: str, w8: np.ndarray, make):
        kept = self._forms.get((kind, id(w8)))
        if kept is None:
            kept = self._forms[kind, id(w8)] = (w8, make(w8))
        return kept[1]

    def scaled(self, xq, factor, lin: Linear, out) -> bool:
        """out = ar.scale_products of the products, in one pass where a kernel does both:
        AMX, VNNI, AVX2, or numba's dots under TILE_ROWS rows."""
        rows, w8 = len(xq), lin.w8
        if self.amx and rows <= amx.MAX_ROWS and amx.fits(w8):
            amx.products_scaled(xq, self._form("amx", w8, amx.pack),
                                self._form("sums", w8, vnni.weight_sums), factor, lin.scale, out)
        elif self.vnni and rows <= vnni.MAX_ROWS and vnni.fits(w8):
            vnni.products_scaled(xq, w8, self._form("sums", w8, vnni.weight_sums), factor,
                                 lin.scale, out)
        elif self.avx2 and avx2.fits(w8) and not (self.int8 and rows >= INT8_ROWS):
            avx2.products_scaled(xq, w8, factor, lin.scale, out)
        elif rows < TILE_ROWS:
            products_dots_scaled(xq, w8, factor, lin.scale, out)
        else:
            return False
        return True

    def __call__(self, xq, lin: Linear):
        if not self.int8 or len(xq) < INT8_ROWS:
            return super().__call__(xq, lin)
        return products_int8(xq, self._form("torch", lin.w8, int8_weights))


def _row_bytes(positions: int) -> int:
    """Bytes between two channels of a cached value: the positions rounded up to an odd
    number of 64-byte lines. Attention reads four channels at once at the same positions;
    4,097 bytes apart (4,096 positions and the context start) they fell in the same cache
    sets, from which the cache could hold only a few (numpy backs large arrays with 2 MB
    pages, so physical addresses kept the stride). Measured when the keys were stored so
    too, before `scores`' blocks (ad hoc, AMD EPYC, 2 threads, alone, fastest of 40
    interleaved steps): 11 rows at 2,500 positions 80.1 -> 60.4 ms, at 1,000 55.6 -> 49.1,
    2 rows at 2,000 18.9 -> 15.3; 1 row even."""
    return 64 * (-(-positions // 64) | 1)


class Stepper:
    """KV-cached decoding of n_rows segments in lockstep: one position of every active row
    per step. Rows that have ended come last and are simply not fed."""

    def __init__(self, net: ExactNetwork, n_rows: int, max_len: int, device=None):
        if max_len > ar.MAX_KEYS:
            raise ValueError(f"segment of {max_len} tokens exceeds the exact bound of {ar.MAX_KEYS}")
        self.net, self.pos = net, 0
        self.products = device or _StepProducts(n_rows, max_len, net.step_forms)
        heads = (len(net.layers), n_rows, net.n_kv)
        self.key_blocks = np.zeros((*heads, block_count(max_len + 1), net.head_dim // 2,
                                    2 * KEY_BLOCK), np.int8)
        self.values_t = np.zeros((*heads, net.head_dim, _row_bytes(max_len + 1)),
                                 np.int8)[..., :max_len + 1]  # (.., D, T)
        scales = (len(net.layers), n_rows, net.n_kv, max_len + 1)
        self.k_factor, self.v_scale = np.zeros(scales), np.zeros(scales)

    @staticmethod
    def cache_bytes(net: ExactNetwork, n_rows: int, max_len: int) -> int:
        """Memory of a stepper's KV cache: int8 vectors with a float64 scale each."""
        keys, values = block_count(max_len + 1) * KEY_BLOCK, _row_bytes(max_len + 1)
        return len(net.layers) * n_rows * net.n_kv * (
            (keys + values) * net.head_dim + 2 * (max_len + 1) * 8)

    def step(self, input_ids: np.ndarray) -> np.ndarray:
        """Feed one token to each of the first len(input_ids) rows; return their next-token
        frequencies (rows, V) int64."""
        net = self.net
        h = net.embed_rows(np.asarray(input_ids, np.int64))
        for i, layer in enumerate(net.layers):
            h = net.layer(layer, h, lambda qkv, i=i, layer=layer: self._attend(i, layer, qkv),
                          self.products)
        self.pos += 1
        return ar.frequencies(net.logits(h, self.products))

    def _attend(self, index: int, layer: Layer, qkv) -> np.ndarray:
        net, pos, rows = self.net, self.pos, qkv.shape[0]
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
