"""The classical codecs llmzip is compared with, each at its strongest common setting.

gzip -9, bzip2 -9, xz -9e, zstd -19 with long mode and brotli -11, run through Python
libraries so a benchmark needs no external tools; `version` says which library ran. The
first three come with Python; zstd and brotli with the `bench` extra
(`pip install 'llmzip[bench]'`), which compressing and decompressing never need.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import zlib
from dataclasses import dataclass
from typing import Callable

from .errors import LlmzipError

__all__ = ["Baseline", "baselines", "NAMES"]


@dataclass(frozen=True)
class Baseline:
    name: str  # the command line it stands for
    version: str  # the library that ran it
    compress: Callable[[bytes], bytes]
    decompress: Callable[[bytes], bytes]


def _zstd() -> Baseline:
    import zstandard
    params = zstandard.ZstdCompressionParameters.from_level(19, enable_ldm=True, window_log=27)
    return Baseline(
        "zstd -19 --long", f"zstandard {zstandard.__version__} (libzstd {zstandard.ZSTD_VERSION[0]}."
        f"{zstandard.ZSTD_VERSION[1]}.{zstandard.ZSTD_VERSION[2]})",
        lambda d: zstandard.ZstdCompressor(compression_params=params).compress(d),
        lambda d: zstandard.ZstdDecompressor(max_window_size=2**27).decompress(d))


def _brotli() -> Baseline:
    import brotli
    return Baseline("brotli -q 11", f"brotli {getattr(brotli, '__version__', '')}".strip(),
                    lambda d: brotli.compress(d, quality=11), brotli.decompress)


_STANDARD = {
    "gzip": Baseline("gzip -9", f"zlib {zlib.ZLIB_RUNTIME_VERSION} (Python gzip)",
                     lambda d: gzip.compress(d, 9, mtime=0), gzip.decompress),
    "bzip2": Baseline("bzip2 -9", "libbz2 (Python bz2)", lambda d: bz2.compress(d, 9),
                      bz2.decompress),
    "xz": Baseline("xz -9e", "liblzma (Python lzma)",
                   lambda d: lzma.compress(d, preset=9 | lzma.PRESET_EXTREME), lzma.decompress),
}
_EXTRA = {"zstd": _zstd, "brotli": _brotli}
NAMES = (*_STANDARD, *_EXTRA)


def baselines() -> dict[str, Baseline]:
    """All five codecs, or one line saying how to install the missing ones."""
    try:
        return {**_STANDARD, **{name: make() for name, make in _EXTRA.items()}}
    except ImportError as exc:
        raise LlmzipError(f"the comparison needs {exc.name}, which is not installed: "
                          "pip install 'llmzip[bench]'") from None
