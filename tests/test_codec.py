"""Library round trips with tiny models: any bytes in, the same bytes out."""

import random
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_exact_v2_golden_decodes, corpus_file

import llmzip
from llmzip import Codec, LlmzipError, ModelMismatchError
from llmzip.container import (
    Adaptation,
    Arithmetic,
    Block,
    Copy,
    Header,
    Method,
    pack,
    unpack,
)
from llmzip.engine import factory as engine
from llmzip.errors import CorruptArchiveError

SMALL = dict(segment_tokens=64, group_size=4)  # several segments and groups on small inputs
GOLDEN = Path(__file__).parent / "golden"


def _random_bytes(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


EDGE_CASES = {
    "empty": b"",
    "one byte": b"x",
    "invalid utf-8": b"caf\xe9 \xff\xfe\xfd text after \xc3\x28 bad bytes",
    "nul bytes": b"header\x00\x00\x00\x00body\x00",
    "random 16 KiB": _random_bytes(16384),
    "alice29 slice": corpus_file("alice29.txt")[:3000],
    "asyoulik slice": corpus_file("asyoulik.txt")[5000:8000],
    "argparse slice": corpus_file("argparse.py")[:3000],
    "object.h slice": corpus_file("object_h_64k.h")[:3000],
    "elf binary slice": corpus_file("libpython_elf_64k.bin")[:6000],
    "text, random, text": corpus_file("alice29.txt")[:1500] + _random_bytes(3000, 1)
                          + corpus_file("alice29.txt")[1500:3000],
}


@pytest.mark.parametrize("data", EDGE_CASES.values(), ids=EDGE_CASES.keys())
def test_round_trip_tiny_llama(tiny_llama, codecs, data):
    codec = codecs(tiny_llama, **SMALL)
    assert codec.decompress(codec.compress(data)) == data


@pytest.mark.parametrize("name", ["one byte", "invalid utf-8", "alice29 slice", "text, random, text"])
def test_round_trip_tiny_gemma(tiny_gemma, codecs, name):
    codec = codecs(tiny_gemma, **SMALL)
    assert codec.decompress(codec.compress(EDGE_CASES[name])) == EDGE_CASES[name]


@pytest.mark.parametrize("name", ["invalid utf-8", "alice29 slice"])
def test_round_trip_with_escaped_bytes(tiny_llama_missing_bytes, codecs, name):
    data = EDGE_CASES[name] + b"\x04\x1d\xc0\xff end"
    codec = codecs(tiny_llama_missing_bytes, **SMALL)
    assert codec.decompress(codec.compress(data)) == data


def test_float_arithmetic_round_trip_records_threads_and_runtime(tiny_llama, codecs):
    codec = codecs(tiny_llama, arithmetic="float", **SMALL)
    data = EDGE_CASES["alice29 slice"]
    blob = codec.compress(data)
    info = unpack(blob)[0].model
    assert info.arithmetic == Arithmetic.FLOAT and info.threads >= 1 and "torch" in info.runtime
    assert codec.decompress(blob) == data


def test_float_archive_decodes_with_the_recorded_threads_whatever_the_decoder_is_given(
        tiny_llama, codecs):
    data = EDGE_CASES["asyoulik slice"]
    blob = codecs(tiny_llama, arithmetic="float", threads=1, **SMALL).compress(data)
    assert unpack(blob)[0].model.threads == 1
    assert Codec(tiny_llama, threads=2).decompress(blob) == data


def test_progress_counts_every_token_once_in_both_directions(tiny_llama, codecs):
    codec = codecs(tiny_llama, **SMALL)
    data = EDGE_CASES["alice29 slice"]
    seen = {"compress": [], "decompress": []}
    blob, stats = codec.compress_with_stats(
        data, progress=lambda done, total, bits: seen["compress"].append((done, total, bits)))
    assert codec.decompress(blob, progress=lambda done, total, bits:
                            seen["decompress"].append((done, total, bits))) == data
    model_tokens = sum(b.n_tokens for b in unpack(blob)[0].model_blocks())
    for direction, calls in seen.items():
        done = [c[0] for c in calls]
        assert done == sorted(done) and calls[-1][0] == calls[-1][1], direction
    assert seen["compress"][-1][1] >= stats.n_tokens > 0  # every candidate, LZMA's too
    assert seen["compress"][-1][2] > 0  # bits so far: the running rate the bar shows
    assert seen["decompress"][-1][1] == model_tokens


def test_exact_is_the_default_and_writes_exact_v3(tiny_llama, codecs):
    blob = codecs(tiny_llama, **SMALL).compress(EDGE_CASES["alice29 slice"])
    assert unpack(blob)[0].model.arithmetic == Arithmetic.EXACT_V3


def test_random_bytes_grow_by_at_most_64_bytes_and_load_no_model(tiny_llama, monkeypatch):
    def no_model(*args):
        raise AssertionError("a model was loaded for data with no text")
    monkeypatch.setattr(engine, "open_engine", no_model)
    data = EDGE_CASES["random 16 KiB"]
    codec = Codec(tiny_llama)
    blob = codec.compress(data)
    assert len(blob) - len(data) <= 64 and codec.decompress(blob) == data


def test_mixed_file_gets_model_blocks_around_a_stored_block(tiny_llama, codecs):
    data = EDGE_CASES["text, random, text"]
    header = unpack(codecs(tiny_llama, layout="none", **SMALL).compress(data))[0]
    methods = [b.method for b in header.blocks]
    assert methods[0] == methods[-1] == Method.MODEL
    assert Method.STORED in methods


def test_mixed_file_gets_its_text_cut_out_for_the_model(tiny_llama, codecs):
    """With a layout (the default), the random bytes are the binary stream, stored, and the
    text around them is one text stream, all model-coded."""
    data = EDGE_CASES["text, random, text"]
    blob = codecs(tiny_llama, **SMALL).compress(data)
    header = unpack(blob)[0]
    assert {b.method for b in header.blocks} == {Method.MODEL}
    assert header.layout.binary.method == Method.STORED and header.layout.text_size == 3000
    assert codecs(tiny_llama).decompress(blob) == data


def test_segments_the_model_codes_worse_than_lzma_go_to_lzma(tiny_llama_other, codecs):
    data = EDGE_CASES["alice29 slice"]  # an untrained model: worse than LZMA on text
    blob, stats = codecs(tiny_llama_other, **SMALL).compress_with_stats(data)
    assert [b.method for b in unpack(blob)[0].blocks] == [Method.LZMA]
    assert stats.n_tokens == 0 and unpack(blob)[0].model is None


def test_segments_have_equal_lengths(tiny_llama, codecs):
    """The decoder steps all segments in lockstep: equal lengths end them together."""
    blob = codecs(tiny_llama, segment_tokens=64, group_size=4).compress(corpus_file("alice29.txt")[:2000])
    lengths = [b.n_tokens for b in unpack(blob)[0].blocks]
    assert max(lengths) <= 64 and max(lengths) - min(lengths) <= 2


def test_full_forward_and_stepped_encoders_write_identical_archives(tiny_llama, codecs):
    data = corpus_file("alice29.txt")[10000:13000]
    full, stats = codecs(tiny_llama, encoder="full", **SMALL).compress_with_stats(data)
    stepped = codecs(tiny_llama, encoder="stepped", **SMALL).compress(data)
    assert stats.n_tokens > 0 and full == stepped


@pytest.mark.threads
@pytest.mark.parametrize("threads, batch", [(1, 1), (2, 3), (2, None)])
def test_decodes_with_any_batch_and_thread_count(tiny_llama, codecs, threads, batch):
    data = EDGE_CASES["alice29 slice"]
    blob = codecs(tiny_llama, threads=2, segment_tokens=64, group_size=8).compress(data)
    assert codecs(tiny_llama, threads=threads, decode_batch=batch).decompress(blob) == data


@pytest.mark.parametrize("memory_mb", [1, 4096], ids=["a wave per group", "groups in lockstep"])
def test_groups_decode_alone_or_in_lockstep(tiny_llama, codecs, memory_mb):
    data = EDGE_CASES["alice29 slice"] + EDGE_CASES["argparse slice"][:700]  # a short last segment
    blob = codecs(tiny_llama, segment_tokens=64, group_size=3).compress(data)
    assert len(unpack(blob)[0].stream_sizes) > 3
    assert codecs(tiny_llama, decode_memory_mb=memory_mb).decompress(blob) == data


def test_code_length_within_half_a_percent_of_cross_entropy(tiny_llama, codecs):
    _, stats = codecs(tiny_llama).compress_with_stats(corpus_file("alice29.txt")[20000:26000])
    assert stats.n_tokens > 1000
    assert 0 <= stats.overhead_pct < 0.5


def test_compression_is_deterministic(tiny_gemma, codecs):
    data = EDGE_CASES["object.h slice"]
    assert codecs(tiny_gemma, **SMALL).compress(data) == Codec(tiny_gemma, **SMALL).compress(data)


def test_wrong_model_is_a_mismatch(tiny_llama, tiny_llama_other, codecs):
    blob = codecs(tiny_llama, **SMALL).compress(EDGE_CASES["alice29 slice"])
    with pytest.raises(ModelMismatchError, match="archive was made with model"):
        Codec(tiny_llama_other).decompress(blob)


def test_a_model_path_named_by_an_archive_is_not_loaded(tiny_llama, codecs):
    """An archive is untrusted: it may only name a preset; a path needs --model."""
    blob = codecs(tiny_llama, **SMALL).compress(EDGE_CASES["alice29 slice"])
    with pytest.raises(LlmzipError, match="not a preset; if you trust it, decompress with --model"):
        Codec().decompress(blob)


def test_one_shot_functions(tiny_llama):
    data = b"one-shot API " * 20
    assert llmzip.decompress(llmzip.compress(data, model=tiny_llama), model=tiny_llama) == data


def test_stats_describe_the_archive(tiny_llama, codecs):
    data = EDGE_CASES["alice29 slice"]
    blob, stats = codecs(tiny_llama, **SMALL).compress_with_stats(data)
    assert stats.archive_bytes == len(blob) and stats.original_bytes == len(data)
    assert stats.model_bytes == len(data) and stats.blocks == {"model": len(data)}
    assert sum(len(seg.ids) for seg in stats.segments) == stats.n_tokens
    assert np.isclose(sum(seg.bits.sum() for seg in stats.segments), stats.xent_bits)
    assert stats.code_bits == 8 * sum(unpack(blob)[0].stream_sizes)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gemma", "tiny-llama-nobytes"])
def test_exact_v2_golden_archives_still_decode(name):
    """Archives of llmzip 0.1 (exact-v2 arithmetic) decode with the frozen v2 engine (on
    AMD CPUs; refused in one line on Intel ones: `assert_exact_v2_golden_decodes`)."""
    assert_exact_v2_golden_decodes(name, str(Path(__file__).parent / "models" / name))


GOLDEN_MODES = [  # adapt, file suffix, settings, format version
    # tiny-gemma's text ends in 161 binary bytes: coded as one file, as before layouts
    ("none", "", dict(segment_tokens=48, group_size=3, layout="none"), 1),
    ("counts", "-counts", dict(segment_tokens=128, group_size=8), 3),  # 6 KB: adapting pays
    # 18.6 KB whose last 1,600 bytes repeat bytes 200..1,800: one copy
    ("counts", "-counts-copies", dict(segment_tokens=128, group_size=8), 4),
    # a tar of 5 members, 3 of them text (format 6, cut by its members: `mixed`)
    ("counts", "-counts-tar", dict(segment_tokens=128, group_size=8), 6),
    # 6.9 KB of text runs between binary bytes (format 6, cut by its runs)
    ("counts", "-counts-runs", dict(segment_tokens=128, group_size=8, layout="runs"), 6),
]


@pytest.mark.parametrize("adapt, suffix, settings, version", GOLDEN_MODES,
                         ids=["alone", "adapted", "copies", "tar", "runs"])
@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gemma"])
def test_exact_v3_golden_archives_are_reproduced_byte_for_byte(name, adapt, suffix, settings,
                                                               version, monkeypatch):
    """exact-v3 on any machine writes exactly these bytes for these texts, with the model
    alone (format 1, as before adaptation), adapted (format 3), with a copy (format 4) and
    with text cut out of binary input (format 6);
    the archive records the model name as given: a path relative to tests/."""
    monkeypatch.chdir(Path(__file__).parent)
    original = (GOLDEN / f"{name}-exact-v3{suffix}.orig").read_bytes()
    model = f"models/{name}"
    blob = Codec(model, adapt=adapt, **settings).compress(original)
    assert blob == (GOLDEN / f"{name}-exact-v3{suffix}.llmz").read_bytes()
    assert blob[4] == version
    assert Codec(model).decompress(blob) == original


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gemma"])
def test_counts_v1_golden_archives_still_decode(name, monkeypatch):
    """Archives adapted with the first rules (format 2) decode with those rules."""
    monkeypatch.chdir(Path(__file__).parent)
    blob = (GOLDEN / f"{name}-exact-v3-counts-v1.llmz").read_bytes()
    assert blob[4] == 2 and unpack(blob)[0].model.adaptation == Adaptation.COUNTS_V1
    assert Codec(f"models/{name}").decompress(blob) == \
        (GOLDEN / f"{name}-exact-v3-counts-v1.orig").read_bytes()


@pytest.mark.parametrize("option, value, message", [
    ("segment_tokens", 0, "segment_tokens must be an integer from 16 to 16,384 (got 0)"),
    ("segment_tokens", 10**6, "segment_tokens must be an integer from 16 to 16,384"),
    ("group_size", 0, "group_size must be an integer from 1 to 256 (got 0)"),
    ("encoder", "ful", "unknown encoder 'ful' (full or stepped)"),
    ("arithmetic", "fast", "unknown arithmetic 'fast' (exact or float)"),
    ("threads", 0, "threads must be an integer from 1 to 1,024 (got 0)"),
    ("decode_memory_mb", -1, "decode_memory_mb must be an integer"),
    ("colour", "blue", "unknown setting 'colour'"),
])
def test_bad_settings_are_refused_where_they_are_made(option, value, message):
    with pytest.raises(LlmzipError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Codec(**{option: value})


def test_a_far_repeat_is_copied_and_decodes_byte_for_byte(tiny_llama, codecs):
    """The end repeats 2,000 bytes from 20 KB back: with copies the model codes only the
    new bytes (format 4); without, it codes them again (format 3)."""
    text = EDGE_CASES["alice29 slice"]
    head = corpus_file("alice29.txt")[40_000:57_000]
    data = head + text + head[500:2500]
    blob, stats = codecs(tiny_llama, **SMALL).compress_with_stats(data)
    header = unpack(blob)[0]
    assert header.copies == [Copy(17_000 + len(text), 500, 2000)] and blob[4] == 4
    assert stats.blocks["copy"] == 2000
    assert sum(n for method, n in stats.blocks.items() if method != "copy") == len(data) - 2000
    assert Codec(tiny_llama).decompress(blob) == data
    plain = codecs(tiny_llama, copies=False, **SMALL).compress(data)
    assert unpack(plain)[0].copies == [] and plain[4] == 3
    assert len(blob) < len(plain) - 100


def test_copies_declaring_more_than_half_the_memory_are_refused_before_decoding(tiny_llama):
    """Copies of copies could double a few header bytes into any size: the declared size is
    held to half of this machine's memory before anything is decoded."""
    from llmzip.codec.settings import physical_memory
    huge = physical_memory()  # one literal byte, then copies doubling it past the limit
    copies, size = [], 1
    while size <= huge // 2:
        copies.append(Copy(size, 0, size))
        size *= 2
    header = Header(size, bytes(8), [Block(Method.STORED, 1, payload_size=1)], copies=copies)
    with pytest.raises(CorruptArchiveError, match=f"declares {size:,} bytes of output, more "
                       "than half of this machine's memory"):
        Codec(tiny_llama).decompress(pack(header, [b"x"], []))


RETAINED = """
import numpy as np
from pathlib import Path
from llmzip.codec.settings import release_freed_memory
def rss_mb():
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmRSS"))
    return int(line.split()[1]) / 1024
large = np.ones(16 << 17)  # 16 MB, freed: glibc now serves arrays below that from its heap
del large
arrays, pins = [], []
for _ in range(100):  # 4 MB arrays, each followed by a small block that stays
    arrays.append(np.ones(1 << 19))
    pins.append(bytearray(200_000))
del arrays
held = rss_mb()
release_freed_memory()
print(held, rss_mb())
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc")
def test_freed_memory_goes_back_to_the_system():
    """glibc keeps the heap's free pages resident; a codec gives them back after each run
    (what the encoder's ~400 MB chunks leave), so the next run starts from less."""
    import subprocess
    import sys

    from llmzip.codec.settings import _malloc_trim
    if _malloc_trim() is None:
        pytest.skip("no malloc_trim in this C library")
    out = subprocess.run([sys.executable, "-c", RETAINED], capture_output=True, text=True,
                         check=True).stdout
    held, after = map(float, out.split())
    assert held > 400 and after < held - 300, (held, after)
