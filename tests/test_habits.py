"""gzip's and zstd's habits: outputs checked before any work, their flags, phases, units.

Each test runs the real command line (in process with click's runner, or as a process where
a terminal, a mount or timing matters) on the committed tiny model.
"""

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import corpus_file

from llmzip.cli.commands import LEVELS, main

REPO = Path(__file__).resolve().parents[1]
TINY_LLAMA = str(REPO / "tests" / "models" / "tiny-llama")
TEXT = corpus_file("alice29.txt")[:1500]


def run(*args, stdin=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=stdin)


def one_error_line(result, code=1):
    assert result.exit_code == code, (result.exit_code, result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llmzip: "), result.stderr
    return lines[0]


@pytest.fixture
def notes(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(TEXT)
    return path


@pytest.fixture
def archive(notes):
    assert run("compress", "-q", "-m", TINY_LLAMA, notes).exit_code == 0
    return Path(str(notes) + ".llmz")


# --- outputs checked before any work ----------------------------------------------------------

def _mounted(tmp_path, options):
    mount = tmp_path / "mnt"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
                          capture_output=True)
    if made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    return mount


@pytest.fixture
def read_only_dir(tmp_path):
    mount = _mounted(tmp_path, "ro,size=64k")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture
def immutable_dir(tmp_path):
    path = tmp_path / "immutable"
    path.mkdir()
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("no chattr +i on this file system")
    yield path
    subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    mount = _mounted(tmp_path, "size=16k")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def _fails_fast(*args) -> str:
    """The command, as a process, with a model that cannot load: it must fail on the output
    path, under a second, before reaching the model."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "llmzip", *map(str, args), "-m",
                           "/no/such/model"], cwd=REPO, capture_output=True, timeout=60)
    elapsed = time.perf_counter() - started
    lines = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr.decode()
    assert elapsed < 1.0 + _python_start_s(), elapsed
    return lines[0]


def _python_start_s() -> float:
    """What starting the interpreter and importing the command line costs here (not work)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "llmzip", "--version"], cwd=REPO, capture_output=True)
    return time.perf_counter() - started


@pytest.mark.parametrize("where", ["read_only_dir", "immutable_dir"])
def test_an_unwritable_directory_fails_before_any_work_naming_the_output(request, notes,
                                                                          where):
    target = request.getfixturevalue(where) / "notes.txt.llmz"
    line = _fails_fast("compress", "-o", target, notes)
    assert re.fullmatch(rf"llmzip: {re.escape(str(target))}: cannot be written \(.+\)", line)
    assert ".tmp" not in line and ".probe" not in line


def test_a_device_where_a_file_is_expected_fails_before_any_work(notes):
    line = _fails_fast("compress", "-o", "/dev/full", notes)
    assert line == "llmzip: /dev/full: not a regular file (to write to a device, use -c)"


def test_a_directory_where_a_file_is_expected_fails_before_any_work(notes, tmp_path):
    (tmp_path / "notes.txt.llmz").mkdir()
    line = _fails_fast("compress", notes)
    assert line == f"llmzip: {tmp_path / 'notes.txt.llmz'}: is a directory"


def test_decompressing_onto_a_disk_too_small_for_the_declared_size_fails_at_once(archive,
                                                                                  small_disk):
    big = archive.parent / "big.txt"
    big.write_bytes(TEXT * 20)  # 30 KB: more than the 16 KiB disk holds
    assert run("compress", "-q", "-m", TINY_LLAMA, big).exit_code == 0
    target = small_disk / "big.txt"
    started = time.perf_counter()
    line = one_error_line(run("decompress", "-m", TINY_LLAMA, "-o", target, f"{big}.llmz"))
    assert time.perf_counter() - started < 1.0
    assert re.fullmatch(rf"llmzip: {re.escape(str(target))}: needs 30,000 bytes, and its file "
                        r"system has [\d,]+ free", line)
    assert list(small_disk.iterdir()) == []


def test_every_output_is_checked_before_the_first_file_is_coded(notes, tmp_path):
    second = tmp_path / "second.txt"
    second.write_bytes(TEXT)
    (tmp_path / "second.txt.llmz").mkdir()
    line = _fails_fast("compress", notes, second)
    assert line == f"llmzip: {tmp_path / 'second.txt.llmz'}: is a directory"
    assert not (tmp_path / "notes.txt.llmz").exists()


def test_the_null_device_takes_an_archive_as_zstd_o_dev_null_does(notes):
    result = run("compress", "-q", "-m", TINY_LLAMA, "-o", os.devnull, notes)
    assert result.exit_code == 0, result.stderr
    assert Path(os.devnull).is_char_device()


# --- the flags gzip and xz users type ------------------------------------------------------------

def test_llmzip_file_compresses_and_d_c_decompresses_to_standard_output(notes, tmp_path):
    assert run("-q", "-m", TINY_LLAMA, notes).exit_code == 0
    assert (tmp_path / "notes.txt.llmz").is_file() and notes.is_file()
    result = run("-dc", "-m", TINY_LLAMA, f"{notes}.llmz")
    assert result.exit_code == 0 and result.stdout_bytes == TEXT


def test_k_is_accepted_and_keeps_the_input_as_gzip_k(notes):
    assert run("-k", "-q", "-m", TINY_LLAMA, notes).exit_code == 0
    assert notes.read_bytes() == TEXT
    Path(f"{notes}").unlink()
    assert run("-dk", "-q", "-m", TINY_LLAMA, f"{notes}.llmz").exit_code == 0
    assert notes.read_bytes() == TEXT and Path(f"{notes}.llmz").is_file()


def test_t_tests_and_l_lists_as_gzip_does(archive):
    result = run("-t", "-m", TINY_LLAMA, archive)
    assert result.exit_code == 0 and result.stderr.startswith(f"{archive}: OK (1,500 bytes")
    listed = run("-l", archive)
    assert listed.exit_code == 0
    header, row = listed.stdout.splitlines()
    assert header.split() == ["compressed", "original", "bits/byte", "model", "name"]
    size = archive.stat().st_size
    assert row.split() == [f"{size:,}", "1,500", f"{8 * size / 1500:.3f}", "tiny-llama"[:0]
                           or TINY_LLAMA, str(archive)[:-5]]


def test_V_prints_the_version():
    result = run("-V")
    assert result.exit_code == 0 and result.stdout == "llmzip, version 0.1.0\n"


def test_two_modes_at_once_are_one_usage_line(archive):
    line = one_error_line(run("-d", "-t", archive), 1)
    assert line == "llmzip: decompress and test are different commands; give one"


def test_rm_removes_the_input_only_after_its_archive_decodes_to_it(notes, monkeypatch):
    import llmzip.cli.commands as commands
    assert run("compress", "--rm", "-q", "-m", TINY_LLAMA, notes).exit_code == 0
    assert not notes.exists() and Path(f"{notes}.llmz").is_file()
    assert run("decompress", "--rm", "-q", "-m", TINY_LLAMA, f"{notes}.llmz").exit_code == 0
    assert notes.read_bytes() == TEXT and not Path(f"{notes}.llmz").exists()

    class Mismatch:  # an archive that does not decode to its input: the input stays
        def decompress(self, blob):
            return b"something else"
    real = commands._remove_verified
    monkeypatch.setattr(commands, "_remove_verified",
                        lambda name, target, data, codec, log: real(name, target, data,
                                                                    Mismatch(), log))
    line = one_error_line(run("compress", "-f", "--rm", "-q", "-m", TINY_LLAMA, notes))
    assert line == f"llmzip: {notes}.llmz: does not decode to {notes}; {notes} is kept"
    assert notes.read_bytes() == TEXT


def test_rm_with_standard_output_is_refused_before_any_work(notes):
    line = one_error_line(run("compress", "--rm", "-c", notes), 1)
    assert line.startswith("llmzip: --rm removes inputs only when each one's output is a file;")
    assert notes.exists()


@pytest.mark.parametrize("level", [1, 9])
def test_a_level_sets_the_longest_segment(notes, level):
    from llmzip.container import describe
    assert run(f"-{level}", "-q", "-m", TINY_LLAMA, notes).exit_code == 0
    facts = describe(Path(f"{notes}.llmz").read_bytes())
    assert facts["model"]["segment_tokens"] == LEVELS[level]
    assert run("-dc", "-m", TINY_LLAMA, f"{notes}.llmz").stdout_bytes == TEXT


def test_a_level_and_segment_tokens_together_are_refused(notes):
    line = one_error_line(run("-3", "--segment-tokens", "64", notes), 1)
    assert line.startswith("llmzip: give a level or --segment-tokens, not both;")


def test_shell_completion_comes_from_click():
    proc = subprocess.run([sys.executable, "-m", "llmzip"], cwd=REPO, capture_output=True,
                          env={**os.environ, "_LLMZIP_COMPLETE": "bash_source"}, timeout=60)
    assert proc.returncode == 0 and b"_llmzip_completion()" in proc.stdout


def test_with_no_files_standard_input_goes_to_standard_output():
    """gzip's filter, between real processes: `tar c DIR | llmzip | llmzip -d`."""
    from test_mixed import SOURCES, make_tar
    tar = make_tar(SOURCES)
    llmzip = [sys.executable, "-m", "llmzip"]
    for compress in ([], ["-c"], ["compress"]):
        archive = subprocess.run([*llmzip, *compress, "-q", "-m", TINY_LLAMA], input=tar,
                                 cwd=REPO, capture_output=True, timeout=120)
        assert archive.returncode == 0, archive.stderr
        assert archive.stdout.startswith(b"LLMZ")
    for decompress in (["-d"], ["-dc"], ["decompress"]):
        back = subprocess.run([*llmzip, *decompress, "-m", TINY_LLAMA], input=archive.stdout,
                              cwd=REPO, capture_output=True, timeout=120)
        assert back.returncode == 0 and back.stdout == tar, back.stderr
    tested = subprocess.run([*llmzip, "-t", "-m", TINY_LLAMA], input=archive.stdout, cwd=REPO,
                            capture_output=True, timeout=120)
    assert tested.returncode == 0 and tested.stdout == b""


def test_with_no_files_and_a_terminal_for_input_nothing_is_read():
    leader, follower = pty.openpty()
    try:
        for args in (["compress"], ["-d"], ["-c"]):
            proc = subprocess.run([sys.executable, "-m", "llmzip", *args], cwd=REPO,
                                  stdin=follower, capture_output=True, timeout=60)
            assert proc.returncode == 1
            assert proc.stderr.decode().splitlines() == [
                "llmzip: no FILES given, and standard input is a terminal: give FILES or pipe "
                f"data in; see 'llmzip {'decompress' if args == ['-d'] else 'compress'} -h'"]
    finally:
        os.close(follower)
        os.close(leader)


# --- what a person watching sees ---------------------------------------------------------------

def test_v_prints_each_phase_to_a_pipe(notes):
    proc = subprocess.run([sys.executable, "-m", "llmzip", "-v", "-m", TINY_LLAMA, str(notes)],
                          cwd=REPO, capture_output=True, timeout=120)
    assert proc.returncode == 0
    lines = proc.stderr.decode().splitlines()
    assert lines[0] == f"llmzip: {notes}: compressing 1,500 bytes"
    assert lines[1] == f"llmzip: loading model {TINY_LLAMA}"
    assert re.fullmatch(rf"llmzip: model {re.escape(TINY_LLAMA)} ready in [\d.]+ s: exact-v3 "
                        r"on numba \(cpu; decoder kernels [a-z0-9, ]+\)", lines[2])
    assert re.fullmatch(rf"llmzip: {re.escape(str(notes))}: compressed 1,500 bytes in [\d.]+ s, "
                        r"[\d.]+ KB/s", lines[3])


def test_a_terminal_sees_a_progress_bar(notes):
    """Under a pseudo-terminal of 80 columns, standard error shows tqdm's bar as coding
    goes."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.run([sys.executable, "-m", "llmzip", "compress", "-m", TINY_LLAMA,
                           str(notes)], cwd=REPO, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=follower, timeout=120)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert proc.returncode == 0
    assert re.search(rb"compress: +\d+%\|", seen) and b"tok/s" in seen


def test_the_per_file_line_shows_the_framing_apart_from_the_coder_overhead(notes):
    result = run("compress", "-m", TINY_LLAMA, notes)
    from llmzip.container import describe
    facts = describe(Path(f"{notes}.llmz").read_bytes())
    framing = facts["archive_bytes"] - sum(facts["stream_bytes"])
    assert re.search(rf"coder overhead [+-][\d.]+%, framing {framing:,} bytes\)",
                     result.stderr)


def test_bench_columns_carry_units_and_both_speeds(notes):
    result = run("bench", "-q", "-m", TINY_LLAMA, notes)
    header = result.stdout.splitlines()[0]
    for column in ("compressed (bytes)", "model cross-entropy (bits/byte)", "coder overhead (%)",
                   "framing (bytes)", "bits/byte counting the model file", "compress (KB/s)",
                   "decompress (KB/s)", "peak memory (MB)"):
        assert f"| {column} |" in header


def test_docs_cli_md_is_the_commands_own_help():
    from llmzip.cli.reference import reference
    assert (REPO / "docs" / "CLI.md").read_text() == reference(), \
        "docs/CLI.md is stale: python -m llmzip.cli.reference > docs/CLI.md"
