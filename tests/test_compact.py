"""The compact archive (format version 5) and many short messages at once.

A compact archive names a preset by number, so the fast tier registers the committed tiny
model as a preset (number 15, its own fingerprint) for the length of a test; the real
presets' compact archives are pinned by golden archives in test_real_model.py.
"""

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import corpus_file

from llmzip import Codec, CorruptArchiveError, ModelMismatchError
from llmzip.cli.commands import main
from llmzip.container import (
    COMPACT_VERSION,
    Adaptation,
    describe,
    is_compact,
    pack_compact,
    split_members,
    unpack_compact,
)
from llmzip.engine.factory import open_engine
from llmzip.models.presets import PRESETS, Preset

MODELS = Path(__file__).resolve().parent / "models"
TINY = str(MODELS / "tiny-llama")
NOTE = b"Meeting moved to 3pm tomorrow; please bring the notes from the March review."
MESSAGES = [p.strip() for p in corpus_file("alice29.txt").split(b"\r\n\r\n")
            if 60 <= len(p.strip()) <= 400][:24]


@pytest.fixture
def tiny_preset(monkeypatch):
    """tests/models/tiny-llama as preset number 15, with its exact-v3 fingerprint."""
    fingerprint = open_engine(TINY, None)[0].fingerprint().hex()
    monkeypatch.setitem(PRESETS, TINY, Preset("tiny test model", "", (), "<|endoftext|>",
                                              "test", 15, fingerprint))
    return TINY


def test_a_short_message_gets_the_compact_form_with_a_few_bytes_of_framing(tiny_preset):
    blob, stats = Codec(tiny_preset).compress_with_stats(NOTE)
    assert is_compact(blob) and blob[0] == 0xB7 and describe(blob)["format_version"] == \
        COMPACT_VERSION
    assert len(blob) - stats.xent_bits / 8 <= 12  # header 7 bytes, the coder's end < 1
    assert stats.framing_bytes == 7
    assert Codec(tiny_preset).decompress(blob) == NOTE


def test_the_compact_fields_are_what_the_format_says(tiny_preset):
    blob = Codec(tiny_preset, adapt="none").compress(NOTE)
    c = unpack_compact(blob)
    assert (c.preset, c.adaptation, blob[1] >> 5) == (15, Adaptation.NONE, 1)
    assert c.head == blob[:len(c.head)] and c.matches(NOTE) and not c.matches(NOTE + b"!")
    assert blob == pack_compact(15, Adaptation.NONE, c.n_tokens, NOTE, c.stream)


@pytest.mark.parametrize("data", [
    corpus_file("alice29.txt")[:3000], os.urandom(200), b"",
], ids=["several segments", "not text", "empty"])
def test_anything_else_keeps_the_full_form(tiny_preset, data):
    blob = Codec(tiny_preset, segment_tokens=128).compress(data)
    assert not is_compact(blob) and blob.startswith(b"LLMZ")
    assert Codec(tiny_preset).decompress(blob) == data


def test_a_model_that_is_no_preset_and_compact_false_keep_the_full_form(tiny_llama, tiny_preset):
    assert not is_compact(Codec(tiny_preset, compact=False).compress(NOTE))
    PRESETS.pop(TINY)
    assert not is_compact(Codec(tiny_llama).compress(NOTE))


def test_a_compact_archive_is_the_last_member_of_a_file_of_archives(tiny_preset):
    full = Codec(tiny_preset, compact=False).compress(MESSAGES[0])
    small = Codec(tiny_preset).compress(MESSAGES[1])
    assert split_members(full + small) == [full, small]
    assert Codec(tiny_preset).decompress(full + small) == MESSAGES[0] + MESSAGES[1]


# --- refused in one line ------------------------------------------------------------------------

def _compact(tiny_preset) -> bytes:
    return Codec(tiny_preset).compress(NOTE)


def test_every_flipped_bit_and_truncation_is_refused_in_one_line(tiny_preset):
    blob = _compact(tiny_preset)
    codec = Codec(tiny_preset)
    damaged = [blob[:n] for n in range(1, len(blob))]
    damaged += [blob[:i] + bytes([blob[i] ^ 1 << (i % 8)]) + blob[i + 1:] for i in range(len(blob))]
    for bad in damaged:
        if bad.rstrip(b"\0") == blob.rstrip(b"\0"):
            continue  # trailing zero bytes are implied: the same archive
        with pytest.raises((CorruptArchiveError, ModelMismatchError)) as exc:
            codec.decompress(bad)
        assert "\n" not in str(exc.value)


def test_a_wrong_model_is_refused_before_decoding(tiny_preset, tiny_llama_other):
    blob = _compact(tiny_preset)
    with pytest.raises(ModelMismatchError, match=r"archive was made with preset .*tiny-llama "
                                                  r"\([0-9a-f]{12}, exact-v3 arithmetic\)"):
        Codec(tiny_llama_other).decompress(blob)


def test_an_unknown_preset_number_or_revision_is_refused(tiny_preset):
    blob = _compact(tiny_preset)
    with pytest.raises(CorruptArchiveError, match="names preset number 14, which this llmzip "
                                                  "does not know"):
        Codec(tiny_preset).decompress(blob[:1] + bytes([blob[1] - 1]) + blob[2:])
    with pytest.raises(CorruptArchiveError, match="compact archive revision 2 is not one"):
        unpack_compact(blob[:1] + bytes([blob[1] & 0x1F | 2 << 5]) + blob[2:])


def test_a_declared_token_count_out_of_bounds_is_refused_before_any_work():
    with pytest.raises(CorruptArchiveError, match="declares 16,385 tokens"):
        unpack_compact(bytes([0xB7, 0x20]) + bytes([0x81, 0x80, 0x01]) + b"\0" * 8)
    with pytest.raises(CorruptArchiveError, match="declares 0 tokens"):
        unpack_compact(bytes([0xB7, 0x20, 0x00]) + b"\0" * 8)


# --- many messages at once ---------------------------------------------------------------------------

def test_many_messages_give_the_archives_each_gets_alone_and_decode_side_by_side(tiny_preset):
    codec = Codec(tiny_preset)
    alone = [Codec(tiny_preset).compress(m) for m in MESSAGES]
    together = codec.compress_many(MESSAGES)
    assert together == alone and sum(map(is_compact, together)) > len(MESSAGES) // 2
    assert all(is_compact(b) or describe(b)["model"] is None for b in together)  # or LZMA
    assert codec.decompress_many(together) == MESSAGES
    mixed = together[:3] + [Codec(tiny_preset, compact=False).compress(MESSAGES[3])]
    assert codec.decompress_many(mixed) == MESSAGES[:4]


def test_many_messages_on_the_torch_backend_run_one_forward_and_give_the_same_archives(
        tiny_preset, monkeypatch):
    """On a device each message alone is far too few positions: their forwards run as
    padded batches (`TorchBackend.prefetch`; lengths within a factor of two share one),
    never one alone, and every archive is the CPU's."""
    from llmzip.engine.exact.device.backend import DeviceNetwork
    alone = [Codec(tiny_preset).compress(m) for m in MESSAGES]
    forwards = []
    hidden = DeviceNetwork.hidden
    monkeypatch.setattr(DeviceNetwork, "hidden",
                        lambda self, ids: forwards.append(ids.shape) or hidden(self, ids))
    codec = Codec(tiny_preset, device="torch:cpu")
    assert codec.compress_many(MESSAGES) == alone
    assert len(forwards) <= 3 and min(rows for rows, _ in forwards) > 1
    assert sum(rows for rows, _ in forwards) > len(MESSAGES) // 2
    assert codec.decompress_many(alone) == MESSAGES


def test_a_damaged_message_among_many_is_refused_in_one_line(tiny_preset):
    blobs = Codec(tiny_preset).compress_many(MESSAGES[:5])
    blobs[2] = blobs[2][:-1] + bytes([blobs[2][-1] ^ 0x40])
    with pytest.raises(CorruptArchiveError, match="checksum mismatch after decoding"):
        Codec(tiny_preset).decompress_many(blobs)


def test_info_and_list_show_a_compact_archive(tiny_preset, tmp_path):
    path = tmp_path / "note.txt.llmz"
    path.write_bytes(_compact(tiny_preset))
    info = CliRunner().invoke(main, ["info", str(path)])
    assert info.exit_code == 0, info.stderr
    assert "compact llmzip archive, format version 5" in info.stdout
    assert "original   known once decoded" in info.stdout
    listed = CliRunner().invoke(main, ["-l", str(path)])
    assert listed.exit_code == 0 and "?" in listed.stdout.splitlines()[1]


def test_the_command_line_decodes_many_small_compact_archives_side_by_side(tiny_preset,
                                                                         tmp_path):
    paths = []
    for i, message in enumerate(MESSAGES[:6]):
        path = tmp_path / f"m{i}.txt.llmz"
        path.write_bytes(Codec(tiny_preset).compress(message))
        paths.append(path)
    assert sum(is_compact(p.read_bytes()) for p in paths) >= 2
    result = CliRunner().invoke(main, ["-d", "-v", "-m", tiny_preset, *map(str, paths)])
    assert result.exit_code == 0, result.stderr
    assert "compact archives side by side" in result.stderr
    for i, message in enumerate(MESSAGES[:6]):
        assert (tmp_path / f"m{i}.txt").read_bytes() == message


def test_make_demos_comparison_names_a_compact_archives_model(tiny_preset, tmp_path):
    """bench/compare.py, what `make demo` prints last, on a compact archive (its preset
    number is unknown in a fresh process: it says so)."""
    import subprocess
    import sys
    src, archive = tmp_path / "note.txt", tmp_path / "note.txt.llmz"
    src.write_bytes(NOTE)
    archive.write_bytes(_compact(tiny_preset))
    proc = subprocess.run([sys.executable, "bench/compare.py", str(src), str(archive)],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("llmzip ("))
    assert line.split() == ["llmzip", "(preset", "number", "15)",
                            str(archive.stat().st_size), f"{8 * len(_compact(tiny_preset)) / len(NOTE):.3f}"]
