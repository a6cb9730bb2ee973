"""The archive's bytes: magic, version, header, payloads and the trailing CRC; no torch.

Two forms: the full archive (versions 1 to 4 and 6), which can say anything, and the compact
archive (version 5, at the end of this module), a short message's few bytes of framing.

An archive names everything its decoder must use (model, arithmetic, coder settings), lists
the blocks that tile the original file, and ends with a CRC-32 of every byte before it, so
damage or truncation is caught before any model loads. The content checksum (BLAKE2b-64 of
the original bytes) is checked by the codec after decoding. docs/FORMAT.md is the field-by-
field description; this module is its only implementation.

An archive is untrusted input: a header edited and its CRC recomputed passes the CRC, so
every field that sets a decoder's work or memory is checked against the others and against
the limits below before anything is allocated or any model loads. Several archives back to
back (as `compress -c a b` writes) are read member by member with `split_members`.
What this module cannot check (the model's vocabulary, its memory per token) the codec
checks with the helpers here once the model is known.
"""

from __future__ import annotations

import enum
import hashlib
import zlib
from dataclasses import dataclass, field

from llmzip.errors import CorruptArchiveError

__all__ = [
    "MAGIC", "FORMAT_VERSION", "READ_VERSIONS", "Method", "Arithmetic", "Adaptation",
    "ModelInfo", "Block", "Copy", "Header", "LayoutKind", "Layout",
    "pack", "unpack", "describe", "split_members", "check_bucket_size",
    "MAX_SEGMENT_TOKENS", "MAX_GROUP_SIZE", "MAX_BUCKET_SIZE", "MAX_BUCKETS", "MAX_THREADS",
    "MAX_TOKENS_PER_BYTE", "COMPACT_VERSION", "Compact", "is_compact", "pack_compact",
    "unpack_compact",
]

MAGIC = b"LLMZ"
# The version byte is the version needed to read an archive: 1 for the model alone (byte
# for byte what llmzip wrote before adaptation, and readable by it), 2 for counts-v1, 3
# for counts (`Adaptation`), 4 for an archive with copies of long repeats (`repeats`),
# whatever its adaptation, 6 for a file split into a text stream and a binary stream
# (`Layout`); 5 is the compact form. An archive is written with the lowest version that
# holds it.
FORMAT_VERSION = 6  # the newest this llmzip writes
READ_VERSIONS = (1, 2, 3, 4, 6)  # of the full form
COPIES_VERSION = 4
LAYOUT_VERSION = 6
TAR_NAME_BYTES = 101  # a tar member's name in the text stream: its field's 100 bytes at most, "\n"
CHECKSUM_BYTES = 8
FINGERPRINT_BYTES = 16
CRC_BYTES = 4

# Limits on what a header may ask of a decoder. Each is what an honest encoder can write, with
# room to spare; past it an archive is damaged or crafted, and is refused with exit code 2.

# Tokens per MODEL block: exact.MAX_KEYS, the longest attention span for which the exact
# arithmetic's integer bounds hold; the format holds float archives to it too.
MAX_SEGMENT_TOKENS = 2**14
# Segments per stream, decoded side by side: the most `compress --group-size` accepts.
MAX_GROUP_SIZE = 256
# Tokens per bucket before the vocabulary is known (check_bucket_size then holds it to the
# model's): a coder row is 8 bytes per entry per segment, so 8 MiB per segment at most.
MAX_BUCKET_SIZE = 2**20
# Buckets per vocabulary: the same bound on the width of the bucket row.
MAX_BUCKETS = 2**20
# FLOAT archives make the decoder run as many torch threads as the encoder did.
MAX_THREADS = 1024
# A token is at least one byte, or an escape pair (2 tokens for 1 byte): a block's bytes
# bound its tokens, so the declared original size (which `info` shows) bounds the decoder's
# model steps.
MAX_TOKENS_PER_BYTE = 2
# A segment may run one token past the segment length, so that an escape pair is never
# split (codec._segments).
ESCAPE_SLACK = 1


class Method(enum.IntEnum):
    """How one block of the original file is stored."""

    STORED = 0  # raw bytes
    LZMA = 1  # raw LZMA2 stream (no .xz container), preset 9e
    MODEL = 2  # one segment of tokens, coded in a group's range-coder stream


class Arithmetic(enum.IntEnum):
    """Which numerics produced the probabilities; the decoder must use the same."""

    FLOAT = 1  # the framework's float forward: decodes only on the same machine, threads, batch
    EXACT = 2  # exact-v2 (llmzip 0.1, `engine.exact.v2`): still decoded, no longer written
    EXACT_V3 = 3  # exact-v3 (`engine.exact.rules`, `network`): decodes identically anywhere

    @property
    def label(self) -> str:
        return {1: "float", 2: "exact-v2", 3: "exact-v3"}[self.value]


class Adaptation(enum.IntEnum):
    """What the encoder mixed into the model's tables (`adapt`); the decoder must do the same."""

    NONE = 0  # the model's tables as they are
    COUNTS_V1 = 1  # token counts of the group, mixed in the log domain (adapt: read only)
    COUNTS = 2  # the same with weights by the followers' spread too (adapt.RULES)

    @property
    def label(self) -> str:
        return {0: "none", 1: "counts-v1", 2: "counts"}[self.value]

    @property
    def format_version(self) -> int:
        """The format version that first recorded this mode: what a reader needs."""
        return {0: 1, 1: 2, 2: 3}[self.value]


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
    adaptation: Adaptation = Adaptation.NONE  # format version 2 and up

    @property
    def format_version(self) -> int:
        return self.adaptation.format_version


@dataclass(frozen=True)
class Block:
    """A run of original bytes: classical payloads carry their size, MODEL blocks their tokens."""

    method: Method
    raw_size: int
    payload_size: int = 0  # STORED / LZMA: bytes of payload
    n_tokens: int = 0  # MODEL: tokens in this segment


@dataclass(frozen=True)
class Copy:
    """size bytes of the original at dest repeat those at source (source + size <= dest)."""

    dest: int
    source: int
    size: int


class LayoutKind(enum.IntEnum):
    """How a layout says where the text runs are."""

    RUNS = 1  # as a list of (binary, text) byte counts
    TAR = 2  # as the tar members whose contents are text: the binary stream's headers say the rest


@dataclass(frozen=True)
class Layout:
    """A file of text runs inside binary bytes, as two streams: the text runs joined (which
    the blocks tile) and the other bytes joined, coded as one classical block (`binary`).
    Format version 6; `codec.mixed` cuts and joins."""

    kind: LayoutKind
    binary: Block  # LZMA or STORED: the binary stream
    text_size: int  # bytes of the text stream
    runs: tuple[tuple[int, int], ...] = ()  # RUNS: (binary bytes, text bytes), in file order
    members: tuple[bool, ...] = ()  # TAR: for each member header, in order: contents in text?


@dataclass
class Header:
    """The blocks tile the literal bytes: the original with its copies taken out, or with a
    layout, the text stream with its copies taken out."""

    original_size: int
    checksum: bytes
    blocks: list[Block]
    model: ModelInfo | None = None
    stream_sizes: list[int] = field(default_factory=list)  # one per group of MODEL blocks
    copies: list[Copy] = field(default_factory=list)  # format version 4: in file order
    layout: Layout | None = None  # format version 6

    @property
    def format_version(self) -> int:
        """The lowest version that holds this header: what a reader needs."""
        return max(self.model.format_version if self.model else 1,
                   COPIES_VERSION if self.copies else 1,
                   LAYOUT_VERSION if self.layout else 1)

    @property
    def text_size(self) -> int:
        """The bytes the blocks and copies make: the original, or its text stream."""
        return self.layout.text_size if self.layout else self.original_size

    def model_blocks(self) -> list[Block]:
        return [b for b in self.blocks if b.method == Method.MODEL]


# --- writing -------------------------------------------------------------------------------

def varint(n: int) -> bytes:
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
    out += varint(h.original_size)
    out += h.checksum
    m = h.model
    out.append(0 if m is None else int(m.arithmetic))
    if m is not None:
        out += _short_string(m.name)
        out += m.fingerprint
        out += varint(m.segment_tokens) + varint(m.group_size) + varint(m.bucket_size)
        if h.format_version >= 2:
            out.append(int(m.adaptation))
        if m.arithmetic == Arithmetic.FLOAT:
            out += varint(m.threads) + _short_string(m.runtime)
    out += varint(len(h.blocks))
    for b in h.blocks:
        out.append(int(b.method))
        out += varint(b.raw_size)
        out += varint(b.n_tokens if b.method == Method.MODEL else b.payload_size)
    for size in h.stream_sizes:
        out += varint(size)
    if h.format_version >= COPIES_VERSION:
        out += varint(len(h.copies))
        end = 0
        for c in h.copies:  # each as the literal bytes before it, its distance back, its size
            out += varint(c.dest - end) + varint(c.dest - c.source) + varint(c.size)
            end = c.dest + c.size
    if h.format_version >= LAYOUT_VERSION:
        out += _layout_bytes(h.layout)
    return bytes(out)


def _layout_bytes(layout: Layout) -> bytes:
    b = layout.binary
    out = bytearray([int(layout.kind), int(b.method)])
    out += varint(b.raw_size) + varint(b.payload_size) + varint(layout.text_size)
    if layout.kind == LayoutKind.RUNS:
        out += varint(len(layout.runs))
        for binary, text in layout.runs:
            out += varint(binary) + varint(text)
    else:
        out += varint(len(layout.members))
        bits = sum(1 << i for i, text in enumerate(layout.members) if text)
        out += bits.to_bytes(-(-len(layout.members) // 8), "little")
    return bytes(out)


def pack(header: Header, payloads: list[bytes], streams: list[bytes]) -> bytes:
    """Archive bytes from a header, the classical blocks' payloads (in block order) and the
    groups' range-coder streams (in group order)."""
    header.stream_sizes = [len(s) for s in streams]
    body = _header_bytes(header)
    out = bytearray(MAGIC)
    out.append(header.format_version)
    out += varint(len(body)) + body
    for p in payloads:  # with a layout, the binary stream's payload last
        out += p
    for s in streams:
        out += s
    out += zlib.crc32(out).to_bytes(CRC_BYTES, "little")
    return bytes(out)


# --- reading -------------------------------------------------------------------------------

class Reader:
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
    if version not in READ_VERSIONS:
        raise CorruptArchiveError(f"archive format version {version} is not supported by this "
                                  f"llmzip (it reads versions {READ_VERSIONS[0]} to "
                                  f"{READ_VERSIONS[-1]}); upgrade llmzip")


def _read_model(r: Reader, arithmetic: Arithmetic, version: int) -> ModelInfo:
    name = r.string("model name")
    fingerprint = r.take(FINGERPRINT_BYTES, "model fingerprint")
    segment_tokens = r.varint("segment length")
    group_size = r.varint("group size")
    bucket_size = r.varint("bucket size")
    adaptation = Adaptation.NONE
    if version >= 2:
        adaptation = _enum(Adaptation, r.byte("adaptation"), "adaptation")
        if version < COPIES_VERSION and adaptation.format_version != version:
            raise CorruptArchiveError(f"adaptation {adaptation.label} in a format version "
                                      f"{version} header")
    threads, runtime = 0, ""
    if arithmetic == Arithmetic.FLOAT:
        threads = r.varint("thread count")
        runtime = r.string("runtime")
    return ModelInfo(name, fingerprint, arithmetic, segment_tokens, group_size, bucket_size,
                     threads, runtime, adaptation)


def _read_count(r: Reader, what: str, entry_bytes: int = 3) -> int:
    """A list's length, before the list is built: each entry takes entry_bytes or more."""
    count = r.varint(f"{what} count")
    if count > (r.end - r.pos) // entry_bytes:
        raise CorruptArchiveError(f"archive header: {what} count {count} does not fit in the "
                                  "header (damaged or crafted)")
    return count


def _read_blocks(r: Reader) -> list[Block]:
    count = _read_count(r, "block")  # method, size and count
    blocks = []
    for _ in range(count):
        method = _enum(Method, r.byte("block method"), "block method")
        raw_size = r.varint("block size")
        n = r.varint("block payload size")
        blocks.append(Block(method, raw_size, n_tokens=n) if method == Method.MODEL
                      else Block(method, raw_size, payload_size=n))
    return blocks


def _read_copies(r: Reader) -> list[Copy]:
    count = _read_count(r, "copy")  # gap, distance and size
    copies, end = [], 0
    for _ in range(count):
        dest = end + r.varint("copy position")
        distance, size = r.varint("copy distance"), r.varint("copy size")
        copies.append(Copy(dest, dest - distance, size))
        end = dest + size
    return copies


def _read_layout(r: Reader) -> Layout:
    kind = _enum(LayoutKind, r.byte("layout kind"), "layout kind")
    method = _enum(Method, r.byte("binary stream method"), "binary stream method")
    if method == Method.MODEL:
        raise CorruptArchiveError("archive header: the binary stream is model-coded (damaged)")
    binary = Block(method, r.varint("binary stream size"),
                   payload_size=r.varint("binary stream payload size"))
    text_size = r.varint("text stream size")
    if kind == LayoutKind.RUNS:
        count = _read_count(r, "text run", entry_bytes=2)
        runs = tuple((r.varint("binary run"), r.varint("text run")) for _ in range(count))
        return Layout(kind, binary, text_size, runs=runs)
    count = r.varint("tar member count")
    if count > binary.raw_size // 512:
        raise CorruptArchiveError(f"archive header: {count} tar members do not fit in a binary "
                                  f"stream of {binary.raw_size} bytes (damaged or crafted)")
    bits = int.from_bytes(r.take(-(-count // 8), "tar member flags"), "little")
    if bits >> count:
        raise CorruptArchiveError("archive header: tar member flags past the last member "
                                  "(damaged)")
    return Layout(kind, binary, text_size,
                  members=tuple(bool(bits >> i & 1) for i in range(count)))


def _read_header(blob: bytes, start: int, end: int) -> tuple[Header, int]:
    """The checked header of the archive at blob[start:], reading no further than `end`, and
    the offset where its payloads begin."""
    r = Reader(blob, start + len(MAGIC) + 1, end)
    header_len = r.varint("header length")
    hr = Reader(blob, r.pos, min(r.pos + header_len, r.end))
    if hr.end - hr.pos != header_len:
        raise CorruptArchiveError("archive header is truncated")
    original_size = hr.varint("original size")
    checksum = hr.take(CHECKSUM_BYTES, "content checksum")
    arith = hr.byte("arithmetic")
    version = blob[start + len(MAGIC)]
    model = None if arith == 0 else _read_model(hr, _enum(Arithmetic, arith, "arithmetic"),
                                                version)
    if model is not None:
        _check_model(model)  # before its group size divides anything
    blocks = _read_blocks(hr)
    n_model = sum(b.method == Method.MODEL for b in blocks)
    if n_model and model is None:
        raise CorruptArchiveError("archive has model-coded blocks but names no model (damaged)")
    n_groups = -(-n_model // model.group_size) if n_model else 0
    stream_sizes = [hr.varint("stream size") for _ in range(n_groups)]
    copies = _read_copies(hr) if version >= COPIES_VERSION else []
    layout = _read_layout(hr) if version >= LAYOUT_VERSION else None
    if hr.pos != hr.end:
        raise CorruptArchiveError("archive header has trailing bytes (damaged)")
    header = Header(original_size, checksum, blocks, model, stream_sizes, copies, layout)
    _check_blocks(header)
    return header, hr.end


# --- checking ------------------------------------------------------------------------------

def _check_range(what: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise CorruptArchiveError(f"archive header: {what} {value} is outside {low}..{high} "
                                  "(damaged or crafted)")


def _check_text(what: str, text: str, may_be_empty: bool = False) -> None:
    """Names are printed by `info` and in error messages: one printable line, no escapes."""
    if (not text and not may_be_empty) or not text.isprintable():
        raise CorruptArchiveError(f"archive header: {what} {text!r} is empty or not printable "
                                  "(damaged or crafted)")


def _check_model(m: ModelInfo) -> None:
    _check_text("model name", m.name)
    _check_range("segment length", m.segment_tokens, 1, MAX_SEGMENT_TOKENS)
    _check_range("group size", m.group_size, 1, MAX_GROUP_SIZE)
    _check_range("bucket size", m.bucket_size, 2, MAX_BUCKET_SIZE)
    if m.arithmetic == Arithmetic.FLOAT:
        _check_range("thread count", m.threads, 1, MAX_THREADS)
        _check_text("runtime", m.runtime, may_be_empty=True)


def _check_block(what: str, b: Block, model: ModelInfo | None) -> None:
    """One block's sizes within the limits; `what` names it in the error."""
    where = f"{what} ({b.method.name.lower()})"
    if b.raw_size < 1:
        raise CorruptArchiveError(f"archive header: {where} is empty (damaged or crafted)")
    if b.method == Method.STORED and b.payload_size != b.raw_size:
        raise CorruptArchiveError(f"archive header: {where} stores {b.payload_size} bytes for "
                                  f"{b.raw_size} (damaged)")
    if b.method == Method.LZMA and b.payload_size < 1:
        raise CorruptArchiveError(f"archive header: {where} has no payload (damaged)")
    if b.method == Method.MODEL:
        most = min(MAX_TOKENS_PER_BYTE * b.raw_size, model.segment_tokens + ESCAPE_SLACK,
                   MAX_SEGMENT_TOKENS)
        if not 1 <= b.n_tokens <= most:
            raise CorruptArchiveError(
                f"archive header: {where} token count {b.n_tokens} is outside 1..{most} for "
                f"{b.raw_size} bytes in segments of {model.segment_tokens} (damaged or crafted)")


def _check_blocks(h: Header) -> None:
    """Every block and stream within the limits, and the blocks tiling the original size."""
    for index, block in enumerate(h.blocks):
        _check_block(f"block {index + 1}", block, h.model)
    for index, size in enumerate(h.stream_sizes):
        if size < 4 or size % 4:
            raise CorruptArchiveError(f"archive header: stream {index + 1} size {size} is not "
                                      "a whole number of 32-bit words (damaged)")
    for index, c in enumerate(h.copies):
        if c.size < 1 or c.source < 0 or c.source + c.size > c.dest \
                or c.dest + c.size > h.original_size:
            raise CorruptArchiveError(
                f"archive header: copy {index + 1} of {c.size} bytes from byte {c.source} to "
                f"byte {c.dest} is empty, overlaps its source or leaves the file of "
                f"{h.original_size} bytes (damaged or crafted)")
    if h.layout is not None:
        _check_layout(h.layout, h.original_size)
    for index, c in enumerate(h.copies):
        if c.dest + c.size > h.text_size:
            raise CorruptArchiveError(f"archive header: copy {index + 1} leaves the text "
                                      f"stream of {h.text_size} bytes (damaged or crafted)")
    if sum(b.raw_size for b in h.blocks) + sum(c.size for c in h.copies) != h.text_size:
        raise CorruptArchiveError("archive blocks do not add up to the original size (damaged)")


def _check_layout(layout: Layout, original_size: int) -> None:
    """Both streams within the file (a tar's text members' padding is in neither, its
    members' names in both: the binary stream keeps their fields, blank); the runs tiling
    it exactly, in their canonical form (no empty run after the first binary one)."""
    b = layout.binary
    _check_block("binary stream", b, None)
    names = TAR_NAME_BYTES * len(layout.members)
    if b.raw_size + layout.text_size > original_size + names:
        raise CorruptArchiveError(f"archive header: binary stream of {b.raw_size} bytes and "
                                  f"text stream of {layout.text_size} in a file of "
                                  f"{original_size} (damaged or crafted)")
    if layout.kind == LayoutKind.RUNS:
        if not layout.runs or any(text < 1 for _, text in layout.runs) \
                or any(binary < 1 for binary, _ in layout.runs[1:]):
            raise CorruptArchiveError("archive header: an empty text or binary run (damaged)")
        if sum(binary for binary, _ in layout.runs) > b.raw_size \
                or sum(text for _, text in layout.runs) != layout.text_size \
                or layout.text_size != original_size - b.raw_size:
            raise CorruptArchiveError("archive header: the text runs do not tile the file "
                                      "(damaged or crafted)")
    elif not any(layout.members):
        raise CorruptArchiveError("archive header: a tar layout with no text member (damaged)")


def check_bucket_size(bucket_size: int, vocab_size: int) -> None:
    """The codec's check once the model is known: the header's bucket size must cut this
    vocabulary into 2..V tokens per bucket and at most MAX_BUCKETS buckets, or the coder's
    rows would be degenerate or too wide to allocate."""
    n_buckets = -(-vocab_size // bucket_size) if bucket_size > 0 else 0
    if not 2 <= bucket_size <= vocab_size or n_buckets > MAX_BUCKETS:
        raise CorruptArchiveError(
            f"archive header: bucket size {bucket_size} does not fit the model's vocabulary of "
            f"{vocab_size} tokens (needs 2..{vocab_size}; damaged or crafted)")


# --- one archive, and several back to back -------------------------------------------------

def _payload_bytes(h: Header) -> int:
    return (sum(b.payload_size for b in h.blocks if b.method != Method.MODEL)
            + (h.layout.binary.payload_size if h.layout else 0) + sum(h.stream_sizes))


def unpack(blob: bytes) -> tuple[Header, list[bytes], list[bytes]]:
    """Parse and check one archive: (header, classical payloads, group streams). With a
    layout, the binary stream's payload is the last of the payloads.

    Raises CorruptArchiveError naming the first problem found. Nothing here needs a model.
    """
    _check_envelope(blob)
    header, pos = _read_header(blob, 0, len(blob) - CRC_BYTES)
    if pos + _payload_bytes(header) != len(blob) - CRC_BYTES:
        raise CorruptArchiveError("archive payload sizes do not match its length (damaged)")
    payloads = []
    classical = [b for b in header.blocks if b.method != Method.MODEL]
    for b in classical + ([header.layout.binary] if header.layout else []):
        payloads.append(blob[pos:pos + b.payload_size])
        pos += b.payload_size
    streams = []
    for size in header.stream_sizes:
        streams.append(blob[pos:pos + size])
        pos += size
    return header, payloads, streams


def _member_end(blob: bytes, start: int) -> int | None:
    """Where the archive starting at blob[start] ends, if a whole, CRC-checked one does."""
    if blob[start:start + len(MAGIC)] != MAGIC or len(blob) - start < len(MAGIC) + 1 + CRC_BYTES \
            or blob[start + len(MAGIC)] not in READ_VERSIONS:
        return None
    try:
        header, pos = _read_header(blob, start, len(blob))
    except CorruptArchiveError:
        return None
    end = pos + _payload_bytes(header) + CRC_BYTES
    if end > len(blob) or zlib.crc32(blob[start:end - CRC_BYTES]) != int.from_bytes(
            blob[end - CRC_BYTES:end], "little"):
        return None
    return end


def split_members(blob: bytes) -> list[bytes]:
    """The archives that `blob` holds back to back (gzip's members), in order.

    Each archive delimits itself (header length, payload and stream sizes, CRC), so members
    are found without a separator. A file of one archive gives one member. Raises
    CorruptArchiveError for damage anywhere and for trailing bytes that are not an archive.
    """
    members, pos = [], 0
    while True:
        if is_compact(blob[pos:pos + 1]):  # not self-delimiting: the last member
            members.append(blob[pos:])
            return members
        end = _member_end(blob, pos)
        if end is None:
            _raise_member_error(blob, pos, len(members))
        members.append(blob[pos:end])
        pos = end
        if pos == len(blob):
            return members


def _raise_member_error(blob: bytes, pos: int, n_before: int) -> None:
    """The precise error for the bad member at blob[pos:]: unpack's own, which checks the CRC
    first (so damage reads as damage), named by its position after the first member."""
    tail = blob[pos:]
    if n_before and not tail.startswith(MAGIC):
        size = f"{len(tail)} byte" + ("s" if len(tail) != 1 else "")
        raise CorruptArchiveError(f"trailing garbage after archive member {n_before} ({size}, "
                                  "not an archive)")
    try:
        unpack(tail)
    except CorruptArchiveError as exc:
        if not n_before:
            raise
        raise CorruptArchiveError(f"archive member {n_before + 1} (at byte {pos}): {exc}") \
            from None
    raise CorruptArchiveError(f"archive member {n_before + 1} (at byte {pos}) is damaged")


def describe(blob: bytes) -> dict:
    """The header's facts as plain data (what `llmzip info` shows), without decoding; of a
    compact archive, what it holds (its original size is known only once decoded).

    `original_bytes` and `model_tokens` are what the header declares: a decoder does at most
    one model step per declared token, so they are the work that decoding it will take.
    """
    if is_compact(blob):
        return _describe_compact(blob)
    header, _, _ = unpack(blob)
    m = header.model
    model_blocks = header.model_blocks()
    facts = {
        "format_version": blob[len(MAGIC)],
        "original_bytes": header.original_size,
        "archive_bytes": len(blob),
        "bpb": 8 * len(blob) / header.original_size if header.original_size else 0.0,
        "checksum": header.checksum.hex(),
        "model": None if m is None else {
            "name": m.name, "fingerprint": m.fingerprint.hex(),
            "arithmetic": m.arithmetic.label, "segment_tokens": m.segment_tokens,
            "group_size": m.group_size, "bucket_size": m.bucket_size,
            "adaptation": m.adaptation.label, "threads": m.threads, "runtime": m.runtime},
        "blocks": [{"method": b.method.name.lower(), "bytes": b.raw_size,
                    "payload_bytes": b.payload_size, "tokens": b.n_tokens}
                   for b in header.blocks],
        "stream_bytes": header.stream_sizes,
        "copies": len(header.copies),
        "copied_bytes": sum(c.size for c in header.copies),
        "model_tokens": sum(b.n_tokens for b in model_blocks),
        "model_bytes": sum(b.raw_size for b in model_blocks),
        "layout": None if header.layout is None else _describe_layout(header.layout),
    }
    return facts


def _describe_layout(layout: Layout) -> dict:
    b = layout.binary
    return {"kind": layout.kind.name.lower(), "text_bytes": layout.text_size,
            "binary_bytes": b.raw_size,
            "binary_method": b.method.name.lower(), "binary_payload_bytes": b.payload_size,
            "text_runs": len(layout.runs) if layout.kind == LayoutKind.RUNS
            else sum(layout.members),
            "tar_members": len(layout.members)}


# --- the compact form (format version 5) -------------------------------------------------
# The compact archive (format version 5): a short message's framing in 7 or 8 bytes.
#
# For the common case of short text (a preset model, exact-v3 arithmetic, the whole input one
# model segment) the full header's model name, fingerprint, settings, block table, sizes and
# two checksums cost some 60 bytes, more than the model spends on a chat message. This form
# keeps what the decoder needs and nothing else:
#
# | bytes | field |
# |---|---|
# | 1 | magic 0xB7 (never the first byte of a full archive, `LLMZ`) |
# | 1 | revision (3 bits, 1), adaptation (1 bit: counts or none), preset number (4 bits) |
# | varint | the segment's token count, 1 to 16,384: the decoder's steps |
# | 4 | BLAKE2b-32 of the bytes before it and of the original bytes |
# | the rest | the range-coder stream, its trailing zero bytes left out (`rangecoder.trimmed`) |
#
# The preset number names a model and the exact-v3 fingerprint the decoder must have
# (`models.presets.PRESETS`); every other setting is the preset's default. What it gives up
# against the full form (docs/FORMAT.md): the original size is known only once decoded, damage
# is found by the checksum after decoding (in bounded work: at most the declared tokens), not
# by a CRC before the model loads, and a compact archive is not self-delimiting: in a file of
# archives back to back it can only be the last. No torch here.

COMPACT_MAGIC = 0xB7
COMPACT_REVISION = 1
COMPACT_VERSION = 5  # how the docs and `info` number this form among the archive formats
COMPACT_CHECKSUM_BYTES = 4
COMPACT_ADAPTATIONS = (Adaptation.NONE, Adaptation.COUNTS)  # the adaptation bit's two values


@dataclass(frozen=True)
class Compact:
    preset: int  # the number of a preset in models.presets.PRESETS
    adaptation: Adaptation
    n_tokens: int
    checksum: bytes
    stream: bytes  # trailing zero bytes left out
    head: bytes  # the bytes the checksum covers before the original

    def matches(self, original: bytes) -> bool:
        return compact_checksum(self.head, original) == self.checksum


def is_compact(blob: bytes) -> bool:
    return len(blob) > 0 and blob[0] == COMPACT_MAGIC


def compact_checksum(head: bytes, original: bytes) -> bytes:
    h = hashlib.blake2b(head, digest_size=COMPACT_CHECKSUM_BYTES)
    h.update(original)
    return h.digest()


def pack_compact(preset: int, adaptation: Adaptation, n_tokens: int, original: bytes,
         stream: bytes) -> bytes:
    if not 0 <= preset < 16 or adaptation not in COMPACT_ADAPTATIONS \
            or not 1 <= n_tokens <= MAX_SEGMENT_TOKENS:
        raise ValueError("not a compact archive's fields")
    head = bytes([COMPACT_MAGIC, COMPACT_REVISION << 5 | (adaptation == Adaptation.COUNTS) << 4 | preset]) \
        + varint(n_tokens)
    return head + compact_checksum(head, original) + stream.rstrip(b"\0")


def unpack_compact(blob: bytes) -> Compact:
    """The fields of a compact archive, every one checked; CorruptArchiveError if any is
    out of range (the preset number is checked against the table by the codec)."""
    if not is_compact(blob):
        raise CorruptArchiveError("not a compact llmzip archive")
    r = Reader(blob, 1, len(blob))
    flags = r.byte("the compact header")
    if flags >> 5 != COMPACT_REVISION:
        raise CorruptArchiveError(f"compact archive revision {flags >> 5} is not one this "
                                  f"llmzip reads ({COMPACT_REVISION}); a newer llmzip wrote it?")
    n_tokens = r.varint("the token count")
    if not 1 <= n_tokens <= MAX_SEGMENT_TOKENS:
        raise CorruptArchiveError(f"compact archive declares {n_tokens:,} tokens (1 to "
                                  f"{MAX_SEGMENT_TOKENS:,} allowed)")
    head = blob[:r.pos]
    digest = r.take(COMPACT_CHECKSUM_BYTES, "the checksum")
    return Compact(flags & 0x0F, COMPACT_ADAPTATIONS[flags >> 4 & 1], n_tokens, digest, blob[r.pos:],
                   head)


def _describe_compact(blob: bytes) -> dict:
    c = unpack_compact(blob)
    return {"format_version": COMPACT_VERSION, "compact": True, "original_bytes": None,
            "archive_bytes": len(blob), "bpb": None, "checksum": c.checksum.hex(),
            "model": {"preset_number": c.preset, "arithmetic": "exact-v3",
                      "adaptation": c.adaptation.label},
            "blocks": [], "stream_bytes": [len(c.stream)], "copies": 0, "copied_bytes": 0,
            "model_tokens": c.n_tokens, "model_bytes": None}
