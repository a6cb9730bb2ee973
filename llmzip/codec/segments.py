"""Cutting a file into segments and choosing how each one is stored; pure functions.

A file's tokens are cut into segments of equal length, at most `segment_tokens` each: the
decoder advances all of them in lockstep, so the longest one sets its number of steps.
Segments that look like text are candidates for the model. A candidate the model codes
worse than LZMA would (LZMA's ratio over all candidate text, shared out by length), and
every candidate when the model saves less than naming it costs in the header, become
classical blocks: LZMA2 or stored, whichever is smaller, so no input grows by more than
the header.
"""

from __future__ import annotations

import lzma
import re
from dataclasses import dataclass

from llmzip.container import Block, Method
from llmzip.errors import CorruptArchiveError

__all__ = ["Segment", "cut", "looks_like_text", "lzma_ratio", "model_saving",
           "classical_blocks", "classical_payload", "lzma_compress", "lzma_decompress"]

_DICT_SIZE = 64 << 20  # preset 9e's dictionary
_NOT_TEXT = re.compile("[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f\udc80-\udcff]")
_TEXT_PROBE = 1024  # bytes per window when looking for any text at all
MODEL_HEADER_BYTES = 40  # what naming a model costs in the header, about


@dataclass(frozen=True)
class Segment:
    start: int  # byte offset in the file
    raw: bytes
    ids: tuple[int, ...]  # tokens (empty for a file with no text anywhere)
    candidate: bool  # looks like text: worth a model run


def looks_like_text(raw: bytes) -> bool:
    """At most 5% invalid UTF-8 or control bytes: worth a model's time."""
    text = raw.decode("utf-8", "surrogateescape")
    return bool(text) and len(_NOT_TEXT.findall(text)) <= 0.05 * len(text)


def has_text(data: bytes) -> bool:
    return any(looks_like_text(data[i:i + _TEXT_PROBE]) for i in range(0, len(data), _TEXT_PROBE))


def cut(data: bytes, tokenizer, segment_tokens: int) -> list[Segment]:
    """Segments of equal token counts (at most segment_tokens, lengths within one or two)
    tiling data; an escape token always stays with the byte token it escapes."""
    ids = tokenizer.encode(data)
    n_segments = -(-len(ids) // segment_tokens)
    segments, start, i = [], 0, 0
    for k in range(1, n_segments + 1):
        stop = max(k * len(ids) // n_segments, i + 1)  # lengths differ by at most one
        if ids[stop - 1] == tokenizer.escape_id and stop < len(ids):
            stop += -1 if stop - 1 > i else 1  # never beyond segment_tokens if avoidable
        if stop > i:
            raw = tokenizer.decode(ids[i:stop])
            segments.append(Segment(start, raw, tuple(ids[i:stop]), looks_like_text(raw)))
            start, i = start + len(raw), stop
    return segments


def lzma_ratio(texts: list[bytes]) -> float:
    """What LZMA makes of the candidates' text together: the model's bar."""
    text = b"".join(texts)
    return min(len(lzma_compress(text)), len(text)) / len(text) if text else 1.0


def model_saving(raw_bytes: int, model_bits: float, ratio: float) -> float:
    """Bytes the model saves on a segment against LZMA's share (negative: it loses)."""
    return raw_bytes * ratio - model_bits / 8


def classical_blocks(segments: list[Segment], coded: set[int]) -> tuple[list[Block], list[bytes]]:
    """The archive's blocks in file order (a MODEL block per coded segment, one classical
    block per run of the others) and the classical blocks' payloads."""
    blocks, payloads, run = [], [], []

    def flush():
        if run:
            raw = b"".join(run)
            method, payload = classical_payload(raw)
            blocks.append(Block(method, len(raw), payload_size=len(payload)))
            payloads.append(payload)
            run.clear()

    for i, seg in enumerate(segments):
        if i in coded:
            flush()
            blocks.append(Block(Method.MODEL, len(seg.raw), n_tokens=len(seg.ids)))
        else:
            run.append(seg.raw)
    flush()
    return blocks, payloads


def classical_payload(raw: bytes) -> tuple[Method, bytes]:
    """LZMA2 or stored, whichever is smaller."""
    packed = lzma_compress(raw)
    return (Method.LZMA, packed) if len(packed) < len(raw) else (Method.STORED, raw)


def _filters(size: int) -> list[dict]:
    """Preset 9e with a dictionary no larger than the data (and 4 KiB at least): a match
    never reaches farther back than the data's start, so the stream is the same bytes as
    with preset 9e's 64 MiB, which it costs 20 ms to set up for every block, however small,
    and a decoder needs no more to read it."""
    dict_size = min(_DICT_SIZE, max(4096, size))
    return [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": dict_size}]


def lzma_compress(raw: bytes) -> bytes:
    return lzma.compress(raw, format=lzma.FORMAT_RAW, filters=_filters(len(raw)))


def lzma_decompress(payload: bytes, size: int) -> bytes:
    """The block's bytes, never more than its declared size (no decompression bombs)."""
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_filters(size))
    try:
        out = decompressor.decompress(payload, max_length=size + 1)
    except lzma.LZMAError:
        raise CorruptArchiveError("LZMA block does not decode (archive damaged)") from None
    if len(out) != size or not decompressor.eof:
        raise CorruptArchiveError("LZMA block has the wrong size (archive damaged)")
    return out
