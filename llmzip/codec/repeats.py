"""Long repeats: copies of earlier bytes, found before the model sees the file; pure functions.

The model sees 4,096 tokens at a time and LZMA sees one run of the blocks the model did not
code, so a passage repeated from far back (a document pasted twice, a file that appears
twice in an archive, a template emitted every few hundred kilobytes) was coded again
at full price: the corpus's texts repeated to 1 MB came out at 2.03 bits per byte, where
xz alone gets 0.97. A copy costs a few bytes in the header wherever its source is, so
such repeats are taken out of the file before it is cut into segments (`copies`), the
rest (the literal bytes) is coded as before, and the decoder puts the copies back
(`restore`) before checking the content checksum.

Near repeats are left to the model, which predicts a repeat within its window for a
fraction of a bit a token, and to the adapter's counts (`adapt`); a copy also cuts the
text the model reads, and what follows the cut loses its context. Measured
(bench/repeats.py): argparse.py's five repeats of 265-400 bytes from 0.8-2.8 KB back made
its archive 1.1% bigger as copies. So a copy must be at least MIN_COPY bytes and come from
at least FAR bytes back (beyond a segment's 4,096 tokens of text), or be LONG_COPY bytes
or more, which the model cannot code for less than the copy's few bytes even in its
window.

Copies never overlap their source (source + size <= dest), so each is one slice of bytes
already restored; their destinations are in file order.
"""

from __future__ import annotations

from llmzip.container import Copy
from llmzip.errors import CorruptArchiveError

__all__ = ["MIN_COPY", "copies", "literal", "restore"]

MIN_COPY = 256  # bytes: shorter repeats are left to the model
FAR = 16384  # bytes back: a source nearer than this is in the model's window...
LONG_COPY = 4096  # ...and is copied only from this many bytes
WINDOW = 32  # bytes hashed at every position, looked up among windows at multiples of WINDOW
_STRIDES = (4096, 256, 16, 1)  # how a match is extended: big equal slices first


def copies(data: bytes, min_copy: int = MIN_COPY, far: int = FAR,
           long_copy: int = LONG_COPY) -> list[Copy]:
    """Repeats of earlier data, greedy in file order: at least min_copy bytes from at least
    far bytes back, or at least long_copy bytes from anywhere.

    Every WINDOW-byte window at a multiple of WINDOW is indexed with its first and latest
    places (the first lets a periodic run copy ever longer stretches of itself; the latest
    is the nearer context); each position's window is looked up, and a hit is extended
    forward and back to the longest equal run that does not overlap its source. A repeat
    of at least 2 * WINDOW - 1 bytes always holds an indexed window, so none of min_copy or
    more is missed for want of an index entry (a window seen three times or more may still
    point to shorter sources than the best)."""
    index: dict[bytes, tuple[int, int]] = {}  # window -> (first, latest) place
    found: list[Copy] = []
    n, i, indexed, last_end = len(data), 0, 0, 0
    while i + WINDOW <= n:
        while indexed + WINDOW <= i:
            key = data[indexed:indexed + WINDOW]
            index[key] = (index.get(key, (indexed,))[0], indexed)
            indexed += WINDOW
        places = index.get(data[i:i + WINDOW])
        if places is not None:
            size, source = max(((_extend(data, p, i, min(n - i, i - p)), p) for p in set(places)),
                               key=lambda hit: (hit[0], -hit[1]))  # the farther on a tie
            back = 0
            while (i - back > last_end and source - back > 0 and size + back < i - source
                   and data[source - back - 1] == data[i - back - 1]):
                back += 1
            size += back
            if size >= min_copy and (i - source >= far or size >= long_copy):
                found.append(Copy(i - back, source - back, size))
                i += size - back
                last_end = i
                continue
        i += 1
    return found


def _extend(data: bytes, source: int, dest: int, limit: int) -> int:
    """How many bytes from dest equal those from source, at most limit."""
    size = 0
    for stride in _STRIDES:
        while size + stride <= limit and \
                data[source + size:source + size + stride] == data[dest + size:dest + size + stride]:
            size += stride
    return size


def literal(data: bytes, found: list[Copy]) -> bytes:
    """The bytes no copy covers, in order: what the model and LZMA code."""
    parts, pos = [], 0
    for c in found:
        parts.append(data[pos:c.dest])
        pos = c.dest + c.size
    parts.append(data[pos:])
    return b"".join(parts)


def restore(literal_bytes: bytes, found: list[Copy], original_size: int) -> bytes:
    """The file from its literal bytes and copies (checked by `container`: in order, inside
    the file, each source before its destination)."""
    if len(literal_bytes) + sum(c.size for c in found) != original_size:
        raise CorruptArchiveError("literal bytes and copies do not add up to the original "
                                  "size (damaged)")
    out = bytearray(original_size)
    pos = lit = 0
    for c in found:
        gap = c.dest - pos
        out[pos:c.dest] = literal_bytes[lit:lit + gap]
        lit += gap
        out[c.dest:c.dest + c.size] = out[c.source:c.source + c.size]
        pos = c.dest + c.size
    out[pos:] = literal_bytes[lit:]
    return bytes(out)
