"""Text inside binary input: cutting a file into its text stream and its binary stream, and
joining them back; pure functions.

A tar of source files, an mbox with attachments, a binary with long strings: text runs
between bytes no language model predicts. Cut into segments as it comes, most segments hold
some binary and fail `segments.looks_like_text`, so the text never reaches the model. A
layout takes the text runs out and joins them into one text stream, which is coded like any
text file (copies, segments, model or LZMA), with the context running on from one run to
the next as in the files concatenated; the bytes between the runs are joined into one
binary stream, coded as one classical block (LZMA, or stored), where tar's headers, alike from member to member,
cost a few bytes each.

Two ways to say where the runs are (`container.LayoutKind`):
- RUNS, for any file: the (binary, text) byte counts in the header, found by `text_runs`:
  each run of valid UTF-8 text without control bytes, of at least MIN_RUN bytes.
- TAR, for a tar archive (ustar, GNU or pax): one flag per member, whether its contents are
  text; the decoder reads each member's size from its header in the binary stream and walks
  it as the encoder walked the tar (`tar_join`), so the runs cost nothing, and neither do
  the text members' padding and the headers' checksums; the members' names are read from
  the text stream, a line each, before their contents. Contents are text when the member
  is a regular file of at least MIN_RUN bytes that `looks_like_text`.

A file gets a layout only when it is mixed: some window of WINDOW bytes does not look like
text. Text files, even with a stray control byte, are coded as they always were.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from llmzip.codec.segments import looks_like_text
from llmzip.container import LayoutKind
from llmzip.errors import CorruptArchiveError

__all__ = ["MIN_RUN", "Cut", "plan", "split", "join", "text_runs", "tar_split", "tar_join",
           "is_mixed"]

MIN_RUN = 64  # bytes: a shorter text run stays in the binary stream (a field name, a path)
WINDOW = 4096  # bytes: a file whose every window looks like text gets no layout
TAR_BLOCK = 512
NAME_BYTES = 100  # a tar header's name field

# One text byte: a tab, line or page break, ESC, printable ASCII, or a whole valid UTF-8
# sequence (what `looks_like_text` accepts, byte by byte).
_TEXT_BYTE = (rb"[\t\n\x0b\x0c\r\x1b\x20-\x7e]|[\xc2-\xdf][\x80-\xbf]"
              rb"|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}"
              rb"|\xed[\x80-\x9f][\x80-\xbf]|\xf0[\x90-\xbf][\x80-\xbf]{2}"
              rb"|[\xf1-\xf3][\x80-\xbf]{3}|\xf4[\x80-\x8f][\x80-\xbf]{2}")
_TEXT_RUN = re.compile(rb"(?:" + _TEXT_BYTE + rb"){%d,}" % MIN_RUN)


@dataclass
class Cut:
    """A mixed file cut in two: its text stream and its binary stream, and how to join them
    (`runs` for RUNS, the members' text flags for TAR)."""

    kind: LayoutKind
    text: bytes
    binary: bytes
    runs: list[tuple[int, int]] = field(default_factory=list)
    members: tuple[bool, ...] = ()


def is_mixed(data: bytes) -> bool:
    return any(not looks_like_text(data[i:i + WINDOW]) for i in range(0, len(data), WINDOW))


def plan(data: bytes, tar: bool = True) -> Cut | None:
    """How to cut a mixed file (None: no layout): a tar by its members (unless tar is
    False), anything else by its text runs."""
    if not is_mixed(data):
        return None
    cut = tar_split(data) if tar else None
    if cut is not None and tar_join(cut.text, cut.binary, cut.members) == data:
        return cut
    runs = text_runs(data)
    return Cut(LayoutKind.RUNS, *split(data, runs), runs=runs) if runs else None


def text_runs(data: bytes) -> list[tuple[int, int]]:
    runs, end = [], 0
    for m in _TEXT_RUN.finditer(data):
        runs.append((m.start() - end, m.end() - m.start()))
        end = m.end()
    return runs


def split(data: bytes, runs: list[tuple[int, int]]) -> tuple[bytes, bytes]:
    """(text stream, binary stream)."""
    text, binary, pos = [], [], 0
    for b, t in runs:
        binary.append(data[pos:pos + b])
        text.append(data[pos + b:pos + b + t])
        pos += b + t
    binary.append(data[pos:])
    return b"".join(text), b"".join(binary)


def join(text: bytes, binary: bytes, runs: list[tuple[int, int]]) -> bytes:
    """The file, from its two streams; the runs must use up the text and fit the binary."""
    if sum(t for _, t in runs) != len(text) or sum(b for b, _ in runs) > len(binary):
        raise CorruptArchiveError("the layout's runs do not tile the decoded streams (damaged)")
    out, ti, bi = [], 0, 0
    for b, t in runs:
        out += [binary[bi:bi + b], text[ti:ti + t]]
        bi, ti = bi + b, ti + t
    out.append(binary[bi:])
    return b"".join(out)


# --- tar --------------------------------------------------------------------------------------
# What a tar's binary stream leaves out, the decoder puts back: a text member's padding (NUL
# bytes to the next block), every header's checksum (blanked to the eight spaces it is
# computed with) and every member's name, which the text stream holds on a line of its own,
# where the model codes it better than LZMA. Measured on a tar of 60 C headers, the binary
# stream's LZMA: 1,173 bytes as the tar has it, 839 without padding and checksums, 399
# without names. A member whose header is not written the usual way (checksum: six octal
# digits, NUL, space; name: text, then NUL bytes) ends the walk: it and all after it stay
# in the binary stream as they are.

def _member_size(header: bytes) -> int | None:
    """A tar header's size field: octal digits (NUL or space ended), or GNU's base-256."""
    field = header[124:136]
    if field[0] & 0x80:
        return int.from_bytes(field[1:], "big") if field[0] == 0x80 else None
    digits = field.split(b"\0", 1)[0].strip(b" ")
    return int(digits, 8) if digits and all(48 <= c <= 55 for c in digits) else None


def _checksum_field(header: bytes) -> bytes:
    """The header's checksum as tar writes it, over the header with the field as spaces."""
    return b"%06o\0 " % (sum(header[:148]) + 8 * 32 + sum(header[156:]))


def _member_name(header: bytes) -> bytes | None:
    """The name field's text, if it is written the usual way: text, then NUL bytes only,
    and no line break (the text stream ends each name with one)."""
    name, _, rest = header[:NAME_BYTES].partition(b"\0")
    if rest.strip(b"\0") or b"\n" in name or not looks_like_text(name or b" "):
        return None
    return name


def _blanked(header: bytes) -> bytes:
    """The header as the binary stream holds it: name NUL, checksum spaces."""
    return bytes(NAME_BYTES) + header[NAME_BYTES:148] + b" " * 8 + header[156:]


def tar_split(data: bytes) -> Cut | None:
    """A tar's two streams and its members' text flags, walking member by member up to the
    end-of-archive block or the first header that is not a whole member's, written the usual
    way (the rest goes to the binary stream as it is); None unless some member is text."""
    flags, text, binary, pos = [], [], [], 0
    while pos + TAR_BLOCK <= len(data):
        header = data[pos:pos + TAR_BLOCK]
        size, name = _member_size(header), _member_name(header)
        if size is None or name is None or header[148:156] != _checksum_field(header):
            break
        start, end = pos + TAR_BLOCK, pos + TAR_BLOCK + size + -size % TAR_BLOCK
        if end > len(data):
            break
        contents = data[start:start + size]
        is_text = (header[156:157] in (b"0", b"\0", b"7") and size >= MIN_RUN
                   and not data[start + size:end].strip(b"\0") and looks_like_text(contents))
        flags.append(is_text)
        binary.append(_blanked(header))
        text.append(name + b"\n")
        if is_text:
            text.append(contents)
        else:
            binary.append(data[start:end])
        pos = end
    if not any(flags):
        return None
    binary.append(data[pos:])
    return Cut(LayoutKind.TAR, b"".join(text), b"".join(binary), members=tuple(flags))


def tar_join(text: bytes, binary: bytes, members: tuple[bool, ...]) -> bytes:
    """The tar from its two streams: each member's header from the binary stream with its
    name (from the text stream) and checksum put back, then its contents from the text
    stream (then NUL padding) if flagged as text, else from the binary stream."""
    out, t, pos = [], 0, 0
    for is_text in members:
        header = binary[pos:pos + TAR_BLOCK]
        size = _member_size(header) if len(header) == TAR_BLOCK else None
        if size is None:
            raise CorruptArchiveError("tar layout: a member header is missing or has no size "
                                      "(damaged)")
        end = text.find(b"\n", t, t + NAME_BYTES + 1)
        if end < 0:
            raise CorruptArchiveError("tar layout: a member name is missing from the text "
                                      "stream (damaged)")
        header = text[t:end].ljust(NAME_BYTES, b"\0") + header[NAME_BYTES:]
        out.append(header[:148] + _checksum_field(header) + header[156:])
        t, pad, pos = end + 1, -size % TAR_BLOCK, pos + TAR_BLOCK
        if is_text:
            if t + size > len(text):
                raise CorruptArchiveError("tar layout: a member runs past the text stream "
                                          "(damaged)")
            out += [text[t:t + size], bytes(pad)]
            t += size
        else:
            if pos + size + pad > len(binary):
                raise CorruptArchiveError("tar layout: a member runs past the binary stream "
                                          "(damaged)")
            out.append(binary[pos:pos + size + pad])
            pos += size + pad
    if t != len(text):
        raise CorruptArchiveError("the layout's runs do not tile the decoded streams (damaged)")
    out.append(binary[pos:])
    return b"".join(out)
