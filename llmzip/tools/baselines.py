"""The classical codecs llmzip is compared with, each at its strongest common setting.

gzip -9, bzip2 -9, xz -9e, zstd -19 with long mode and brotli -11, run through Python
libraries so a benchmark needs no external tools; `version` says which library ran. The
first three come with Python and zstandard with llmzip; brotli with the `bench` extra
(`pip install 'llmzip[bench]'`): without it, its column is left out, and `missing` says so.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import zlib
from dataclasses import dataclass
from typing import Callable

from llmzip.errors import LlmzipError

__all__ = ["Baseline", "baselines", "missing", "NAMES"]


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
_OPTIONAL = {"brotli": _brotli}  # the bench extra
NAMES = (*_STANDARD, "zstd", *_OPTIONAL)


def baselines() -> dict[str, Baseline]:
    """gzip, bzip2, xz and zstd, and brotli where it is installed."""
    try:
        found = {**_STANDARD, "zstd": _zstd()}
    except ImportError:
        raise LlmzipError("the comparison needs zstandard, a dependency of llmzip that is "
                          "missing here: pip install zstandard") from None
    for name, make in _OPTIONAL.items():
        try:
            found[name] = make()
        except ImportError:
            pass
    return found


def missing() -> str | None:
    """One line on the optional codecs that are not installed, or None."""
    absent = [name for name in _OPTIONAL if name not in baselines()]
    if not absent:
        return None
    return (f"{' and '.join(absent)} not installed: its column is left out "
            "(pip install 'llmzip[bench]')")
