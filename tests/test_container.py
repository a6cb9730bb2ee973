"""Archive bytes: layout, round trip of every field, rejection of damaged and crafted input,
and files of several archives back to back."""

import dataclasses
import re
import zlib

import pytest

from llmzip.container import (
    MAX_BUCKET_SIZE,
    MAX_GROUP_SIZE,
    MAX_SEGMENT_TOKENS,
    MAX_THREADS,
    Adaptation,
    Arithmetic,
    Block,
    Copy,
    Header,
    Method,
    ModelInfo,
    check_bucket_size,
    describe,
    pack,
    split_members,
    unpack,
)
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


def _with_copies(copies, original=None, adaptation=Adaptation.NONE) -> tuple:
    """The sample's blocks (317 literal bytes) with copies after them."""
    header, payloads, streams = _sample()
    header.copies = copies
    header.model = dataclasses.replace(MODEL, adaptation=adaptation)
    header.original_size = original or 317 + sum(c.size for c in copies)
    return header, payloads, streams


@pytest.mark.parametrize("adaptation", list(Adaptation))
def test_copies_round_trip_in_format_version_4_with_any_adaptation(adaptation):
    copies = [Copy(100, 0, 50), Copy(200, 10, 150), Copy(400, 0, 400)]  # 317 literal bytes
    header, payloads, streams = _with_copies(copies, adaptation=adaptation)
    blob = pack(header, payloads, streams)
    assert blob[4] == 4
    got = unpack(blob)[0]
    assert got.copies == copies and got.model.adaptation == adaptation
    assert got == header
    facts = describe(blob)
    assert facts["copies"] == 3 and facts["copied_bytes"] == 600


def test_an_archive_without_copies_keeps_its_older_format_version():
    for adaptation, version in ((Adaptation.NONE, 1), (Adaptation.COUNTS, 3)):
        header, payloads, streams = _with_copies([], adaptation=adaptation)
        assert pack(header, payloads, streams)[4] == version


def test_copies_and_blocks_must_add_up_to_the_original_size():
    with pytest.raises(CorruptArchiveError, match="blocks do not add up to the original size"):
        unpack(pack(*_with_copies([Copy(317, 0, 300)], original=618)))


def test_describe_reports_header_facts_without_a_model():
    facts = describe(pack(*_sample()))
    assert facts["model"]["name"] == "smollm2-135m"
    assert facts["model"]["arithmetic"] == "exact-v3"
    assert [b["method"] for b in facts["blocks"]] == ["stored", "model", "lzma"]
    assert facts["blocks"][1]["tokens"] == 80


# --- crafted headers: fields edited and the CRC recomputed (pack does both) ------------------

FLOAT_MODEL = ModelInfo("m", bytes(16), Arithmetic.FLOAT, 512, 4, 256, threads=2,
                        runtime="torch 2.13.0+cpu x86_64")
TEXT_BYTES = 2500  # the size of the text in the 424-byte archive


def _model_archive(model=MODEL, blocks=None, streams=None) -> bytes:
    """A valid archive of MODEL blocks, with `model` or `blocks` replaced by crafted ones."""
    blocks = blocks or [Block(Method.MODEL, TEXT_BYTES, n_tokens=700)]
    n_groups = -(-len(blocks) // max(model.group_size, 1))
    streams = [b"\0" * 8] * n_groups if streams is None else streams
    return pack(Header(sum(b.raw_size for b in blocks), bytes(8), blocks, model), [], streams)


def _with(**fields) -> bytes:
    base = FLOAT_MODEL if "threads" in fields or "runtime" in fields else MODEL
    return _model_archive(dataclasses.replace(base, **fields))


def _sealed(body: bytes) -> bytes:
    """An archive around a raw header body, for fields pack() would not write."""
    from llmzip.container import varint
    out = b"LLMZ\x01" + varint(len(body)) + body
    return out + zlib.crc32(out).to_bytes(4, "little")


CRAFTED = [
    # the cases
    pytest.param(lambda: _model_archive(blocks=[Block(Method.MODEL, 40000, n_tokens=16385)],
                                        model=dataclasses.replace(MODEL, segment_tokens=16384)),
                 "token count 16385 is outside 1..16384", id="model-block-16385-tokens"),
    pytest.param(lambda: _model_archive(blocks=[Block(Method.MODEL, TEXT_BYTES, n_tokens=10**9)]),
                 "token count 1000000000 is outside", id="model-block-10^9-tokens"),
    pytest.param(lambda: _model_archive(blocks=[Block(Method.MODEL, TEXT_BYTES, n_tokens=16384)],
                                        model=dataclasses.replace(MODEL, segment_tokens=16384)),
                 "token count 16384 is outside 1..5000 for 2500 bytes",
                 id="bomb-16384-tokens-in-2500-bytes"),
    pytest.param(lambda: _model_archive(
        blocks=[Block(Method.MODEL, TEXT_BYTES // 8, n_tokens=16384)] * 8,
        model=dataclasses.replace(MODEL, segment_tokens=16384, group_size=8)),
                 "block 1 (model) token count 16384 is outside 1..624",
                 id="8-blocks-of-16384-tokens-in-one-group"),
    pytest.param(lambda: _with(bucket_size=2**62), "bucket size 4611686018427387904 is outside "
                 "2..1048576", id="bucket-size-2^62"),
    pytest.param(lambda: _with(bucket_size=2**31), "bucket size 2147483648 is outside",
                 id="bucket-size-2^31"),
    pytest.param(lambda: _with(threads=10**4), "thread count 10000 is outside 1..1024",
                 id="float-threads-10^4"),
    pytest.param(lambda: _with(threads=10**6), "thread count 1000000 is outside",
                 id="float-threads-10^6"),
    pytest.param(lambda: _with(threads=2**31), "thread count 2147483648 is outside",
                 id="float-threads-2^31"),
    pytest.param(lambda: _with(threads=2**62), "thread count 4611686018427387904 is outside",
                 id="float-threads-2^62"),
    pytest.param(lambda: _model_archive(blocks=[Block(Method.MODEL, 0, n_tokens=0)]),
                 "block 1 (model) is empty", id="empty-model-block"),
    # the same limits at their other ends, and the fields beside them
    pytest.param(lambda: _model_archive(blocks=[Block(Method.MODEL, 10, n_tokens=0)]),
                 "token count 0 is outside 1..20", id="model-block-without-tokens"),
    pytest.param(lambda: _model_archive(blocks=[Block(Method.MODEL, 500, n_tokens=700)],
                                        model=dataclasses.replace(MODEL, segment_tokens=600)),
                 "token count 700 is outside 1..601", id="model-block-longer-than-segments"),
    pytest.param(lambda: _with(threads=0), "thread count 0 is outside", id="float-threads-0"),
    pytest.param(lambda: _with(bucket_size=0), "bucket size 0 is outside", id="bucket-size-0"),
    pytest.param(lambda: _with(bucket_size=1), "bucket size 1 is outside", id="bucket-size-1"),
    pytest.param(lambda: _with(segment_tokens=0), "segment length 0 is outside 1..16384",
                 id="segment-length-0"),
    pytest.param(lambda: _with(segment_tokens=16385), "segment length 16385 is outside",
                 id="segment-length-16385"),
    pytest.param(lambda: _with(group_size=0), "group size 0 is outside 1..256",
                 id="group-size-0"),
    pytest.param(lambda: _with(group_size=257), "group size 257 is outside", id="group-size-257"),
    pytest.param(lambda: _with(group_size=10**9), "group size 1000000000 is outside",
                 id="group-size-10^9"),
    pytest.param(lambda: _with(name=""), "model name '' is empty or not printable",
                 id="model-name-empty"),
    pytest.param(lambda: _with(name="tiny\nllmzip: all good"), "model name 'tiny\\nllmzip",
                 id="model-name-with-newline"),
    pytest.param(lambda: _with(name="\x1b[2Jm"), "model name '\\x1b[2Jm' is empty or not",
                 id="model-name-with-terminal-escape"),
    pytest.param(lambda: _with(runtime="torch\r"), "runtime 'torch\\r' is empty or not",
                 id="runtime-with-carriage-return"),
    pytest.param(lambda: _model_archive(streams=[b"\0" * 6]), "stream 1 size 6 is not a whole "
                 "number of 32-bit words", id="stream-of-6-bytes"),
    pytest.param(lambda: _model_archive(streams=[b""]), "stream 1 size 0 is not",
                 id="empty-stream"),
    pytest.param(lambda: pack(Header(10, bytes(8), [Block(Method.STORED, 10, payload_size=4)]),
                              [b"abcd"], []),
                 "block 1 (stored) stores 4 bytes for 10", id="stored-block-shorter-than-size"),
    pytest.param(lambda: pack(Header(10, bytes(8), [Block(Method.LZMA, 10, payload_size=0)]),
                              [b""], []),
                 "block 1 (lzma) has no payload", id="lzma-block-without-payload"),
    pytest.param(lambda: pack(Header(0, bytes(8), [Block(Method.STORED, 0)]), [b""], []),
                 "block 1 (stored) is empty", id="empty-stored-block"),
    pytest.param(lambda: pack(*_with_copies([Copy(400, 100, 301)])),
                 "copy 1 of 301 bytes from byte 100 to byte 400 is empty, overlaps its source",
                 id="copy-overlapping-its-source"),
    pytest.param(lambda: pack(*_with_copies([Copy(317, -1, 10)])),
                 "copy 1 of 10 bytes from byte -1 to byte 317", id="copy-from-before-the-file"),
    pytest.param(lambda: pack(*_with_copies([Copy(317, 0, 0)])),
                 "copy 1 of 0 bytes from byte 0 to byte 317 is empty", id="empty-copy"),
    pytest.param(lambda: pack(*_with_copies([Copy(317, 0, 100), Copy(500, 0, 2**40)],
                                            original=317 + 100 + 2**40)),
                 "copy 2 of 1099511627776 bytes from byte 0 to byte 500 is empty, overlaps its "
                 "source or leaves the file of 1099511628193 bytes", id="copy-past-the-end"),
    pytest.param(lambda: _sealed(b"\0" + bytes(8) + b"\0" + b"\x80\x94\xeb\xdc\x03"),
                 "block count 1000000000 does not fit in the header", id="block-count-10^9"),
]


@pytest.mark.parametrize("make, message", CRAFTED)
def test_crafted_header_is_refused_naming_the_field(make, message):
    with pytest.raises(CorruptArchiveError) as caught:
        unpack(make())
    text = str(caught.value)
    assert text.startswith("archive header: ") and message in text, text
    assert "\n" not in text


@pytest.mark.parametrize("make, message", CRAFTED)
def test_crafted_header_is_refused_by_info_and_member_splitting(make, message):
    blob = make()
    for read in (describe, split_members):
        with pytest.raises(CorruptArchiveError, match=re.escape(message)):
            read(blob)


def test_largest_settings_an_encoder_may_write_are_accepted():
    model = dataclasses.replace(FLOAT_MODEL, segment_tokens=MAX_SEGMENT_TOKENS,
                                group_size=MAX_GROUP_SIZE, bucket_size=MAX_BUCKET_SIZE,
                                threads=MAX_THREADS)
    blocks = [Block(Method.MODEL, 8192, n_tokens=MAX_SEGMENT_TOKENS)]
    header, _, _ = unpack(_model_archive(model, blocks))
    assert header.model == model and header.blocks == blocks


def test_segment_limit_is_the_exact_arithmetic_bound():
    from llmzip.engine.exact.rules import MAX_KEYS
    assert MAX_SEGMENT_TOKENS == MAX_KEYS


@pytest.mark.parametrize("bucket_size, vocab_size, ok", [
    pytest.param(16, 400, True, id="tiny-model-16-of-400"),
    pytest.param(256, 49152, True, id="smollm2-256-of-49152"),
    pytest.param(512, 262144, True, id="gemma3-512-of-262144"),
    pytest.param(3, 400, True, id="3-of-400-fits-the-vocabulary"),
    pytest.param(400, 400, True, id="one-bucket-of-the-whole-vocabulary"),
    pytest.param(401, 400, False, id="larger-than-the-vocabulary"),
    pytest.param(1, 400, False, id="1"),
    pytest.param(0, 400, False, id="0"),
    pytest.param(2, 2**22, False, id="2-million-buckets"),
])
def test_bucket_size_is_checked_against_the_vocabulary(bucket_size, vocab_size, ok):
    if ok:
        check_bucket_size(bucket_size, vocab_size)
    else:
        with pytest.raises(CorruptArchiveError, match=f"bucket size {bucket_size} does not fit "
                           f"the model's vocabulary of {vocab_size} tokens"):
            check_bucket_size(bucket_size, vocab_size)


def test_describe_totals_the_declared_work():
    facts = describe(pack(*_sample()))
    assert facts["original_bytes"] == 317
    assert facts["model_tokens"] == 80 and facts["model_bytes"] == 300


# --- several archives back to back (gzip's members) ------------------------------------------

def _two_members() -> tuple[bytes, bytes]:
    first = pack(*_sample())
    second = pack(Header(3, b"\x02" * 8, [Block(Method.STORED, 3, payload_size=3)]), [b"abc"], [])
    return first, second


def test_one_archive_is_one_member():
    blob = pack(*_sample())
    assert split_members(blob) == [blob]


def test_archives_back_to_back_split_into_members_in_order():
    first, second = _two_members()
    assert split_members(first + second + first) == [first, second, first]


def test_trailing_garbage_after_a_member_is_refused():
    first, _ = _two_members()
    with pytest.raises(CorruptArchiveError, match=r"^trailing garbage after archive member 1 "
                       r"\(5 bytes, not an archive\)$"):
        split_members(first + b"\0\0\0\0\0")


def test_damaged_second_member_is_named_with_its_offset():
    first, second = _two_members()
    damaged = bytearray(first + second)
    damaged[-5] ^= 0x01
    with pytest.raises(CorruptArchiveError, match=rf"^archive member 2 \(at byte {len(first)}\): "
                       r"archive is damaged or truncated \(CRC-32 mismatch\)$"):
        split_members(bytes(damaged))


def test_damaged_single_archive_reads_as_damage_not_as_a_bad_field():
    damaged = bytearray(pack(*_sample()))
    damaged[20] ^= 0x01
    with pytest.raises(CorruptArchiveError, match=r"CRC-32 mismatch"):
        split_members(bytes(damaged))


def test_every_truncation_of_two_members_but_the_boundary_is_detected():
    first, second = _two_members()
    blob = first + second
    for length in range(len(blob)):
        if length == len(first):
            assert split_members(blob[:length]) == [first]
            continue
        with pytest.raises(CorruptArchiveError):
            split_members(blob[:length])
