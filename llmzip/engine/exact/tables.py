"""The lookup tables of exact arithmetic: exp, sigmoid and RoPE, the same bits on every machine.

These are the only transcendental functions the exact network evaluates, and libm is free to
round them differently on each machine. So they are tables computed once with Python's
`decimal` (correctly rounded) and integers; no numpy, torch or libm arithmetic decides an
entry. Their values are part of the arithmetic: changing any entry changes archives.
"""

from __future__ import annotations

import contextlib
import decimal
import hashlib

import numpy as np

from llmzip.files import written_whole

__all__ = ["exp_table", "sigmoid_table", "rope_table", "persisted"]


def persisted(build, *args):
    """build(*args), built once per machine: kept in the model cache (`cache.cache_root`,
    under tables/) with a SHA-256 of its arrays that every load checks, so a damaged file
    is built again, never used. Building these tables in decimal would otherwise be a
    good part of every run's start (docs/PERFORMANCE.md). Where the cache cannot be
    written, the table is simply built each time."""
    from llmzip.cache import cache_root
    try:
        path = cache_root() / "tables" / f"{build.__name__}-{'-'.join(map(repr, args))}.npz"
    except (RuntimeError, KeyError):  # no home directory to find a cache in
        return build(*args)
    try:
        with np.load(path) as stored:
            arrays = [stored[f"a{i}"] for i in range(len(stored.files) - 1)]
            if str(stored["sha256"]) == _digest(arrays):
                return arrays[0] if len(arrays) == 1 else tuple(arrays)
    except Exception:  # absent, truncated, not an archive, other keys: built again
        pass
    table = build(*args)
    arrays = [table] if isinstance(table, np.ndarray) else list(table)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with written_whole(path) as f:
            np.savez(f, sha256=_digest(arrays), **{f"a{i}": a for i, a in enumerate(arrays)})
    return table


def _digest(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def exp_table(steps_per_nat: int, bits: int) -> np.ndarray:
    """T[k] = round(2^bits * exp(-k / steps_per_nat)), half to even, until it rounds to 0.

    float64 integers; the last entry is 0, so any gap past the table weighs nothing.
    """
    ctx = decimal.Context(prec=40)
    scale = decimal.Decimal(2) ** bits
    values, k = [], 0
    while True:
        x = ctx.divide(decimal.Decimal(-k), decimal.Decimal(steps_per_nat))
        value = int(ctx.multiply(scale, ctx.exp(x)).to_integral_value(
            rounding=decimal.ROUND_HALF_EVEN))
        values.append(value)
        if value == 0:
            return np.array(values, dtype=np.float64)
        k += 1


def sigmoid_table(half_range: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """sigmoid at -half_range + i/steps, and each entry's difference to the next (the last
    difference is 0), for linear interpolation."""
    ctx = decimal.Context(prec=40)
    n = 2 * half_range * steps
    values = []
    for i in range(n + 1):
        x = ctx.divide(decimal.Decimal(i - n // 2), decimal.Decimal(steps))
        values.append(float(ctx.divide(1, ctx.add(1, ctx.exp(-x)))))
    table = np.array(values, dtype=np.float64)
    return table, np.append(table[1:] - table[:-1], 0.0)


def _decimal_cos_sin(x: decimal.Decimal, ctx: decimal.Context):
    """Taylor series for cos and sin of |x| <= 1 in decimal arithmetic."""
    cos = sin = decimal.Decimal(0)
    term = decimal.Decimal(1)  # x^k / k!
    for k in range(60):
        if k % 4 == 0:
            cos = ctx.add(cos, term)
        elif k % 4 == 1:
            sin = ctx.add(sin, term)
        elif k % 4 == 2:
            cos = ctx.subtract(cos, term)
        else:
            sin = ctx.subtract(sin, term)
        term = ctx.divide(ctx.multiply(term, x), k + 1)
    return cos, sin


def rope_table(theta: float, head_dim: int, n_pos: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of pos * theta^(-2i/d), each (n_pos, head_dim), in the rotate-half layout
    (the first half of the channels repeated).

    Each frequency's base rotation comes from decimal series; positions follow by rotating in
    128-bit fixed point with Python integers, whose int / int conversion to float is
    correctly rounded. A row depends only on its position, not on n_pos.
    """
    fbits = 128
    one = 1 << fbits
    ctx = decimal.Context(prec=60)
    half = head_dim // 2
    cos = np.empty((n_pos, half), dtype=np.float64)
    sin = np.empty((n_pos, half), dtype=np.float64)
    log_theta = ctx.ln(decimal.Decimal(repr(theta)))
    for i in range(half):
        angle = ctx.exp(ctx.multiply(ctx.divide(decimal.Decimal(-2 * i), head_dim), log_theta))
        c1, s1 = _decimal_cos_sin(angle, ctx)
        c1, s1 = int(ctx.multiply(c1, one)), int(ctx.multiply(s1, one))  # to fixed point
        c, s = one, 0
        for pos in range(n_pos):
            cos[pos, i] = c / one
            sin[pos, i] = s / one
            c, s = (c * c1 - s * s1) >> fbits, (s * c1 + c * s1) >> fbits
    return np.concatenate([cos, cos], axis=1), np.concatenate([sin, sin], axis=1)


def grown(cache: dict, key, n_pos: int, build):
    """A table cached under key, covering at least n_pos positions: built once, and again
    only when a longer one is asked for (build(n) makes one of n positions), then at least
    twice as long: a decoder past the first table's end asks for one more position every
    step, and rebuilding the table every step would dominate its time
    (docs/PERFORMANCE.md)."""
    have = cache.get(key)
    if have is None or have[0].shape[0] < n_pos:
        cache[key] = build(n_pos if have is None else max(n_pos, 2 * have[0].shape[0]))
    return cache[key]


def log_table(steps_per_nat: int, n: int) -> np.ndarray:
    """L[c] = round(steps_per_nat * ln(2c + 1)) for c in 0..n, half to even: the log-odds, in
    steps, of a count c against half a count (int64)."""
    ctx = decimal.Context(prec=40)
    return np.array([int(ctx.multiply(decimal.Decimal(steps_per_nat), ctx.ln(2 * c + 1))
                         .to_integral_value(rounding=decimal.ROUND_HALF_EVEN))
                     for c in range(n + 1)], dtype=np.int64)


def exp_multipliers(steps_per_nat: int, bits: int, limit: int) -> np.ndarray:
    """M[k + limit] = round(2^bits * exp(k / steps_per_nat)) for k in -limit..limit, half to
    even (int64): multiplying by M and shifting right by `bits` scales by exp(k / steps)."""
    ctx = decimal.Context(prec=40)
    scale = decimal.Decimal(2) ** bits
    return np.array([int(ctx.multiply(scale, ctx.exp(ctx.divide(decimal.Decimal(k),
                                                                decimal.Decimal(steps_per_nat))))
                         .to_integral_value(rounding=decimal.ROUND_HALF_EVEN))
                     for k in range(-limit, limit + 1)], dtype=np.int64)
