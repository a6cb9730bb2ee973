"""Fuzzing the archive reader: random bytes, damaged archives, and crafted headers.

An archive is untrusted input. Two tiers share these tests: the default run (CI) tries a few
hundred examples in well under a minute; `make fuzz` sets LLMZIP_FUZZ_EXAMPLES=100000 for a
long run. Tests at the container level take microseconds per example and check the reader
against a second statement of the format's limits (`_acceptable`); tests at the command
level decode with the committed tiny model, in process, and check that every archive ends
in an exit code and at most one line, never a traceback.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import corpus_file
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from llmzip import Codec
from llmzip.cli.commands import main
from llmzip.container import (
    Arithmetic,
    Block,
    Copy,
    Header,
    Layout,
    LayoutKind,
    Method,
    ModelInfo,
    describe,
    pack,
    split_members,
    unpack,
    unpack_compact,
)
from llmzip.errors import CorruptArchiveError

EXAMPLES = int(os.environ.get("LLMZIP_FUZZ_EXAMPLES", "200"))
DECODE_EXAMPLES = max(EXAMPLES // 4, 25)  # each one runs the model: ~0.1 s
TINY_LLAMA = str(Path(__file__).parent / "models" / "tiny-llama")
GOLDEN = Path(__file__).parent / "golden"

# The autouse cache fixture is function-scoped; sharing it between examples is what we want.
_HEALTH = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
quick = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=2),
                 suppress_health_check=_HEALTH)
decoding = settings(max_examples=DECODE_EXAMPLES, deadline=timedelta(seconds=20),
                    suppress_health_check=_HEALTH + [HealthCheck.data_too_large])


# --- the format's limits, stated a second time ----------------------------------------------

def _acceptable(header: Header, payloads: list[bytes], streams: list[bytes]) -> bool:
    """Whether a reader must accept this archive: docs/FORMAT.md's limits, independently of
    container.py's code."""
    m = header.model
    if m is not None:
        if not (m.name and m.name.isprintable() and m.runtime.isprintable()):
            return False
        if not (1 <= m.segment_tokens <= 16384 and 1 <= m.group_size <= 256
                and 2 <= m.bucket_size <= 2**20):
            return False
        if m.arithmetic == Arithmetic.FLOAT and not 1 <= m.threads <= 1024:
            return False
    n_model = sum(b.method == Method.MODEL for b in header.blocks)
    if n_model and m is None:
        return False
    for b in header.blocks:
        if b.raw_size < 1:
            return False
        if b.method == Method.STORED and b.payload_size != b.raw_size:
            return False
        if b.method == Method.LZMA and b.payload_size < 1:
            return False
        if b.method == Method.MODEL and not \
                1 <= b.n_tokens <= min(2 * b.raw_size, m.segment_tokens + 1, 16384):
            return False
    if len(streams) != (-(-n_model // m.group_size) if n_model else 0):
        return False
    if any(len(s) < 4 or len(s) % 4 for s in streams):
        return False
    classical = [b for b in header.blocks if b.method != Method.MODEL]
    lay = header.layout
    if lay is not None:
        classical.append(lay.binary)
        if not _acceptable_layout(lay, header.original_size):
            return False
    if sum(len(p) for p in payloads) != sum(b.payload_size for b in classical):
        return False
    text_size = lay.text_size if lay else header.original_size
    end = 0
    for c in header.copies:  # in order, each after its source, inside the (text) stream
        if not (c.dest >= end and c.size >= 1 and 0 <= c.source and c.source + c.size <= c.dest
                and c.dest + c.size <= text_size):
            return False
        end = c.dest + c.size
    return sum(b.raw_size for b in header.blocks) + sum(c.size for c in header.copies) \
        == text_size


def _acceptable_layout(lay: Layout, original_size: int) -> bool:
    """docs/FORMAT.md's rules for the layout of format version 6."""
    b = lay.binary
    if b.method == Method.MODEL or b.raw_size < 1 or \
            b.raw_size + lay.text_size > original_size + 101 * len(lay.members):
        return False
    if (b.method == Method.STORED and b.payload_size != b.raw_size) or \
            (b.method == Method.LZMA and b.payload_size < 1):
        return False
    if lay.kind == LayoutKind.TAR:
        return any(lay.members) and len(lay.members) <= b.raw_size // 512
    return (bool(lay.runs) and all(t >= 1 for _, t in lay.runs)
            and all(g >= 1 for g, _ in lay.runs[1:]) and sum(g for g, _ in lay.runs) <= b.raw_size
            and sum(t for _, t in lay.runs) == lay.text_size == original_size - b.raw_size)


# --- strategies: values inside the limits, at them, and far past them ----------------------
# Each field is usual (valid) nine times in ten, so that whole archives often get past the
# container to the decoder, and every field is also, often enough, past its limit.

def _mostly(usual, unusual):
    return st.integers(0, 9).flatmap(lambda k: unusual if k == 0 else usual)


def _around(low: int, high: int, usual_high: int | None = None):
    """Integers in low..usual_high (to keep decoding quick; high by default), else at the
    ends of low..high, just outside, or absurd."""
    edges = st.sampled_from(sorted({0, low, max(low - 1, 0), high, high + 1, 2**31, 2**62,
                                    10**9}))
    return _mostly(st.integers(low, high if usual_high is None else usual_high), edges)


odd_names = st.one_of(st.just(""), st.text(max_size=30),
                      st.sampled_from(["~nosuchuser/x", "a/" * 100, "smollm2-135m-typo",
                                       "tiny\nllama", "\x1b[31mred"]))


@st.composite
def model_infos(draw, small: bool = False):
    arithmetic = draw(_mostly(st.just(Arithmetic.EXACT), st.just(Arithmetic.FLOAT)))
    name = draw(_mostly(st.just(TINY_LLAMA), odd_names))
    float_fields = {}
    if arithmetic == Arithmetic.FLOAT:
        # usually 1 thread: a decoder in this process really starts them
        float_fields = {"threads": draw(_around(1, 1024, 1)),
                        "runtime": draw(_mostly(st.just("torch 2.13.0+cpu x86_64"),
                                                st.sampled_from(["", "\r"])))}
    return ModelInfo(name, draw(st.binary(min_size=16, max_size=16)), arithmetic,
                     segment_tokens=draw(_around(1, 16384, 32 if small else None)),
                     group_size=draw(_around(1, 256, 4 if small else None)),
                     bucket_size=draw(_around(2, 2**20, 512 if small else None)),
                     **float_fields)


@st.composite
def blocks(draw, model: ModelInfo | None, small: bool = False):
    method = draw(_mostly(st.just(Method.MODEL), st.sampled_from([Method.STORED, Method.LZMA])))
    raw_size = draw(_around(1, 2**40, 64 if small else None))
    if method == Method.MODEL:
        most = min(2 * raw_size, (model.segment_tokens + 1) if model else 1, 16384)
        return Block(method, raw_size, n_tokens=draw(_around(1, 16384, max(most, 1)))), b""
    payload = draw(st.binary(max_size=80))
    if method == Method.STORED:
        raw_size = draw(_mostly(st.just(len(payload)), st.just(raw_size)))
    declared = draw(_mostly(st.just(len(payload)), _around(1, 2**40, 80)))
    return Block(method, raw_size, payload_size=declared), payload


@st.composite
def archives(draw, small: bool = False):
    """(header, payloads, streams) with fields around every limit; pack() gives it a
    valid CRC, so only the checks of the fields themselves stand between it and a decoder.
    Empty streams stand for real ones where a test has them."""
    model = draw(_mostly(model_infos(small), st.none()))
    drawn = draw(st.lists(blocks(model, small), max_size=6))
    block_list = [b for b, _ in drawn]
    payloads = [p for b, p in drawn if b.method != Method.MODEL]
    n_model = sum(b.method == Method.MODEL for b in block_list)
    groups = -(-n_model // model.group_size) if model and model.group_size else n_model
    n_streams = draw(_mostly(st.just(groups), st.sampled_from([groups + 1, max(groups - 1, 0)])))
    streams = [draw(_mostly(st.just(b""), st.binary(max_size=40))) for _ in range(n_streams)]
    total = sum(b.raw_size for b in block_list)
    copies, end = [], 0  # usually none; else each usually valid: after the literal bytes so far
    for _ in range(draw(_mostly(st.just(0), st.integers(1, 3)))):
        dest = end + draw(_around(0, 2**40, 64))
        size = draw(_around(1, 2**40, 64))
        copies.append(Copy(dest, dest - draw(_around(0, 2**40, 128)), size))
        end = dest + size
    total += sum(c.size for c in copies)
    layout = draw(st.one_of(st.none(), st.none(), st.none(), layouts(total, small)))
    if layout is not None:
        size = layout.binary.payload_size
        payloads.append(draw(st.binary(min_size=size, max_size=size)) if size <= 80
                        else bytes(size) if size <= 1 << 16 else b"")
        total = draw(_mostly(st.just(layout.text_size + layout.binary.raw_size + (
            512 * sum(layout.members) if layout.kind == LayoutKind.TAR else 0)),
            st.just(total)))
    original = draw(_mostly(st.just(total), st.sampled_from([total + 1, max(total - 1, 0)])))
    return Header(original, draw(st.binary(min_size=8, max_size=8)), block_list, model,
                  copies=copies, layout=layout), payloads, streams


@st.composite
def layouts(draw, text_size: int, small: bool = False):
    """Many alternating runs, or many tar members, around the limits: usually a text stream
    the size of the blocks and copies drawn, and runs that tile it."""
    kind = draw(st.sampled_from([LayoutKind.RUNS, LayoutKind.TAR]))
    method = draw(_mostly(st.sampled_from([Method.STORED, Method.LZMA]), st.just(Method.MODEL)))
    text_size = draw(_mostly(st.just(text_size), _around(0, 2**40, 200)))
    if kind == LayoutKind.TAR:
        members = tuple(draw(st.lists(st.booleans(), min_size=0, max_size=40)))
        raw_size = draw(_mostly(st.just(512 * len(members) + draw(st.integers(0, 600))),
                                _around(0, 2**40, 4096)))
    else:
        n = draw(st.integers(0, min(40, max(text_size - 1, 0))))
        cuts = sorted(draw(st.lists(st.integers(1, max(text_size - 1, 1)), min_size=n,
                                    max_size=n, unique=True))) if text_size > 1 else []
        texts = [b - a for a, b in zip([0] + cuts, cuts + [text_size])]
        gaps = [draw(st.integers(1 if i else 0, 64)) for i in range(len(texts))]
        if gaps and draw(_mostly(st.just(False), st.just(True))):  # one gap out of range
            gaps[draw(st.integers(0, len(gaps) - 1))] = draw(st.sampled_from([0, 2**40]))
        runs = tuple(zip(gaps, texts)) if text_size > 0 else ()
        members = ()
        raw_size = draw(_mostly(st.just(sum(gaps) + draw(st.integers(1, 64))),
                                _around(0, 2**40, 256)))
    payload = raw_size if method == Method.STORED else draw(_around(1, 2**40, 80))
    if method == Method.MODEL:
        return Layout(kind, Block(method, raw_size, n_tokens=payload), text_size,
                      runs=runs if kind == LayoutKind.RUNS else (), members=members)
    return Layout(kind, Block(method, raw_size, payload_size=payload), text_size,
                  runs=runs if kind == LayoutKind.RUNS else (), members=members)


# --- container level: only CorruptArchiveError, and exactly for what breaks a limit ---------

def _base_archives() -> list[bytes]:
    sample = Header(10 + 300 + 7, b"\x01" * 8, [Block(Method.STORED, 10, payload_size=10),
                                               Block(Method.MODEL, 300, n_tokens=80),
                                               Block(Method.LZMA, 7, payload_size=5)],
                    ModelInfo("smollm2-135m", bytes(16), Arithmetic.EXACT, 2048, 16, 256))
    golden = [p.read_bytes() for p in sorted(GOLDEN.glob("*.llmz"))]
    return [pack(sample, [b"0123456789", b"lzma!"], [b"\xaa" * 12])] + golden


def _refit_crc(blob: bytes) -> bytes:
    if len(blob) < 4:
        return blob
    return blob[:-4] + zlib.crc32(blob[:-4]).to_bytes(4, "little")


@st.composite
def mutated_archives(draw):
    """A real archive with bytes flipped, set, cut out, inserted or appended, or a second
    member added; then, often, its CRC recomputed as a crafter would."""
    blob = bytearray(draw(st.sampled_from(_base_archives())))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "truncate", "append",
                                   "member"]))
        at = draw(st.integers(0, max(len(blob) - 1, 0)))
        if op == "flip" and blob:
            blob[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and blob:
            blob[at] = draw(st.integers(0, 255))
        elif op == "cut":
            del blob[at:at + draw(st.integers(1, 8))]
        elif op == "insert":
            blob[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "truncate":
            del blob[at:]
        elif op == "append":
            blob += draw(st.binary(min_size=1, max_size=8))
        else:
            blob += draw(st.sampled_from(_base_archives()))
    blob = bytes(blob)
    return _refit_crc(blob) if draw(st.booleans()) else blob


def _read_every_way(blob: bytes) -> None:
    """unpack, describe and split_members either succeed or raise CorruptArchiveError; what
    unpack accepts is within the limits."""
    try:
        header, payloads, streams = unpack(blob)
    except CorruptArchiveError as exc:
        assert "\n" not in str(exc)
    else:
        assert _acceptable(header, payloads, streams)
    for read in (describe, split_members):
        try:
            read(blob)
        except CorruptArchiveError as exc:
            assert "\n" not in str(exc)


@quick
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_corrupt_archive_error(blob):
    _read_every_way(blob)


@quick
@given(st.binary(max_size=300))
def test_random_bytes_after_the_magic_only_raise_corrupt_archive_error(tail):
    _read_every_way(_refit_crc(b"LLMZ\x01" + tail))


@quick
@given(mutated_archives())
def test_mutated_archives_only_raise_corrupt_archive_error(blob):
    _read_every_way(blob)


@quick
@given(archives())
def test_crafted_header_is_accepted_exactly_when_within_the_limits(archive):
    header, payloads, streams = archive
    blob = pack(header, payloads, streams)
    if _acceptable(header, payloads, streams):
        got_header, got_payloads, got_streams = unpack(blob)
        assert got_header == header and got_streams == streams
        assert b"".join(got_payloads) == b"".join(payloads)  # cut where the header says
        assert split_members(blob + blob) == [blob, blob]
    else:
        with pytest.raises(CorruptArchiveError):
            unpack(blob)
        with pytest.raises(CorruptArchiveError):
            split_members(blob)


# --- command level: decoding with a real model ends in an exit code and one line -----------

@pytest.fixture(scope="module")
def tiny_archive() -> bytes:
    """An archive of a few model-coded blocks, made (and the model loaded) once."""
    result = CliRunner().invoke(main, ["compress", "-c", "-q", "-m", TINY_LLAMA,
                                       "--segment-tokens", "16", "--group-size", "2", "-"],
                                input=corpus_file("alice29.txt")[2000:2400])
    assert result.exit_code == 0, result.stderr
    assert len(unpack(result.stdout_bytes)[2]) >= 2  # model-coded, in two streams or more
    return result.stdout_bytes


@pytest.fixture(autouse=True, scope="module")
def torch_threads_restored():
    """Float archives set torch's thread count in this process; put it back."""
    import torch
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _decode_in_process(blob: bytes) -> tuple[int, str]:
    """Exit code and the line on standard error of `llmzip decompress -m TINY -c -q -`
    (with the model given, so that crafted archives reach the decoder; an archive's own
    model name is tested in test_cli)."""
    result = CliRunner().invoke(main, ["decompress", "-m", TINY_LLAMA, "-c", "-q", "-"],
                                input=blob)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)  # anything else would have been a traceback
    lines = result.stderr.splitlines()
    assert result.exit_code in (0, 1, 2), result.stderr
    if result.exit_code == 0:
        assert lines == []
        return 0, ""
    assert len(lines) == 1 and lines[0].startswith("llmzip: "), result.stderr
    return result.exit_code, lines[0]


def _with_real_model(tiny_archive: bytes, archive, real_fingerprint: bool) -> bytes:
    """The drawn archive, with the tiny model's real fingerprint if asked (so that decoding
    really runs) and its real streams where the drawn ones are empty."""
    header, payloads, streams = archive
    real_header, _, real_streams = unpack(tiny_archive)
    if header.model is not None and header.model.name == TINY_LLAMA and real_fingerprint:
        header.model = dataclasses.replace(header.model,
                                           fingerprint=real_header.model.fingerprint)
    streams = [s or real_streams[i % len(real_streams)] for i, s in enumerate(streams)]
    return pack(header, payloads, streams)


def _edited(tiny_archive: bytes, **fields) -> bytes:
    header, payloads, streams = unpack(tiny_archive)
    header.model = dataclasses.replace(header.model, **fields)
    return pack(header, payloads, streams)


@decoding
@given(archives(small=True), st.booleans())
def test_crafted_archives_decode_to_an_exit_code_and_one_line(tiny_archive, archive,
                                                              real_fingerprint):
    _decode_in_process(_with_real_model(tiny_archive, archive, real_fingerprint))


@decoding
@given(st.data())
def test_mutated_real_archives_decode_to_an_exit_code_and_one_line(tiny_archive, data):
    _decode_in_process(_flipped(tiny_archive, data))  # flips may cancel: exit 0 is fine too


def _flipped(blob: bytes, data) -> bytes:
    """The archive with one to three bits flipped and its CRC recomputed."""
    blob = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 3))):
        blob[data.draw(st.integers(0, len(blob) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    return _refit_crc(bytes(blob))


@decoding
@given(archives(small=True), st.booleans())
@example(archive={"bucket_size": 3}, real_fingerprint=True)
@example(archive={"name": "~nosuchuser/x"}, real_fingerprint=True)
@example(archive={"name": "a/" * 100}, real_fingerprint=True)
def test_no_archive_reaches_an_internal_error(tiny_archive, archive, real_fingerprint):
    blob = _edited(tiny_archive, **archive) if isinstance(archive, dict) \
        else _with_real_model(tiny_archive, archive, real_fingerprint)
    _, line = _decode_in_process(blob)
    assert "internal error" not in line, line


# --- layouts: many alternating runs and members ------------------------------------------------

@st.composite
def valid_layout_archives(draw):
    """Archives of STORED blocks whose layout is valid: up to 300 alternating runs, or up to
    300 tar members."""
    kind = draw(st.sampled_from([LayoutKind.RUNS, LayoutKind.TAR]))
    texts = draw(st.lists(st.integers(1, 300), min_size=1, max_size=300))
    text_size = sum(texts)
    if kind == LayoutKind.RUNS:
        gaps = [draw(st.integers(0 if i == 0 else 1, 300)) for i in range(len(texts))]
        raw = sum(gaps) + draw(st.integers(0, 100)) or 1
        layout = Layout(kind, Block(Method.STORED, raw, payload_size=raw), text_size,
                        runs=tuple(zip(gaps, texts)))
        original = text_size + raw
    else:
        members = tuple(draw(st.lists(st.booleans(), min_size=1, max_size=300)))
        members = members if any(members) else (True,) + members[1:]
        raw = 512 * len(members) + draw(st.integers(0, 100))
        layout = Layout(kind, Block(Method.STORED, raw, payload_size=raw), text_size,
                        members=members)
        original = text_size + raw + draw(st.integers(0, 10_000))
    header = Header(original, bytes(8), [Block(Method.STORED, text_size, payload_size=text_size)],
                    layout=layout)
    return header, [bytes(text_size), bytes(raw)], []


@quick
@given(valid_layout_archives())
def test_layouts_of_many_runs_are_read_back_as_written(archive):
    header, payloads, streams = archive
    assert _acceptable(header, payloads, streams)
    got, got_payloads, _ = unpack(pack(header, payloads, streams))
    assert got.layout == header.layout and got_payloads == payloads


@pytest.fixture(scope="module")
def tiny_tar_archive() -> bytes:
    """A tar of 16 members, text and binary alternating, through the tiny model: some 70
    blocks, most of them model-coded."""
    from test_mixed import make_tar
    text, elf = corpus_file("alice29.txt"), corpus_file("libpython_elf_64k.bin")
    members = [(f"m{i:02d}", text[1000 * i:1000 * i + 1000 + 7 * i] if i % 2
                else elf[100 * i:100 * i + 90]) for i in range(16)]
    blob = Codec(TINY_LLAMA, segment_tokens=64, group_size=2).compress(make_tar(members))
    assert unpack(blob)[0].layout.kind == LayoutKind.TAR
    return blob


@decoding
@given(st.data())
def test_mutated_tar_archives_decode_to_an_exit_code_and_one_line(tiny_tar_archive, data):
    _decode_in_process(_flipped(tiny_tar_archive, data))


# --- the compact form ---------------------------------------------------------------------------

@quick
@given(st.binary(max_size=300))
def test_random_bytes_after_the_compact_magic_only_raise_corrupt_archive_error(tail):
    _read_every_way(b"\xb7" + tail)
    try:
        unpack_compact(b"\xb7" + tail)
    except CorruptArchiveError as exc:
        assert "\n" not in str(exc)


@pytest.fixture(scope="module")
def compact_archive():
    """A compact archive of the tiny model, registered for the module as preset number 15."""
    from llmzip import Codec
    from llmzip.engine.factory import open_engine
    from llmzip.models.presets import PRESETS, Preset
    PRESETS[TINY_LLAMA] = Preset("tiny test model", "", (), "<|endoftext|>", "test", 15,
                                 open_engine(TINY_LLAMA, None)[0].fingerprint().hex())
    try:
        yield Codec(TINY_LLAMA).compress(corpus_file("alice29.txt")[1000:1300])
    finally:
        PRESETS.pop(TINY_LLAMA)


@decoding
@given(st.data())
def test_mutated_and_cut_compact_archives_decode_to_an_exit_code_and_one_line(compact_archive,
                                                                           data):
    blob = bytearray(compact_archive)
    for _ in range(data.draw(st.integers(0, 3))):
        blob[data.draw(st.integers(0, len(blob) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    cut = data.draw(st.integers(1, len(blob)))
    _decode_in_process(bytes(blob[:cut]))  # a flip in implied zeros, or none: exit 0 is fine
