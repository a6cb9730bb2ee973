"""The command line: like gzip, one-line errors, exit codes, no partial output."""

import json
import os
import pty
import subprocess
import sys

import pytest
from click.testing import CliRunner

from llmzip.cli import main

from conftest import corpus_file

TEXT = corpus_file("alice29.txt")[:2500]
SMALL = ["--segment-tokens", "64", "--group-size", "4"]


def run(*args, stdin=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=stdin)


def one_error_line(result, code):
    assert result.exit_code == code, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llmzip: "), result.stderr
    return lines[0]


@pytest.fixture
def archive(tmp_path, tiny_llama):
    src = tmp_path / "notes.txt"
    src.write_bytes(TEXT)
    result = run("compress", "-q", "-m", tiny_llama, *SMALL, src)
    assert result.exit_code == 0, result.stderr
    return tmp_path / "notes.txt.llmz"


def _no_stray_files(directory, *expected):
    assert sorted(p.name for p in directory.iterdir()) == sorted(expected)


def test_compress_then_decompress_restores_the_file_and_keeps_inputs(archive, tmp_path, tiny_llama):
    (tmp_path / "notes.txt").rename(tmp_path / "original.txt")
    result = run("decompress", "-m", tiny_llama, archive)
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "notes.txt").read_bytes() == TEXT
    assert "checksum OK" in result.stderr
    _no_stray_files(tmp_path, "original.txt", "notes.txt", "notes.txt.llmz")


def test_compress_prints_sizes_bits_per_byte_cross_entropy_and_overhead(tmp_path, tiny_llama):
    src = tmp_path / "a.txt"
    src.write_bytes(corpus_file("alice29.txt")[30000:33000])
    result = run("compress", "-m", tiny_llama, src)
    line = result.stderr.strip()
    assert result.exit_code == 0
    size = (tmp_path / "a.txt.llmz").stat().st_size
    assert line.startswith(f"{src}: 3,000 -> {size:,} bytes (")
    assert "bits/byte; model cross-entropy" in line and "coder overhead +" in line


def test_existing_output_is_not_overwritten_without_force(archive, tmp_path, tiny_llama):
    target = tmp_path / "notes.txt"
    target.write_bytes(b"precious")
    line = one_error_line(run("decompress", "-m", tiny_llama, archive), 1)
    assert line == f"llmzip: {target} already exists; use -f to overwrite"
    assert target.read_bytes() == b"precious"
    assert run("decompress", "-m", tiny_llama, "-f", archive).exit_code == 0
    assert target.read_bytes() == TEXT


def test_stdin_to_stdout_round_trip(tiny_llama):
    packed = run("compress", "-m", tiny_llama, *SMALL, "-", stdin=TEXT)
    assert packed.exit_code == 0
    assert run("decompress", "-m", tiny_llama, "-c", "-",
               stdin=packed.stdout_bytes).stdout_bytes == TEXT


def test_output_option_names_the_output(archive, tmp_path, tiny_llama):
    result = run("decompress", "-m", tiny_llama, "-o", tmp_path / "copy.txt", archive)
    assert result.exit_code == 0 and (tmp_path / "copy.txt").read_bytes() == TEXT
    result = run("compress", "-q", "-m", tiny_llama, "-o", tmp_path / "x.llmz", tmp_path / "copy.txt")
    assert result.exit_code == 0 and (tmp_path / "x.llmz").read_bytes()[:4] == b"LLMZ"
    line = one_error_line(run("compress", "-o", tmp_path / "y", tmp_path / "copy.txt", archive), 1)
    assert line == "llmzip: -o takes a single input file"


def test_compressed_file_keeps_the_input_permissions(tmp_path, tiny_llama):
    src = tmp_path / "secret.txt"
    src.write_bytes(b"\xff" * 100)  # no model needed
    os.chmod(src, 0o600)
    assert run("compress", "-q", "-m", tiny_llama, src).exit_code == 0
    assert (tmp_path / "secret.txt.llmz").stat().st_mode & 0o777 == 0o600


def test_refuses_to_write_an_archive_to_a_terminal(tmp_path):
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(100))
    leader, follower = pty.openpty()
    proc = subprocess.run([sys.executable, "-m", "llmzip", "compress", "-c", str(src)],
                          stdout=follower, stderr=subprocess.PIPE, timeout=120)
    os.close(follower)
    os.close(leader)
    assert proc.returncode == 1
    assert proc.stderr.decode().strip() == ("llmzip: refusing to write compressed data to a "
                                            "terminal; use -o FILE or redirect (or -f)")


@pytest.mark.parametrize("offset_step", [1])
def test_any_flipped_byte_exits_2_with_one_line_and_no_output(archive, tmp_path, offset_step):
    blob = archive.read_bytes()
    damaged = tmp_path / "damaged.llmz"
    for offset in range(0, len(blob), offset_step):
        bad = bytearray(blob)
        bad[offset] ^= 0x01 << (offset % 8)
        damaged.write_bytes(bytes(bad))
        line = one_error_line(run("decompress", damaged), 2)
        assert line.startswith(f"llmzip: {damaged}: ")
        assert not (tmp_path / "damaged").exists()
    _no_stray_files(tmp_path, "notes.txt", "notes.txt.llmz", "damaged.llmz")


def test_any_truncation_exits_2_with_one_line_and_no_output(archive, tmp_path):
    blob = archive.read_bytes()
    cut = tmp_path / "cut.llmz"
    for length in range(len(blob)):
        cut.write_bytes(blob[:length])
        one_error_line(run("decompress", cut), 2)
        assert not (tmp_path / "cut").exists()


def test_foreign_file_is_not_an_archive(tmp_path):
    foreign = tmp_path / "photo.llmz"
    foreign.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(50))
    line = one_error_line(run("decompress", foreign), 2)
    assert line == f"llmzip: {foreign}: not an llmzip archive (starts with b'\\x89PNG')"


def test_wrong_model_exits_2(archive, tiny_llama_other, tmp_path):
    line = one_error_line(run("decompress", "-m", tiny_llama_other, "-o", tmp_path / "x", archive), 2)
    assert "archive was made with model" in line and "decompress with --model" in line
    assert not (tmp_path / "x").exists()


def test_missing_input_and_unknown_model_exit_1(tmp_path):
    line = one_error_line(run("compress", tmp_path / "nope.txt"), 1)
    assert line == f"llmzip: {tmp_path / 'nope.txt'}: No such file or directory"
    src = tmp_path / "a.txt"
    src.write_bytes(TEXT)
    line = one_error_line(run("compress", "-m", "no-such-model", src), 1)
    assert line.startswith("llmzip: unknown model 'no-such-model': not a preset")
    _no_stray_files(tmp_path, "a.txt")


def test_decompress_needs_the_suffix(tmp_path):
    plain = tmp_path / "notes.txt"
    plain.write_bytes(b"x")
    line = one_error_line(run("decompress", plain), 1)
    assert line == f"llmzip: {plain}: unknown suffix (expected .llmz); use -o or -c"


def test_test_command_checks_without_writing(archive, tmp_path, tiny_llama):
    result = run("test", "-m", tiny_llama, archive)
    assert result.exit_code == 0 and result.stderr.strip().startswith(f"{archive}: OK (2,500 bytes")
    _no_stray_files(tmp_path, "notes.txt", "notes.txt.llmz")
    bad = bytearray(archive.read_bytes())
    bad[-1] ^= 0xFF
    archive.write_bytes(bytes(bad))
    one_error_line(run("test", "-m", tiny_llama, archive), 2)


def test_info_json_names_model_settings_and_blocks(archive):
    result = run("info", "--json", archive)
    facts = json.loads(result.stdout)
    assert facts["original_bytes"] == 2500 and facts["archive_bytes"] == archive.stat().st_size
    assert facts["model"]["arithmetic"] == "exact-v3" and facts["model"]["segment_tokens"] == 64
    assert {b["method"] for b in facts["blocks"]} <= {"model", "lzma", "stored"}


def test_info_text(archive):
    out = run("info", archive).stdout
    assert "exact-v3 arithmetic" in out and "segments of <= 64 tokens" in out


def test_models_lists_the_presets():
    out = run("models").stdout
    assert "smollm2-135m [default]" in out and "gemma3-270m" in out


def test_python_dash_m_works(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "llmzip", "--version"], capture_output=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout.decode().startswith("llmzip, version ")
