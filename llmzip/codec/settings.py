"""What a run is asked to do, checked where it is made.

`Settings` are what an archive records (model, arithmetic, segment and group sizes,
adaptation, copies of long repeats, the layout of text inside binary input);
`Machine` is how this machine runs (threads, the decoder's memory) and never changes an
archive. Both are frozen and validated on construction: a bad value is a one-line
LlmzipError, never a hang (`segment_tokens=0` once looped forever) or a silent fallback
(`encoder="ful"` once took the slow path).
"""

from __future__ import annotations

import ctypes
import functools
import os
from dataclasses import dataclass, fields

from llmzip.container import Adaptation, Arithmetic
from llmzip.errors import LlmzipError

__all__ = ["Settings", "Machine", "SEGMENT_TOKENS", "GROUP_SIZE", "physical_memory"]

SEGMENT_TOKENS = (16, 2**14)  # the exact bounds allow 16,384 keys
GROUP_SIZE = (1, 256)
THREADS = (1, 1024)
DECODE_MEMORY_MB = 768  # default key/value cache budget of an exact decoder (`memory_budget`)
ARITHMETIC = {None: None, "auto": None, "exact": Arithmetic.EXACT_V3, "float": Arithmetic.FLOAT}
ADAPTATION = {a.label: a for a in Adaptation}
LAYOUTS = ("auto", "runs", "none")


def _check_range(name: str, value, bounds: tuple[int, int], optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not bounds[0] <= value <= bounds[1]:
        raise LlmzipError(f"{name} must be an integer from {bounds[0]:,} to {bounds[1]:,} "
                          f"(got {value!r})")


@dataclass(frozen=True)
class Settings:
    """How an archive is made; the archive records all of it."""

    model: str | None = None  # None: the default preset, or (decoding) the archive's model
    arithmetic: str | None = None  # "exact", "float", or None: exact where the model allows
    segment_tokens: int = 4096  # longest context; longer compresses better, decodes slower
    group_size: int = 8  # segments coded side by side in one range-coder stream
    encoder: str = "full"  # "full": one forward per segment (exact only); "stepped": steps
    adapt: str = "counts"  # "counts": learn the file's token counts as it goes (`adapt`); "none"
    copies: bool = True  # take long repeats out as copies of earlier bytes (`repeats`)
    compact: bool = True  # a preset's one-segment archive in the compact form (`compact`)
    layout: str = "auto"  # text runs in mixed input (`mixed`): "auto" (tar members where
    # it is a tar, else runs), "runs" (runs found in any file) or "none"

    def __post_init__(self):
        if self.arithmetic not in ARITHMETIC:
            raise LlmzipError(f"unknown arithmetic {self.arithmetic!r} (exact or float)")
        if self.encoder not in ("full", "stepped"):
            raise LlmzipError(f"unknown encoder {self.encoder!r} (full or stepped)")
        if self.adapt not in ADAPTATION:
            raise LlmzipError(f"unknown adaptation {self.adapt!r} ({' or '.join(ADAPTATION)})")
        if self.layout not in LAYOUTS:
            raise LlmzipError(f"unknown layout {self.layout!r} ({', '.join(LAYOUTS)})")
        if not isinstance(self.copies, bool):
            raise LlmzipError(f"copies must be True or False (got {self.copies!r})")
        _check_range("segment_tokens", self.segment_tokens, SEGMENT_TOKENS)
        _check_range("group_size", self.group_size, GROUP_SIZE)

    @property
    def model_name(self) -> str:
        from llmzip.models.presets import DEFAULT_MODEL
        return self.model or DEFAULT_MODEL

    def arithmetic_enum(self) -> Arithmetic | None:
        return ARITHMETIC[self.arithmetic]

    def adaptation_enum(self) -> Adaptation:
        return ADAPTATION[self.adapt]

    @staticmethod
    def split(model: str | None, options: dict) -> tuple["Settings", "Machine"]:
        """Codec(model, **options): each option goes to the class that has the field."""
        names = {f.name for f in fields(Settings)}, {f.name for f in fields(Machine)}
        unknown = set(options) - names[0] - names[1]
        if unknown:
            raise LlmzipError(f"unknown setting {sorted(unknown)[0]!r}")
        return (Settings(model, **{k: v for k, v in options.items() if k in names[0]}),
                Machine(**{k: v for k, v in options.items() if k in names[1]}))


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def release_freed_memory() -> None:
    """Give the memory a finished compression or decompression freed back to the system.

    glibc keeps freed memory for reuse: once numpy has freed a large array, arrays up to
    that size (to 32 MB) come from the heap, and the heap's free pages stay resident, so
    whatever the process does next (`llmzip bench`, a `Codec` kept for many files,
    `compress a b c`) would peak that much higher (docs/PERFORMANCE.md). Only where the C
    library has malloc_trim (glibc); elsewhere nothing."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None


@dataclass(frozen=True)
class Machine:
    """How this machine runs a codec; never changes an archive."""

    threads: int | None = None  # None: all cores, tuned while decoding
    decode_memory_mb: int | None = None  # KV caches of groups decoded together (see budget)
    decode_batch: int | None = None  # at most this many segments per decoding wave
    device: str = "auto"  # auto, cpu, cuda, cuda:N or torch:cpu (`engine.exact.backend`)

    def __post_init__(self):
        _check_range("threads", self.threads, THREADS, optional=True)
        _check_range("decode_memory_mb", self.decode_memory_mb, (1, 2**24), optional=True)
        _check_range("decode_batch", self.decode_batch, (1, 2**16), optional=True)

    def memory_budget(self, engine) -> int:
        """Bytes of KV cache a decoder may hold: as asked, else what a GPU backend's device
        offers (`cache_budget`), else 768 MiB (exact-v3's int8 cache: 15 segments of 4,096
        tokens with the default model; alice29's 11 fit), or a quarter of the memory for
        exact-v2's float64 cache, as llmzip 0.1 had it. With
        1 GiB, a long file's decode with torch's int8 matmul loaded beside numba went over
        the 1.5 GB we hold the decoder to (docs/PERFORMANCE.md)."""
        if self.decode_memory_mb:
            return self.decode_memory_mb << 20
        on_device = getattr(engine, "cache_budget", lambda: None)()
        if on_device:  # a GPU's caches: half of its free memory
            return on_device
        if engine.arithmetic == Arithmetic.EXACT_V3:
            return DECODE_MEMORY_MB << 20
        return physical_memory() // 4

    def apply_threads(self, float_threads: int | None = None) -> None:
        """Thread counts for torch (the float engine: as recorded) and numba."""
        n = float_threads or self.threads
        if n:
            import numba
            import torch
            torch.set_num_threads(n)
            numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))

    @staticmethod
    def torch_threads() -> int:
        import torch
        return torch.get_num_threads()

    def tuner(self):
        """A thread tuner for exact decoding, unless the user fixed the thread count."""
        import numba

        from llmzip.codec.lockstep import ThreadTuner
        return ThreadTuner(self.threads or numba.config.NUMBA_NUM_THREADS) \
            if self.threads is None else None

    def waves(self, groups: list, engine) -> list[list]:
        """Consecutive groups decoded together, as many as the memory budget (and
        decode_batch) allow: one step for many rows costs far less than one step each.
        A group that alone exceeds the budget is refused before anything is allocated. An
        engine whose tables depend on the batch gets its encoder's layout: a group a wave."""
        budget = self.memory_budget(engine)
        for group, _ in groups:
            alone = engine.cache_bytes(len(group), max(b.n_tokens for b in group))
            if alone > budget:
                raise LlmzipError(
                    f"decoding needs {-(-alone >> 20):,} MB of memory for one group of segments, "
                    f"more than the {budget >> 20:,} MB allowed; raise it with --memory")
        if not engine.batch_invariant:
            return [[group] for group in groups]
        waves, rows, longest = [], 0, 0
        for group, stream in groups:
            g_longest = max(b.n_tokens for b in group)
            cost = engine.cache_bytes(rows + len(group), max(longest, g_longest))
            too_many = self.decode_batch and rows + len(group) > self.decode_batch
            if waves and (cost > budget or too_many):
                waves.append([])
                rows, longest = 0, 0
            if not waves:
                waves.append([])
            waves[-1].append((group, stream))
            rows, longest = rows + len(group), max(longest, g_longest)
        return waves

