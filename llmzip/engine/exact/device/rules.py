"""exact-v3's rules in torch: `engine.exact.rules`, operation for operation, on any device.

Each function computes, over whole tensors, what its numba namesake computes loop by loop:
the same IEEE-754 float64 operations in the same order, so the same bits. What makes that
hold on a GPU as on the CPU:
- every operation is its own eager kernel: + - x / and sqrt are correctly rounded in
  float64 on CUDA and on x86, and nothing fuses a multiply into an add (no addcmul, lerp,
  add with alpha, torch.compile);
- a division is always tensor / tensor: `tensor / python_float` is computed on CUDA as
  a * (1 / b), and `python_float / tensor` as reciprocal() * a, neither correctly rounded;
- sums and maxima are of integers below 2^53, or maxima, which are exact in any order;
- torch.round is round-half-even, as numpy's;
- torch's CPU sqrt may run MKL's vector code, which rounds some inputs wrongly: on the CPU
  the square root is numpy's (`_sqrt`), the one host step of this module.
`tests/test_backends.py` holds each function to its numba namesake, bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch

from llmzip.engine.exact import rules as ar

__all__ = ["quantize", "norm_quantize", "scale_products", "add_post_norm", "head_norm",
           "rotate", "activation", "quantize_kv", "fold_weights", "frequencies", "Tables"]

F64 = torch.float64


def _c(value: float, like: torch.Tensor) -> torch.Tensor:
    """A constant as a tensor of like's shape and device: the divisor or dividend of a
    correctly rounded division (see the module's docstring)."""
    return torch.full_like(like, value, dtype=F64)


def _sqrt(x: torch.Tensor) -> torch.Tensor:
    if x.device.type == "cpu":
        return torch.from_numpy(np.sqrt(x.numpy()))
    return torch.sqrt(x)


def quantize(x: torch.Tensor, l1_cap: float | None):
    """`rules._quantize_row` over x's last axis: q = round(x / s), max |q| = ACT_MAX, s grown
    until sum |q| <= l1_cap + K (no cap: None). Returns q (integer-valued float64) and s."""
    amax = x.abs().amax(-1)
    scale = torch.where(amax > 0, amax / _c(ar.ACT_MAX, amax), torch.ones_like(amax))
    if l1_cap is not None:
        l1 = torch.round(x / scale[..., None]).abs().sum(-1)  # integers: exact in any order
        scale = torch.where(l1 > l1_cap, scale * (l1 / _c(l1_cap, l1)), scale)
    return torch.round(x / scale[..., None]), scale


def _inv_rms(q: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    sum_sq = (q * q).sum(-1)  # integers below 2^53
    inner = sum_sq / _c(q.shape[-1], sum_sq) + _c(eps, scale) / (scale * scale)
    return torch.ones_like(inner) / _sqrt(inner)


def norm_quantize(h: torch.Tensor, gain: torch.Tensor | None, eps: float):
    """`rules.norm_quantize_rows`: matrix inputs q with q * factor = RMSNorm(h) (* gain)."""
    q, scale = quantize(h, None if gain is not None else ar.L1_CAP)
    inv = _inv_rms(q, scale, eps)
    if gain is None:
        return q, inv
    return quantize((q * inv[..., None]) * gain, ar.L1_CAP)


def scale_products(acc: torch.Tensor, row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """`rules.scale_products`: (acc * row) * col, integer products back to real units."""
    return (acc.to(F64) * row[:, None]) * col[None, :]


def add_post_norm(h: torch.Tensor, y: torch.Tensor, gain: torch.Tensor | None,
                  eps: float) -> torch.Tensor:
    """`rules.add_post_norm`: h + y, or h + RMSNorm(y) * gain (Gemma 3)."""
    if gain is None:
        return h + y
    q, scale = quantize(y, None)
    return h + (q * _inv_rms(q, scale, eps)[..., None]) * gain


def head_norm(x: torch.Tensor, gain: torch.Tensor, eps: float) -> torch.Tensor:
    """`rules.head_norm`: each head's vector (..., D) RMS-normalized, times gain."""
    q, scale = quantize(x, None)
    return (q * _inv_rms(q, scale, eps)[..., None]) * gain


def rotate(x: torch.Tensor, cos_p: torch.Tensor, sin_p: torch.Tensor) -> torch.Tensor:
    """`rules.rotate`: RoPE in the rotate-half layout, x (..., H, D) at its rows' table rows
    cos_p, sin_p (..., 1, D): x cos + rotate_half(x) sin, two products and a sum."""
    half = x.shape[-1] // 2
    other = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos_p + other * sin_p


class Tables:
    """The decimal tables of `rules` on a device: exp for attention and the vocabulary,
    the sigmoid and its differences."""

    def __init__(self, device):
        def put(a):
            return torch.as_tensor(np.asarray(a, np.float64), device=device)
        self.attention_exp, self.vocab_exp = put(ar.ATTENTION_EXP), put(ar._VOCAB_EXP)
        self.sigmoid, self.sigmoid_diff = put(ar._SIGMOID), put(ar._SIGMOID_DIFF)


def _sigmoid(x: torch.Tensor, tables: Tables) -> torch.Tensor:
    pos = (x.clamp(-ar.SIGMOID_RANGE, ar.SIGMOID_RANGE) + ar.SIGMOID_RANGE) * ar.SIGMOID_STEPS
    index = torch.floor(pos)
    i = index.long()
    return tables.sigmoid[i] + (pos - index) * tables.sigmoid_diff[i]


def activation(gate_up: torch.Tensor, gelu: bool, tables: Tables) -> torch.Tensor:
    """`rules.activation`: act(gate) * up for gate_up = [gate | up], SiLU or tanh GELU."""
    f = gate_up.shape[-1] // 2
    g, up = gate_up[..., :f], gate_up[..., f:]
    if gelu:
        inner = ((g * g) * g) * ar.GELU_TANH_C + g
        return (g * _sigmoid(inner * ar.GELU_TANH_K, tables)) * up
    return (g * _sigmoid(g, tables)) * up


def quantize_kv(x: torch.Tensor):
    """`rules.quantize_kv`: vectors (..., D) as int8 with a scale each; zero vectors as
    zeros with scale 0."""
    s = x.abs().amax(-1) / _c(ar.KV_MAX, x[..., 0])
    safe = torch.where(s > 0, s, torch.ones_like(s))
    q = torch.where(s[..., None] > 0, torch.round(x / safe[..., None]), torch.zeros_like(x))
    return q.to(torch.int8), s


def fold_weights(logits: torch.Tensor, v_scale: torch.Tensor, table: torch.Tensor):
    """`rules.fold_weights` over the last axis: logits (..., n) in 1/256-nat steps, -inf
    outside each query's span, and the values' scales (..., n), 0 outside it -> the folded
    integer weights (..., n) and the output's scale (...)."""
    top = logits.amax(-1, keepdim=True)
    last = float(table.shape[0] - 1)
    weights = table[torch.round((top - logits).clamp(max=last)).long()]
    total = weights.sum(-1)  # integers below 2^53
    top_vs = v_scale.amax(-1)
    positive = top_vs > 0
    factor = torch.where(positive, (_c(ar.WEIGHT_TOTAL, total) / total)
                         / torch.where(positive, top_vs, torch.ones_like(top_vs)),
                         torch.zeros_like(top_vs))
    folded = torch.round((weights * factor[..., None]) * v_scale)
    return folded, top_vs / _c(ar.WEIGHT_TOTAL, top_vs)


def frequencies(logits: torch.Tensor, tables: Tables) -> torch.Tensor:
    """`rules.frequencies`: (N, V) logits -> (N, V) int64, each >= 1, the top about 2^32."""
    table = tables.vocab_exp
    top = logits.amax(-1, keepdim=True)
    pos = ((top - logits) * ar.EXP_STEPS_PER_NAT).clamp(max=float(table.shape[0] - 1))
    return table[torch.round(pos).long()].clamp(min=1.0).to(torch.int64)
