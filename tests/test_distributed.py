"""Several processes, one archive: real `accelerate launch` runs of two CPU processes.

`accelerate launch --multi_gpu --num_processes 2` is the form that starts two processes on
a machine without GPUs (with `--cpu` it starts one unless MPI is installed); they talk over
gloo. Each launch costs a few seconds of start-up, so the texts are small and the model is
the committed tiny one.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import MODELS, corpus_file

pytestmark = pytest.mark.launch

TINY = str(MODELS / "tiny-llama")
SETTINGS = ["-m", TINY, "--segment-tokens", "128", "--group-size", "2"]
ACCELERATE = Path(sys.executable).with_name("accelerate")


def llmzip(*args, processes: int = 1, cwd=None, wait=True):
    """Run the command line, in one process or under accelerate launch."""
    args = [str(a) for a in args]
    command = [sys.executable, "-m", "llmzip", *args] if processes == 1 else \
        [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", str(processes),
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "-m", "llmzip", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]
    return out, err


@pytest.fixture
def text(tmp_path) -> Path:
    path = tmp_path / "alice.txt"
    path.write_bytes(corpus_file("alice29.txt")[:30000])
    return path


def test_two_processes_write_the_archive_one_process_writes(text, tmp_path):
    one, two = tmp_path / "one.llmz", tmp_path / "two.llmz"
    llmzip("compress", *SETTINGS, "-o", one, text)
    llmzip("compress", *SETTINGS, "-o", two, text, processes=2)
    assert two.read_bytes() == one.read_bytes()
    from llmzip.container import unpack
    assert len(unpack(one.read_bytes())[2]) >= 4  # several groups to share


def test_archives_decode_with_any_number_of_processes(text, tmp_path):
    archive = tmp_path / "alice.llmz"
    llmzip("compress", *SETTINGS, "-o", archive, text, processes=2)
    llmzip("decompress", "-m", TINY, "-o", tmp_path / "by-one.txt", archive)
    llmzip("decompress", "-m", TINY, "-o", tmp_path / "by-two.txt", archive, processes=2)
    assert (tmp_path / "by-one.txt").read_bytes() == text.read_bytes()
    assert (tmp_path / "by-two.txt").read_bytes() == text.read_bytes()


def test_recursive_over_a_directory_of_mixed_files_round_trips_every_file(tmp_path):
    tree = tmp_path / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    files = {"big.txt": corpus_file("alice29.txt")[:20000],
             "small.txt": corpus_file("asyoulik.txt")[:2000],
             "sub/code.py": corpus_file("argparse.py")[:3000],
             "sub/binary.bin": corpus_file("libpython_elf_64k.bin")[:4000],
             "sub/deeper/empty": b"",
             "sub/deeper/note.txt": b"a short note\n"}
    for name, data in files.items():
        (tree / name).write_bytes(data)
    llmzip("compress", *SETTINGS, "-r", "-q", tree, processes=2)
    for name in files:
        assert (tree / (name + ".llmz")).is_file()
        (tree / name).rename(tree / (name + ".orig"))
    llmzip("decompress", "-m", TINY, "-r", "-q", tree, processes=2)
    for name, data in files.items():
        assert (tree / name).read_bytes() == data, name


def _rank_of(pid: int) -> str | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in environ:
        if item.startswith(b"RANK="):
            return item[5:].decode()
    return None


def _worker(rank: str, timeout_s: float = 120) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"llmzip" in cmdline and b"accelerate" not in cmdline and _rank_of(pid) == rank:
                return pid
        time.sleep(0.1)
    pytest.fail(f"no process of rank {rank} appeared")


def _sockets(pid: int) -> int:
    try:
        return sum(os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
                   for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _wait_until_connected(pid: int, timeout_s: float = 120) -> None:
    """Until the process has joined the team: gloo's connections to the other process
    open just before the work is shared out (the launcher's store is one socket)."""
    deadline = time.monotonic() + timeout_s
    while _sockets(pid) < 2:
        if time.monotonic() > deadline:
            pytest.fail(f"process {pid} never connected")
        time.sleep(0.05)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_a_process_that_dies_stops_the_team_with_one_line_and_nothing_written(tmp_path):
    text = tmp_path / "books.txt"
    text.write_bytes(b"".join(map(corpus_file, ["alice29.txt", "asyoulik.txt", "argparse.py",
                                                "object_h_64k.h"])))  # not repeated:
    # LZMA would take a second copy for almost nothing, leaving the model nothing to code
    archive = tmp_path / "books.llmz"
    llmzip("compress", "-m", TINY, "--segment-tokens", "128", "-q", "-o", archive, text)
    proc = llmzip("decompress", "-m", TINY, "--batch", "1", "-o", tmp_path / "out.txt",
                  archive, processes=2, wait=False)  # a segment at a time
    victim = _worker("1")
    _wait_until_connected(victim)
    time.sleep(1)  # into its share: decoding it takes several seconds more, and process 0
    # cannot finish (nor write anything) without it
    os.kill(victim, signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    log = err.decode()
    # the launcher names the process that failed and stops the others; process 0 says so
    assert "local_rank: 1" in log and "exitcode: -9" in log, log[-2000:]
    lines = [line for line in log.splitlines() if line.startswith("llmzip: ")]
    assert lines in (["llmzip: process 0 of 2: interrupted"],
                     [line for line in lines if "another process of the team stopped" in line]), log
    assert sorted(p.name for p in tmp_path.iterdir()) == ["books.llmz", "books.txt"]
