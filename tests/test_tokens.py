"""Bytes <-> tokens: lossless for any input, escapes for bytes a vocabulary lacks."""

import random
from pathlib import Path

import pytest
from conftest import corpus_file
from tokenizers import Tokenizer

from llmzip.models.tokens import ByteTokenizer

EDGE_CASES = {
    "empty": b"",
    "one byte": b"a",
    "invalid utf-8": b"caf\xe9 \xff\xfe \xc3\x28 ok",
    "nul bytes": b"\x00\x00abc\x00",
    "control bytes": bytes(range(32)) * 3,
    "every byte": bytes(range(256)),
    "special token text": b"<|endoftext|> is only text here",
    "unicode": "naïve café 中文 😀 \u2581 \r\n".encode(),
    "random": random.Random(0).randbytes(4096),
}


def _byte_tokenizer(directory, escape_id=0):
    backend = Tokenizer.from_file(str(Path(directory) / "tokenizer.json"))
    return ByteTokenizer(backend, backend.get_vocab_size(with_added_tokens=True), escape_id)


@pytest.fixture(scope="module")
def full(tiny_llama):
    return _byte_tokenizer(tiny_llama)


@pytest.fixture(scope="module")
def partial(tiny_llama_missing_bytes):
    return _byte_tokenizer(tiny_llama_missing_bytes)


@pytest.mark.parametrize("data", EDGE_CASES.values(), ids=EDGE_CASES.keys())
def test_round_trip_is_exact(full, data):
    assert full.decode(full.encode(data)) == data


@pytest.mark.parametrize("data", EDGE_CASES.values(), ids=EDGE_CASES.keys())
def test_round_trip_with_missing_byte_tokens(partial, data):
    assert partial.decode(partial.encode(data)) == data


def test_missing_bytes_are_escaped_with_the_context_start_token(partial):
    ids = partial.encode(b"a\x04b")
    assert ids[1] == 0 and partial.table[ids[2]] == bytes([0x04 ^ 0x80])
    assert partial.byte_tokens[0xFF] == [0, partial.byte_tokens[0x7F][0]]


def test_special_token_text_is_not_a_special_token(full):
    assert 0 not in full.encode(b"<|endoftext|>")


def test_text_compresses_to_fewer_tokens_than_bytes(full):
    text = corpus_file("alice29.txt")[:5000]
    assert len(full.encode(text)) < len(text) * 0.6  # a 400-token BPE: ~1.9 bytes/token


def test_digest_identifies_the_table(full, partial):
    assert full.digest() != partial.digest()
    assert len(full.digest()) == 16
