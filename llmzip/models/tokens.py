"""Bytes <-> token ids, lossless for any input; no model calls, no torch.

A detokenizer is never trusted: every token id is mapped once to the exact bytes it stands
for (`table`), decoding joins those bytes, and every tokenized run is checked against its
bytes at compression time. Bytes the text tokenizer cannot reproduce (invalid UTF-8,
characters a normalizer rewrites) fall back to the tokenizer's single-byte tokens, so any
input has a token sequence. Special tokens are never matched inside text, which leaves the
context-start token free to serve as an escape: a byte value the vocabulary lacks (SmolLM2
has no token for 21 of them, e.g. 0x04) is written as [escape, token of byte ^ 0x80].
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from llmzip.errors import ModelUnavailableError

__all__ = ["ByteTokenizer"]

_ESCAPED_BYTES = re.compile("[\udc80-\udcff]+")  # what 'surrogateescape' makes of invalid UTF-8
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _gpt2_unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's byte-level alphabet (each byte drawn as a printable character)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: b for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    return {chr(c): b for b, c in chars.items()}


def _byte_translation() -> dict[int, str]:
    """GPT-2's byte characters to latin-1 characters of the same byte values, for
    str.translate; every other character below 256 to one that latin-1 cannot encode, so
    a piece with any character outside the alphabet fails to encode as bytes."""
    table = {ord(c): chr(b) for c, b in _gpt2_unicode_to_byte().items()}
    table.update({c: "\uffff" for c in range(256) if c not in table})
    return table


def _is_byte_level(backend) -> bool:
    return backend.decoder is not None and "ByteLevel" in repr(backend.decoder)


def _token_table(backend, vocab_size: int) -> tuple[list[bytes], dict[int, int]]:
    """Bytes of every id below vocab_size, and the id standing for each single byte it has."""
    added = set(backend.get_added_tokens_decoder())  # special tokens are added tokens
    n = min(vocab_size, backend.get_vocab_size(with_added_tokens=True))
    pieces = [backend.id_to_token(i) for i in range(n)]
    byte_level = _is_byte_level(backend)
    to_byte = _byte_translation()
    table: list[bytes] = []
    byte_ids: dict[int, int] = {}
    for i, piece in enumerate(pieces):
        if piece is None:
            raw = b""
        elif i in added:
            raw = piece.encode("utf-8")
        elif byte_level:
            try:  # every character one of the 256 byte characters: those bytes
                raw = piece.translate(to_byte).encode("latin-1")
                if len(piece) == 1:
                    byte_ids.setdefault(raw[0], i)
            except UnicodeEncodeError:  # else the piece as text
                raw = piece.encode("utf-8")
        elif m := _BYTE_PIECE.fullmatch(piece):
            raw = bytes([int(m.group(1), 16)])
            byte_ids[raw[0]] = i
        else:
            raw = piece.replace("\u2581", " ").encode("utf-8")
        table.append(raw)
    table += [b""] * (vocab_size - n)
    return table, byte_ids


class ByteTokenizer:
    """Any bytes -> token ids -> the same bytes, over a Hugging Face `tokenizers.Tokenizer`
    (a model's tokenizer.json; transformers is not needed)."""

    def __init__(self, backend, vocab_size: int, escape_id: int):
        self.backend = backend
        backend.encode_special_tokens = True  # "<|endoftext|>" in a file is just text
        self.table, byte_ids = _token_table(backend, vocab_size)
        self.escape_id = escape_id
        self.byte_tokens: list[list[int]] = []  # byte value -> its token ids
        for b in range(256):
            if b in byte_ids:
                self.byte_tokens.append([byte_ids[b]])
            elif b ^ 0x80 in byte_ids:
                self.byte_tokens.append([escape_id, byte_ids[b ^ 0x80]])
            else:
                raise ModelUnavailableError(
                    f"the tokenizer has no token for byte 0x{b:02x} nor 0x{b ^ 0x80:02x}, so it "
                    "cannot code arbitrary bytes; use another model")
        self._escaped_byte = {byte_ids[b ^ 0x80]: b for b in range(256) if b not in byte_ids}
        missing_ascii = "".join(chr(b) for b in range(128) if b not in byte_ids)
        self._untokenizable = re.compile(
            "[\udc80-\udcff" + re.escape(missing_ascii) + "]+")

    def digest(self) -> bytes:
        """BLAKE2b-128 of the id -> bytes table and escapes: part of the model fingerprint."""
        h = hashlib.blake2b(digest_size=16)
        for raw in self.table:
            h.update(len(raw).to_bytes(2, "little") + raw)
        h.update(repr(self.byte_tokens).encode())
        return h.digest()

    def byte_lengths(self):
        """Bytes each token id spells (an escape counts 0: it only marks the next byte);
        a lower bound for any run of tokens, which the decoder uses to stop early."""
        lengths = np.array([len(raw) for raw in self.table], np.int64)
        lengths[self.escape_id] = 0
        return lengths

    def decode(self, ids) -> bytes:
        if self.escape_id not in ids:
            table = self.table
            return b"".join([table[i] for i in ids])
        return b"".join(self.pieces(ids))

    def pieces(self, ids) -> list[bytes]:
        """The bytes each token stands for: an escape stands for nothing and the token after
        it for the escaped byte, so the pieces join to `decode(ids)`."""
        out, table, i = [], self.table, 0
        while i < len(ids):
            if ids[i] == self.escape_id and i + 1 < len(ids) and ids[i + 1] in self._escaped_byte:
                out += [b"", bytes([self._escaped_byte[ids[i + 1]]])]
                i += 2
            else:
                out.append(table[ids[i]])
                i += 1
        return out

    def encode(self, data: bytes) -> list[int]:
        """Token ids whose decoding is exactly `data`."""
        text = data.decode("utf-8", "surrogateescape")
        ids: list[int] = []
        pos = 0
        for m in self._untokenizable.finditer(text):
            ids += self._encode_text(text[pos:m.start()])
            ids += self._encode_bytes(m.group().encode("utf-8", "surrogateescape"))
            pos = m.end()
        ids += self._encode_text(text[pos:])
        return ids

    def _encode_bytes(self, raw: bytes) -> list[int]:
        return [i for b in raw for i in self.byte_tokens[b]]

    def _tokenize(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def _encode_text(self, text: str) -> list[int]:
        """Tokenize valid text; runs whose tokens do not spell them fall back line by line,
        then to single-byte tokens."""
        if not text:
            return []
        ids = self._tokenize(text)
        if self.decode(ids) == text.encode("utf-8"):
            return ids
        out: list[int] = []
        for line in text.splitlines(keepends=True):
            raw = line.encode("utf-8")
            line_ids = self._tokenize(line)
            out += line_ids if self.decode(line_ids) == raw else self._encode_bytes(raw)
        return out
