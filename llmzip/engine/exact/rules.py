"""The rules of exact arithmetic: every number the coder depends on, the same on any machine.

The network's matrix products run over integers whose every partial sum fits the
accumulator, so any kernel, order, thread count or batch gives the same integers (see
`cpu.products`). Everything else is here, written once as numba loops that the encoder's full
forward and the decoder's steps both call: single IEEE-754 operations (+ - x / sqrt,
round-half-even, floor) in a fixed order, never fused into FMAs (numba does not contract
without fastmath), and exp, sigmoid and RoPE from the decimal tables of `tables`.

These rules are exact-v3 (`VERSION`, part of every model fingerprint). Against exact-v2
(`v2`, kept only to read its archives):
- matrix inputs are int16 with an L1 norm of at most 130,000, so that with int8 weights
  every product sum stays below 2^24: exact in one float32 BLAS call or in int32, instead
  of two int8 limbs (measured on corpus slices: no change in bits per byte);
- keys and values are int8 per token and head instead of int22 / int20 on proven fixed
  scales, and attention weights are scaled to sum to 2^16 and absorb each value's scale, so
  weights x values is an int32-exact sum too; the KV cache is 8 times smaller;
- square roots are IEEE sqrt (numba and numpy), where v2 used torch.sqrt, which on x86
  (MKL/SLEEF vector code) is not correctly rounded for about 1% of inputs.
"""

from __future__ import annotations

import functools
import math
import types

import numpy as np
from numba import njit, prange

from llmzip.engine.exact.tables import exp_table, persisted, sigmoid_table

__all__ = ["VERSION", "frequencies", "activation"]

VERSION = "exact-v3"  # part of every fingerprint: change it when any number changes

ACT_MAX = 127 * 256 + 127.0  # activations and queries: int16, two int8 limbs where needed
WEIGHT_MAX = 127.0  # weights: int8 per output channel
FP32_EXACT = float(2**24)  # integers a float32 sum holds exactly
L1_CAP = 130_000.0  # sum |x| of a matmul input: (L1 + K rounding) x 127 stays below 2^24
KV_MAX = 127.0  # keys and values: int8 per token and head
LOGIT_STEPS = 256  # attention logits compared at 1/256 nat
ATT_BITS = 18  # attention weights before normalization: integers up to 2^18
WEIGHT_TOTAL = float(2**16)  # normalized attention weights sum to about this
MAX_KEYS = 2**14  # longest attention span the bounds allow
EXP_STEPS_PER_NAT = 256  # vocabulary logits compared at 1/256 nat (<= 0.2% per probability)
FREQ_BITS = 32  # the most likely token gets about 2^32; every token gets at least 1
SIGMOID_RANGE, SIGMOID_STEPS = 16, 128  # sigmoid on [-16, 16] every 1/128, interpolated
GELU_TANH_K = 1.5957691216057308  # 2 sqrt(2/pi): gelu_tanh(x) = x sigmoid(k (x + c x^3))
GELU_TANH_C = 0.044715


ATTENTION_EXP = persisted(exp_table, LOGIT_STEPS, ATT_BITS)  # last entry is 0
_VOCAB_EXP = persisted(exp_table, EXP_STEPS_PER_NAT, FREQ_BITS)
_SIGMOID, _SIGMOID_DIFF = persisted(sigmoid_table, SIGMOID_RANGE, SIGMOID_STEPS)


# --- kernels over rows ---------------------------------------------------------------------

SERIAL_ROWS = 2  # up to this many rows a kernel over rows runs on the calling thread


def over_rows(kernel):
    """A kernel parallel over the rows of its first argument (`prange`) that runs unthreaded
    for SERIAL_ROWS rows or fewer: a decoder step of one row makes ~500 such calls, and
    handing each to numba's threads costs more than running it in place, up to
    SERIAL_ROWS rows (docs/PERFORMANCE.md). Both forms compile the same
    loop body and neither changes an operation: prange only shares the iterations out. The
    unthreaded form has its own name, and so its own entry in numba's cache."""
    py_func = kernel.py_func
    twin = types.FunctionType(py_func.__code__, py_func.__globals__, py_func.__name__ + "_serial",
                              py_func.__defaults__, py_func.__closure__)
    twin.__qualname__ = py_func.__qualname__ + "_serial"
    options = {k: v for k, v in kernel.targetoptions.items() if k == "fastmath"}
    serial = njit(cache=True, **options)(twin)

    @functools.wraps(py_func)
    def run(*args):
        return (run.serial if args[0].shape[0] <= SERIAL_ROWS else run.parallel)(*args)

    run.parallel, run.serial = kernel, serial
    return run


# --- quantization ------------------------------------------------------------------------

@njit(inline="always")
def _quantize_row(x, l1_cap, q):
    """q = round(x / s) with max |q| = 32767, then s grown so that sum |q| <= l1_cap + len(x).

    The L1 of the first rounding is an exact integer sum, so s never depends on summation
    order. Returns s. (Growing s by L1 / cap bounds sum |x| / s by cap + len(x) / 2, and
    rounding adds at most len(x) / 2 more.)"""
    amax = 0.0
    for v in x:
        amax = max(amax, abs(v))
    scale = amax / ACT_MAX if amax > 0 else 1.0
    if l1_cap < math.inf:
        l1 = 0.0
        for v in x:
            l1 += abs(np.round(v / scale))
        if l1 > l1_cap:
            scale = scale * (l1 / l1_cap)
    for k in range(x.shape[0]):
        q[k] = np.round(x[k] / scale)
    return scale


@njit(inline="always")
def _inv_rms(q, scale, eps):
    """1 / rms(q * scale), divided by scale: RMSNorm(x) = q * _inv_rms(q, scale, eps)."""
    sum_sq = 0.0
    for v in q:
        sum_sq += v * v  # integers below 2^53: exact in any order
    return 1.0 / math.sqrt(sum_sq / q.shape[0] + eps / (scale * scale))


@over_rows
@njit(parallel=True, cache=True)
def quantize_rows(x, q, scale):
    """Matrix inputs: each row of x (R, K) as integers q (R, K) times scale (R,)."""
    for r in prange(x.shape[0]):
        scale[r] = _quantize_row(x[r], L1_CAP, q[r])


@over_rows
@njit(parallel=True, cache=True)
def norm_quantize_rows(h, gain, eps, q, factor):
    """Matrix inputs q (R, K) with q * factor = RMSNorm(h) (* gain when one is given).

    A gain folded into the next weights is passed empty (Llama); otherwise (Gemma, whose
    gains span 0.16 to 300) the normalized row is scaled by the gain and quantized again."""
    for r in prange(h.shape[0]):
        tmp = np.empty(h.shape[1])
        scale = _quantize_row(h[r], math.inf if gain.size else L1_CAP, tmp)
        inv = _inv_rms(tmp, scale, eps)
        if gain.size == 0:
            q[r] = tmp
            factor[r] = inv
        else:
            for k in range(tmp.shape[0]):
                tmp[k] = (tmp[k] * inv) * gain[k]
            factor[r] = _quantize_row(tmp, L1_CAP, q[r])


@over_rows
@njit(parallel=True, cache=True)
def scale_products(acc, row, col, out):
    """out = (acc * row) * col: integer products back to real units."""
    for r in prange(acc.shape[0]):
        for n in range(acc.shape[1]):
            out[r, n] = (np.float64(acc[r, n]) * row[r]) * col[n]


@over_rows
@njit(parallel=True, cache=True)
def add_post_norm(h, y, gain, eps):
    """h += y, or h += RMSNorm(y) * gain where a post-norm gain is given (Gemma 3)."""
    for r in prange(h.shape[0]):
        if gain.size == 0:
            for k in range(h.shape[1]):
                h[r, k] = h[r, k] + y[r, k]
        else:
            q = np.empty(y.shape[1])
            scale = _quantize_row(y[r], math.inf, q)
            inv = _inv_rms(q, scale, eps)
            for k in range(h.shape[1]):
                h[r, k] = h[r, k] + (q[k] * inv) * gain[k]


@over_rows
@njit(parallel=True, cache=True)
def head_norm(x, gain, eps):
    """Gemma 3's QK-norm in place: each (row, head) vector RMS-normalized, times gain."""
    rows, heads, _ = x.shape
    for i in prange(rows * heads):
        norm_head(x[i // heads, i % heads], gain, eps)


@njit(inline="always")
def norm_head(v, gain, eps):
    """One head's vector (D,) of `head_norm`, in place."""
    q = np.empty(v.shape[0])
    scale = _quantize_row(v, math.inf, q)
    inv = _inv_rms(q, scale, eps)
    for d in range(v.shape[0]):
        v[d] = (q[d] * inv) * gain[d]


@over_rows
@njit(parallel=True, cache=True)
def rotate(x, positions, cos, sin):
    """RoPE in place in the rotate-half layout: x * cos + rotate_half(x) * sin.

    x (R, heads, D); positions (R,)."""
    rows, heads, _ = x.shape
    for i in prange(rows * heads):
        p = positions[i // heads]
        rotate_head(x[i // heads, i % heads], cos[p], sin[p])


@njit(inline="always")
def rotate_head(v, cos_p, sin_p):
    """One head's vector (D,) of `rotate`, in place, with the tables' rows at its position."""
    half = v.shape[0] // 2
    old = v.copy()
    for d in range(v.shape[0]):
        other = -old[d + half] if d < half else old[d - half]
        v[d] = old[d] * cos_p[d] + other * sin_p[d]


@njit(inline="always")
def _sigmoid(x, table, diff):
    pos = (min(max(x, -SIGMOID_RANGE), SIGMOID_RANGE) + SIGMOID_RANGE) * SIGMOID_STEPS
    index = math.floor(pos)
    return table[int(index)] + (pos - index) * diff[int(index)]


@over_rows
@njit(parallel=True, cache=True)
def gated_activation(gate_up, gelu, table, diff, out):
    """out = act(gate) * up for gate_up = [gate | up] (R, 2F): SiLU (Llama) or the tanh
    GELU (Gemma 3), through the sigmoid table."""
    f = out.shape[1]
    for r in prange(out.shape[0]):
        for k in range(f):
            g = gate_up[r, k]
            if gelu:
                inner = ((g * g) * g) * GELU_TANH_C + g
                out[r, k] = (g * _sigmoid(inner * GELU_TANH_K, table, diff)) * gate_up[r, f + k]
            else:
                out[r, k] = (g * _sigmoid(g, table, diff)) * gate_up[r, f + k]


def activation(gate_up: np.ndarray, gelu: bool) -> np.ndarray:
    out = np.empty((gate_up.shape[0], gate_up.shape[1] // 2))
    gated_activation(gate_up, gelu, _SIGMOID, _SIGMOID_DIFF, out)
    return out


# --- keys, values and queries ----------------------------------------------------------------

@over_rows
@njit(parallel=True, cache=True)
def quantize_kv(x, q, scale):
    """Keys or values (R, H, D) as int8 q with a scale per (row, head) (R, H): each vector
    on its own scale, a zero vector as zeros with scale 0."""
    rows, heads, _ = x.shape
    for i in prange(rows * heads):
        r, h = i // heads, i % heads
        scale[r, h] = quantize_kv_head(x[r, h], q[r, h])


@njit(inline="always")
def quantize_kv_head(v, q):
    """One vector (D,) of `quantize_kv` into q (D,); returns its scale."""
    amax = 0.0
    for d in range(v.shape[0]):
        amax = max(amax, abs(v[d]))
    s = amax / KV_MAX
    for d in range(v.shape[0]):
        q[d] = np.round(v[d] / s) if s > 0 else 0
    return s


@over_rows
@njit(parallel=True, cache=True)
def quantize_queries(x, q, scale):
    """Queries (R, heads, D) as integers q with scale (R, heads), sum |q| <= 130,000 + D,
    so that q . k with int8 keys stays below 2^24."""
    rows, heads, _ = x.shape
    for i in prange(rows * heads):
        scale[i // heads, i % heads] = quantize_query(x[i // heads, i % heads],
                                                      q[i // heads, i % heads])


@njit(inline="always")
def quantize_query(v, q):
    """One query (D,) of `quantize_queries` into q (D,); returns its scale."""
    return _quantize_row(v, L1_CAP, q)


# --- attention weights -------------------------------------------------------------------

_SIGN_FREE = np.int64(0x7FFFFFFFFFFFFFFF)


@njit(inline="always")
def top_of(x):
    """max(x) of finite float64, exact: on their bits, mapped to int64 in the floats' order
    (negatives' magnitude bits flipped), an integer max that LLVM vectorizes, where the
    float max it would not (a third of the decoder's attention weights' time)."""
    bits = x.view(np.int64)
    top = np.int64(-0x7FFFFFFFFFFFFFFF - 1)
    for t in range(bits.shape[0]):
        b = bits[t]
        top = max(top, b ^ ((b >> 63) & _SIGN_FREE))
    return np.int64(top ^ ((top >> 63) & _SIGN_FREE)).view(np.float64)


@njit(fastmath={"reassoc", "nsz"})
def _integer_sum(x):
    """Sum of float64 integers whose total stays below 2^53: exact in any order, so LLVM
    may vectorize it. Not inlined: inlined, numba compiles it with its caller's flags,
    which do not allow reordering, and it runs scalar (docs/PERFORMANCE.md)."""
    total = 0.0
    for t in range(x.shape[0]):
        total += x[t]
    return total


@njit(inline="always")
def fold_weights(logits, v_scale, top_vs, table, folded):
    """One query's attention: logits (n,) in 1/256-nat steps -> integer weights `folded`
    for int8 values on scales v_scale (n,), whose largest is top_vs (`top_of`: the same
    for every query of a KV head); returns the output's scale, so that the attention
    output is (folded . values) * scale. Overwrites logits.

    w_t = table[round(max - logit_t)] are integers up to 2^18 with an exact sum W; the
    folded weights round((w_t * (2^16 / W / max vs)) * vs_t) sum to at most 2^16 + n/2,
    so folded . values is exact in int32 and in float32 (below 2^24)."""
    top = top_of(logits)
    last = table.shape[0] - 1.0
    index = np.empty(logits.shape[0], np.int32)  # AVX2 converts float64 to int32 only:
    for t in range(logits.shape[0]):  # an int64 index makes this loop scalar
        index[t] = np.int32(np.round(min(top - logits[t], last)))
    for t in range(logits.shape[0]):
        logits[t] = table[index[t]]
    total = _integer_sum(logits)
    factor = (WEIGHT_TOTAL / total) / top_vs if top_vs > 0 else 0.0
    for t in range(logits.shape[0]):
        folded[t] = np.round((logits[t] * factor) * v_scale[t])
    return top_vs / WEIGHT_TOTAL


@njit(parallel=True, cache=True)
def fold_score_block(scores, q_scale, q_pos, k_factor, v_scale, k_pos0, window, table,
                     folded, out_scale):
    """Encoder: integer scores (R, Tk) of R queries against the keys at positions k_pos0..
    become folded weights (R, Tk), 0 outside each query's causal (and windowed) span, with
    each query's output scale (R,). k_factor: each key's scale times the logit factor.
    The per-query rules are the decoder's (`cpu.attention.attend_cached`): `fold_weights`."""
    for r in prange(scores.shape[0]):
        p = q_pos[r]
        lo = max(0, p - window + 1 - k_pos0) if window > 0 else 0
        hi = p - k_pos0 + 1
        logits = np.empty(hi - lo)
        for t in range(lo, hi):
            logits[t - lo] = scores[r, t] * (q_scale[r] * k_factor[t])
        folded[r, :lo] = 0
        folded[r, hi:] = 0
        out_scale[r] = fold_weights(logits, v_scale[lo:hi], top_of(v_scale[lo:hi]), table,
                                    folded[r, lo:hi])


# --- the vocabulary ----------------------------------------------------------------------

@njit(parallel=True, cache=True)
def _frequencies(logits, table, out):
    last = table.shape[0] - 1.0
    for r in prange(logits.shape[0]):
        top = -math.inf
        for v in logits[r]:
            top = max(top, v)
        for t in range(logits.shape[1]):
            pos = min((top - logits[r, t]) * EXP_STEPS_PER_NAT, last)
            out[r, t] = max(table[int(np.round(pos))], 1.0)


def frequencies(logits: np.ndarray, serial: bool = False) -> np.ndarray:
    """(N, V) logits -> (N, V) int64 frequencies, each >= 1, the top one about 2^32.

    A max, one subtraction, a scaling by 256, round-half-even and a decimal-built exp table:
    given identical logits, identical integers everywhere. The torch engines (float, v2)
    use it too, serially: numba's threads waking between torch's would fight for the cores."""
    logits = np.ascontiguousarray(logits, dtype=np.float64)
    out = np.empty(logits.shape, dtype=np.int64)
    if serial:
        import numba
        threads = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            _frequencies(logits, _VOCAB_EXP, out)
        finally:
            numba.set_num_threads(threads)
    else:
        _frequencies(logits, _VOCAB_EXP, out)
    return out
