"""Archive bytes: layout, round trip of every field, and rejection of damaged input."""

import zlib

import pytest

from llmzip.container import (Arithmetic, Block, Header, Method, ModelInfo, describe, pack,
                              unpack)
from llmzip.errors import CorruptArchiveError

MODEL = ModelInfo(name="smollm2-135m", fingerprint=bytes(range(16)),
                  arithmetic=Arithmetic.EXACT_V3, segment_tokens=2048, group_size=16,
                  bucket_size=256)


def _sample():
    header = Header(original_size=10 + 300 + 7, checksum=b"\x01" * 8, model=MODEL,
                    blocks=[Block(Method.STORED, 10, payload_size=10),
                            Block(Method.MODEL, 300, n_tokens=80),
                            Block(Method.LZMA, 7, payload_size=5)])
    return header, [b"0123456789", b"lzma!"], [b"\xaa" * 12]


def test_pack_then_unpack_returns_every_field():
    header, payloads, streams = _sample()
    blob = pack(header, payloads, streams)
    got, got_payloads, got_streams = unpack(blob)
    assert got == header
    assert got_payloads == payloads and got_streams == streams


def test_layout_is_magic_version_header_payloads_crc():
    header, payloads, streams = _sample()
    blob = pack(header, payloads, streams)
    assert blob[:5] == b"LLMZ\x01"
    assert blob[-4:] == zlib.crc32(blob[:-4]).to_bytes(4, "little")
    assert blob[-4 - 12:-4] == b"\xaa" * 12  # streams come last


def test_float_archives_record_threads_and_runtime():
    info = ModelInfo("m", bytes(16), Arithmetic.FLOAT, 512, 4, 256, threads=2,
                     runtime="torch 2.13.0+cpu x86_64")
    header = Header(3, bytes(8), [Block(Method.MODEL, 3, n_tokens=2)], info)
    got, _, _ = unpack(pack(header, [], [b"\0\0\0\0"]))
    assert got.model == info


def test_archive_without_model_costs_30_bytes_for_16_kib_stored():
    data = bytes(16384)
    header = Header(len(data), bytes(8), [Block(Method.STORED, len(data), payload_size=len(data))])
    assert len(pack(header, [data], [])) == len(data) + 30


def test_empty_input_archive():
    blob = pack(Header(0, bytes(8), []), [], [])
    assert unpack(blob)[0].blocks == []
    assert describe(blob)["original_bytes"] == 0


@pytest.mark.parametrize("blob, message", [
    (b"", "not an llmzip archive"),
    (b"PK\x03\x04rest-of-a-zip", "not an llmzip archive (starts with b'PK\\x03\\x04')"),
    (b"LLMZ", "archive is truncated"),
])
def test_foreign_or_short_input_is_rejected(blob, message):
    with pytest.raises(CorruptArchiveError) as caught:
        unpack(blob)
    assert str(caught.value) == message or str(caught.value).startswith(message + " (")


def test_every_single_byte_flip_is_detected():
    blob = pack(*_sample())
    for offset in range(len(blob)):
        damaged = bytearray(blob)
        damaged[offset] ^= 0x40
        with pytest.raises(CorruptArchiveError):
            unpack(bytes(damaged))


def test_every_truncation_is_detected():
    blob = pack(*_sample())
    for length in range(len(blob)):
        with pytest.raises(CorruptArchiveError):
            unpack(blob[:length])


def test_newer_format_version_asks_for_an_upgrade():
    blob = bytearray(pack(*_sample()))
    blob[4] = 9
    blob[-4:] = zlib.crc32(bytes(blob[:-4])).to_bytes(4, "little")
    with pytest.raises(CorruptArchiveError, match="version 9 is not supported.*upgrade llmzip"):
        unpack(bytes(blob))


def test_describe_reports_header_facts_without_a_model():
    facts = describe(pack(*_sample()))
    assert facts["model"]["name"] == "smollm2-135m"
    assert facts["model"]["arithmetic"] == "exact-v3"
    assert [b["method"] for b in facts["blocks"]] == ["stored", "model", "lzma"]
    assert facts["blocks"][1]["tokens"] == 80
