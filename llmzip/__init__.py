"""llmzip: lossless compression with a language model and a range coder.

    >>> import llmzip
    >>> blob = llmzip.compress(b"some text")
    >>> llmzip.decompress(blob)
    b'some text'

`compress`/`decompress` load the model on each call; a `Codec` keeps it loaded between
calls and is what to use for more than one file.
"""

from .codec import Codec, CompressStats
from .errors import CorruptArchiveError, LlmzipError, ModelMismatchError, ModelUnavailableError
from .models import DEFAULT_MODEL, PRESETS

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
