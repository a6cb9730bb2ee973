"""Context -> next-token integer frequency tables: where the model's numbers meet the coder.

Both directions call `frequencies` on the logits of the same computation, so the encoder and
the decoder cannot drift apart by construction. It is a softmax made of operations whose
results do not depend on the machine: a max, one IEEE subtraction, scaling by a power of
two, round-half-even, and a lookup in a table built with `decimal` (never libm's exp). Given
bit-identical logits it returns bit-identical integers everywhere.

`FloatEngine` runs a transformers model in float32 with its KV cache. Its logits depend on
thread count, batch shape and CPU, so its archives decode only under the settings that made
them, which the header records; `exact.ExactEngine` removes that limit.
"""

from __future__ import annotations

import decimal
import platform
from typing import Protocol

import numpy as np
import torch

from .container import Arithmetic

__all__ = ["frequencies", "lookup", "exp_table", "Engine", "Stepper", "FloatEngine",
           "EXP_STEPS_PER_NAT", "FREQ_BITS"]

EXP_STEPS_PER_NAT = 256  # logits are compared at 1/256 nat: <= 0.2% error in any probability
FREQ_BITS = 32  # the most likely token gets about 2^32; every token gets at least 1


def exp_table(steps_per_nat: int, bits: int) -> torch.Tensor:
    """T[k] = round(2^bits * exp(-k / steps_per_nat)) until it rounds to 0 (float64 integers).

    Built with decimal arithmetic, which is correctly rounded and the same on every machine.
    """
    ctx = decimal.Context(prec=40)
    scale = decimal.Decimal(2) ** bits
    values = []
    k = 0
    while True:
        x = ctx.divide(decimal.Decimal(-k), decimal.Decimal(steps_per_nat))
        v = int(ctx.multiply(scale, ctx.exp(x)).to_integral_value(
            rounding=decimal.ROUND_HALF_EVEN))
        values.append(v)
        if v == 0:
            return torch.tensor(values, dtype=torch.float64)
        k += 1


_ROUNDING_MAGIC = 2.0**52  # x + 2^52 rounds x half-to-even into the low mantissa bits
_ROUNDING_MAGIC_BITS = 0x4330000000000000  # the bit pattern of 2^52


def lookup(table: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """table[round(position)] for float64 positions in [0, len(table) - 1]; overwrites
    `position`. One IEEE addition does the rounding (float-to-int64 has no AVX2 instruction)."""
    index = position.add_(_ROUNDING_MAGIC).view(torch.int64).sub_(_ROUNDING_MAGIC_BITS)
    return torch.take(table, index)


def use_large_allocation_cache() -> None:
    """Keep freed large blocks in glibc's heap: fresh 100 MB temporaries otherwise cost page
    faults that take longer than the arithmetic on them (5x on attention). Speed only."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, (1 << 31) - 1)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


_EXP = exp_table(EXP_STEPS_PER_NAT, FREQ_BITS)


def frequencies(logits: torch.Tensor) -> np.ndarray:
    """(N, V) float logits -> (N, V) int64 frequencies, each >= 1."""
    logits = logits.to(torch.float64)
    gap = torch.sub(logits.amax(dim=-1, keepdim=True), logits)  # >= 0, one IEEE subtraction
    table_pos = gap.mul_(EXP_STEPS_PER_NAT).clamp_(max=len(_EXP) - 1)
    return lookup(_EXP, table_pos).clamp_(min=1).to(torch.int64).numpy()


class Stepper(Protocol):
    """KV-cached decoding of a batch of segments, one token per segment per call."""

    def step(self, input_ids: np.ndarray) -> np.ndarray:
        """Feed one token per row; return each row's next-token frequencies (rows, V)."""


class Engine(Protocol):
    arithmetic: Arithmetic
    vocab_size: int
    context_start_id: int

    def stepper(self, n_rows: int, max_len: int) -> Stepper: ...


class _FloatStepper:
    def __init__(self, model, n_rows: int):
        from transformers import DynamicCache
        self.model = model
        self.cache = DynamicCache()
        self.n_rows = n_rows

    @torch.inference_mode()
    def step(self, input_ids: np.ndarray) -> np.ndarray:
        ids = torch.as_tensor(np.asarray(input_ids, np.int64)).view(self.n_rows, 1)
        out = self.model(input_ids=ids, past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        return frequencies(out.logits[:, -1, :])


class FloatEngine:
    """The model's own float32 forward with transformers' KV cache (not portable)."""

    arithmetic = Arithmetic.FLOAT

    def __init__(self, loaded):
        self.loaded = loaded
        self.vocab_size = loaded.vocab_size
        self.context_start_id = loaded.context_start_id

    def fingerprint(self) -> bytes:
        return self.loaded.float_fingerprint()

    @staticmethod
    def runtime() -> str:
        """What else the decoder must match: the torch build and CPU architecture."""
        return f"torch {torch.__version__} {platform.machine()}"

    def stepper(self, n_rows: int, max_len: int = 0) -> _FloatStepper:
        return _FloatStepper(self.loaded.hf_model, n_rows)
