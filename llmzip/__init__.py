"""llmzip: lossless compression with a language model and a range coder.

    >>> import llmzip
    >>> blob = llmzip.compress(b"some text")
    >>> llmzip.decompress(blob)
    b'some text'

`compress`/`decompress` load the model on each call; a `Codec` keeps it loaded between
calls and is what to use for more than one file.
"""

import os

# After each BLAS call OpenBLAS's worker threads spin for 2^28 cycles by default, on the
# cores numba's threads need for every loop in between; 2^4 cycles lets them sleep at once
# (docs/PERFORMANCE.md). OpenBLAS reads this when numpy is first imported, so it only
# helps where llmzip is imported first (the CLI is).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
# Likewise numba's OpenMP threads spin ~300,000 rounds after each parallel loop, into the
# next BLAS call's time; 10,000 is enough for numba and leaves BLAS its cores.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")
# Under `accelerate launch` or torchrun the processes of one machine share its cores.
if os.environ.get("LOCAL_WORLD_SIZE", "1") != "1":
    _per_process = str(max(1, (os.cpu_count() or 1) // int(os.environ["LOCAL_WORLD_SIZE"])))
    for _name in ("OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(_name, _per_process)

from llmzip.codec.codec import Codec, CompressStats
from llmzip.errors import (
    CorruptArchiveError,
    LlmzipError,
    ModelMismatchError,
    ModelUnavailableError,
)
from llmzip.models.presets import DEFAULT_MODEL, PRESETS

__version__ = "0.1.0"
__all__ = ["compress", "decompress", "Codec", "CompressStats", "LlmzipError",
           "CorruptArchiveError", "ModelMismatchError", "ModelUnavailableError", "PRESETS",
           "DEFAULT_MODEL", "__version__"]


def compress(data: bytes, model: str = DEFAULT_MODEL, **settings) -> bytes:
    """Archive bytes for `data`; equals `Codec(model, **settings).compress(data)`."""
    return Codec(model, **settings).compress(data)


def decompress(blob: bytes, model: str | None = None) -> bytes:
    """The original bytes; the model is the one the archive names unless given."""
    return Codec(model).decompress(blob)
