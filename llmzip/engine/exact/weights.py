"""exact-v3's integer weights: quantized from a float checkpoint, and digested.

Weights are int8 per output channel, with norm gains folded into them (Llama) or kept to
scale the activation (Gemma 3, whose gains span 0.16 to 300: folded, the small-gain channels
rounded away and cost +41%). `ARCHITECTURES` lists what differs between the two families;
anything else is refused, and keeps the float engine.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from llmzip.engine.exact import rules as ar

__all__ = ["ARCHITECTURES", "Linear", "Layer", "quantize_checkpoint", "network_digest", "supports"]


ARCHITECTURES = {  # model_type -> what exact arithmetic must do differently
    "llama": dict(gain_offset=0.0, fold_gains=True, qk_norm=False, post_norms=False,
                  scale_embeddings=False, gelu=False, query_scale_key="head_dim"),
    "gemma3_text": dict(gain_offset=1.0, fold_gains=False, qk_norm=True, post_norms=True,
                        scale_embeddings=True, gelu=True, query_scale_key="query_pre_attn_scalar"),
}


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
    the RoPE base and the sliding window. v2.Layer (exact-v2) adds its float gains."""

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
    """The fingerprint's network part, for exact-v3 and (`v2`) exact-v2 alike: the
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
