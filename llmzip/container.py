"""The archive's bytes: magic, version, header, payloads and the trailing CRC; no torch.

An archive names everything its decoder must use (model, arithmetic, coder settings), lists
the blocks that tile the original file, and ends with a CRC-32 of every byte before it, so
damage or truncation is caught before any model loads. The content checksum (BLAKE2b-64 of
the original bytes) is checked by the codec after decoding. docs/FORMAT.md is the field-by-
field description; this module is its only implementation.
"""

from __future__ import annotations

import enum
import zlib
from dataclasses import dataclass, field

from .errors import CorruptArchiveError

__all__ = [
    "MAGIC", "FORMAT_VERSION", "Method", "Arithmetic", "ModelInfo", "Block", "Header",
    "pack", "unpack", "describe",
]

MAGIC = b"LLMZ"
FORMAT_VERSION = 1
CHECKSUM_BYTES = 8
FINGERPRINT_BYTES = 16
CRC_BYTES = 4


class Method(enum.IntEnum):
    """How one block of the original file is stored."""

    STORED = 0  # raw bytes
    LZMA = 1  # raw LZMA2 stream (no .xz container), preset 9e
    MODEL = 2  # one segment of tokens, coded in a group's range-coder stream


class Arithmetic(enum.IntEnum):
    """Which numerics produced the probabilities; the decoder must use the same."""

    FLOAT = 1  # the framework's float forward: decodes only on the same machine, threads, batch
    EXACT = 2  # exact-v2 (llmzip 0.1, `legacy`): still decoded, no longer written
    EXACT_V3 = 3  # exact-v3 (`arithmetic`, `network`): decodes identically anywhere

    @property
    def label(self) -> str:
        return {1: "float", 2: "exact-v2", 3: "exact-v3"}[self.value]


@dataclass(frozen=True)
class ModelInfo:
    """What a decoder must reproduce to read the MODEL blocks."""

    name: str  # preset name, GGUF path, HF directory or id, as given at compression
    fingerprint: bytes  # 16 bytes: BLAKE2b-128 of weights as computed + token table
    arithmetic: Arithmetic
    segment_tokens: int  # most tokens per segment
    group_size: int  # segments coded side by side in one stream
    bucket_size: int  # two-level coding: tokens per bucket
    threads: int = 0  # FLOAT only: torch threads the encoder ran with
    runtime: str = ""  # FLOAT only: torch version and CPU architecture


@dataclass(frozen=True)
class Block:
    """A run of original bytes: classical payloads carry their size, MODEL blocks their tokens."""

    method: Method
    raw_size: int
    payload_size: int = 0  # STORED / LZMA: bytes of payload
    n_tokens: int = 0  # MODEL: tokens in this segment


@dataclass
class Header:
    original_size: int
    checksum: bytes
    blocks: list[Block]
    model: ModelInfo | None = None
    stream_sizes: list[int] = field(default_factory=list)  # one per group of MODEL blocks

    def model_blocks(self) -> list[Block]:
        return [b for b in self.blocks if b.method == Method.MODEL]


# --- writing -------------------------------------------------------------------------------

def _varint(n: int) -> bytes:
    if n < 0:
        raise ValueError(f"varint of negative number {n}")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _short_string(s: str) -> bytes:
    raw = s.encode("utf-8")
    if len(raw) > 255:
        raise ValueError(f"string too long for the header ({len(raw)} bytes): {s[:40]!r}...")
    return bytes([len(raw)]) + raw


def _header_bytes(h: Header) -> bytes:
    out = bytearray()
    out += _varint(h.original_size)
    out += h.checksum
    m = h.model
    out.append(0 if m is None else int(m.arithmetic))
    if m is not None:
        out += _short_string(m.name)
        out += m.fingerprint
        out += _varint(m.segment_tokens) + _varint(m.group_size) + _varint(m.bucket_size)
        if m.arithmetic == Arithmetic.FLOAT:
            out += _varint(m.threads) + _short_string(m.runtime)
    out += _varint(len(h.blocks))
    for b in h.blocks:
        out.append(int(b.method))
        out += _varint(b.raw_size)
        out += _varint(b.n_tokens if b.method == Method.MODEL else b.payload_size)
    for size in h.stream_sizes:
        out += _varint(size)
    return bytes(out)


def pack(header: Header, payloads: list[bytes], streams: list[bytes]) -> bytes:
    """Archive bytes from a header, the classical blocks' payloads (in block order) and the
    groups' range-coder streams (in group order)."""
    header.stream_sizes = [len(s) for s in streams]
    body = _header_bytes(header)
    out = bytearray(MAGIC)
    out.append(FORMAT_VERSION)
    out += _varint(len(body)) + body
    for p in payloads:
        out += p
    for s in streams:
        out += s
    out += zlib.crc32(out).to_bytes(CRC_BYTES, "little")
    return bytes(out)


# --- reading -------------------------------------------------------------------------------

class _Reader:
    """Cursor over header bytes whose every overrun is a CorruptArchiveError."""

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None):
        self.data, self.pos = data, pos
        self.end = len(data) if end is None else end

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > self.end:
            raise CorruptArchiveError(f"archive header ends inside the {what} (damaged)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]

    def varint(self, what: str) -> int:
        n = shift = 0
        while True:
            b = self.byte(what)
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7
            if shift > 63:
                raise CorruptArchiveError(f"archive header has an oversized {what} (damaged)")

    def string(self, what: str) -> str:
        raw = self.take(self.byte(what), what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptArchiveError(f"archive header has an unreadable {what} (damaged)") from None


def _enum(cls, value: int, what: str):
    try:
        return cls(value)
    except ValueError:
        raise CorruptArchiveError(f"unknown {what} {value} in archive header (damaged, or made "
                                  "by a newer llmzip)") from None


def _check_envelope(blob: bytes) -> None:
    if len(blob) < len(MAGIC) or blob[:len(MAGIC)] != MAGIC:
        raise CorruptArchiveError(f"not an llmzip archive (starts with {bytes(blob[:4])!r})")
    if len(blob) < len(MAGIC) + 1 + 1 + CRC_BYTES:
        raise CorruptArchiveError("archive is truncated")
    stored = int.from_bytes(blob[-CRC_BYTES:], "little")
    if zlib.crc32(blob[:-CRC_BYTES]) != stored:
        raise CorruptArchiveError("archive is damaged or truncated (CRC-32 mismatch)")
    version = blob[len(MAGIC)]
    if version != FORMAT_VERSION:
        raise CorruptArchiveError(f"archive format version {version} is not supported by this "
                                  f"llmzip (it reads version {FORMAT_VERSION}); upgrade llmzip")


def _read_model(r: _Reader, arithmetic: Arithmetic) -> ModelInfo:
    name = r.string("model name")
    fingerprint = r.take(FINGERPRINT_BYTES, "model fingerprint")
    segment_tokens = r.varint("segment length")
    group_size = r.varint("group size")
    bucket_size = r.varint("bucket size")
    threads, runtime = 0, ""
    if arithmetic == Arithmetic.FLOAT:
        threads = r.varint("thread count")
        runtime = r.string("runtime")
    if min(segment_tokens, group_size, bucket_size) < 1:
        raise CorruptArchiveError("archive header has a zero coder setting (damaged)")
    return ModelInfo(name, fingerprint, arithmetic, segment_tokens, group_size, bucket_size,
                     threads, runtime)


def unpack(blob: bytes) -> tuple[Header, list[bytes], list[bytes]]:
    """Parse and check an archive: (header, classical payloads, group streams).

    Raises CorruptArchiveError naming the first problem found. Nothing here needs a model.
    """
    _check_envelope(blob)
    r = _Reader(blob, len(MAGIC) + 1, len(blob) - CRC_BYTES)
    header_len = r.varint("header length")
    hr = _Reader(blob, r.pos, min(r.pos + header_len, r.end))
    if hr.end - hr.pos != header_len:
        raise CorruptArchiveError("archive header is truncated")
    original_size = hr.varint("original size")
    checksum = hr.take(CHECKSUM_BYTES, "content checksum")
    arith = hr.byte("arithmetic")
    model = None if arith == 0 else _read_model(hr, _enum(Arithmetic, arith, "arithmetic"))
    blocks = []
    for _ in range(hr.varint("block count")):
        method = _enum(Method, hr.byte("block method"), "block method")
        raw_size = hr.varint("block size")
        n = hr.varint("block payload size")
        blocks.append(Block(method, raw_size, n_tokens=n) if method == Method.MODEL
                      else Block(method, raw_size, payload_size=n))
    n_model = sum(b.method == Method.MODEL for b in blocks)
    if n_model and model is None:
        raise CorruptArchiveError("archive has model-coded blocks but names no model (damaged)")
    n_groups = -(-n_model // model.group_size) if n_model else 0
    stream_sizes = [hr.varint("stream size") for _ in range(n_groups)]
    if hr.pos != hr.end:
        raise CorruptArchiveError("archive header has trailing bytes (damaged)")
    if sum(b.raw_size for b in blocks) != original_size:
        raise CorruptArchiveError("archive blocks do not add up to the original size (damaged)")
    pos = hr.end
    payloads = []
    for b in blocks:
        if b.method != Method.MODEL:
            payloads.append(blob[pos:pos + b.payload_size])
            pos += b.payload_size
    streams = []
    for size in stream_sizes:
        streams.append(blob[pos:pos + size])
        pos += size
    if pos != len(blob) - CRC_BYTES:
        raise CorruptArchiveError("archive payload sizes do not match its length (damaged)")
    header = Header(original_size, checksum, blocks, model, stream_sizes)
    return header, payloads, streams


def describe(blob: bytes) -> dict:
    """The header's facts as plain data (what `llmzip info` shows), without decoding."""
    header, _, _ = unpack(blob)
    m = header.model
    facts = {
        "format_version": FORMAT_VERSION,
        "original_bytes": header.original_size,
        "archive_bytes": len(blob),
        "bpb": 8 * len(blob) / header.original_size if header.original_size else 0.0,
        "checksum": header.checksum.hex(),
        "model": None if m is None else {
            "name": m.name, "fingerprint": m.fingerprint.hex(),
            "arithmetic": m.arithmetic.label, "segment_tokens": m.segment_tokens,
            "group_size": m.group_size, "bucket_size": m.bucket_size, "threads": m.threads,
            "runtime": m.runtime},
        "blocks": [{"method": b.method.name.lower(), "bytes": b.raw_size,
                    "payload_bytes": b.payload_size, "tokens": b.n_tokens}
                   for b in header.blocks],
        "stream_bytes": header.stream_sizes,
    }
    return facts
