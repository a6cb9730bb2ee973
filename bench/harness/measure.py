"""One phase of work measured in a fresh process: its time, its peak memory, its result.

A process's peak resident memory only grows, so a phase (a compression, a decompression,
a whole command line) runs in a child of its own and reports its own peak: what a user
running that one command would see. The model is loaded before the clock starts unless
the phase is a command line, whose wall time includes everything (start-up).

    run_phase({"op": "compress", "file": "alice29.txt", "archive": "a.llmz"})
    run_phase({"op": "decompress", "archive": "a.llmz", "original": "alice29.txt"})
    run_phase({"op": "command", "argv": ["compress", "-f", "x.txt"]})

`busy_neighbour()` keeps one core busy (pinned) for the decoder-under-load measurement.
A measured process runs this file as a script (`python bench/harness/measure.py SPEC`).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["run_phase", "busy_neighbour", "peak_rss_mb", "forget_forwards"]


def forget_forwards(model: str) -> None:
    """Let the model's network drop the forwards it keeps for a second pass
    (`ExactNetwork.forget`), so that no timed phase in this process starts with another's
    work done: compressing a text again would otherwise skip its forward."""
    from llmzip.engine.factory import open_engine
    open_engine(model, None)[0].net.forget()


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _compress(spec: dict) -> dict:
    from llmzip import Codec
    data = Path(spec["file"]).read_bytes()[:spec.get("bytes")]
    codec = Codec(spec.get("model"), **spec.get("settings", {})).load()
    started = time.perf_counter()
    blob, stats = codec.compress_with_stats(data)
    seconds = time.perf_counter() - started
    if blob is None:  # a process of a team other than 0: its share is in process 0's archive
        return {"seconds": seconds, "bytes": len(data)}
    Path(spec["archive"]).write_bytes(blob)
    return {"seconds": seconds, "bytes": len(data), "archive_bytes": len(blob),
            "tokens": stats.n_tokens, "bpb": stats.bpb, "xent_bpb": stats.xent_bpb}


def _decompress(spec: dict) -> dict:
    from llmzip import Codec
    from llmzip.container import unpack
    blob = Path(spec["archive"]).read_bytes()
    header = unpack(blob)[0]  # tokens to report
    codec = Codec(spec.get("model"), **spec.get("settings", {})).load(blob)
    started = time.perf_counter()
    data = codec.decompress(blob)
    seconds = time.perf_counter() - started
    expected = Path(spec["original"]).read_bytes()[:spec.get("bytes")]
    return {"seconds": seconds, "bytes": len(expected),
            "ok": None if data is None else data == expected,
            "tokens": sum(b.n_tokens for b in header.model_blocks())}


def _command(spec: dict) -> dict:
    from llmzip.cli import main
    started = time.perf_counter()
    try:
        main(spec["argv"], standalone_mode=False)
    except SystemExit as exc:
        if exc.code:
            raise
    return {"seconds": time.perf_counter() - started}


PHASES = {"compress": _compress, "decompress": _decompress, "command": _command}


_RESULT = "llmzip-measure: "  # marks each process's result line among a launcher's output
_SCRIPT = str(Path(__file__).resolve())  # what a measured process runs: child() below


def child() -> None:
    """Entry point of a measured process: one phase from argv[1] (JSON), its result on
    stdout (under a launcher, one line per process, with its rank)."""
    spec = json.loads(sys.argv[1])
    with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the result alone
        result = PHASES[spec["op"]](spec)
    result["peak_rss_mb"] = peak_rss_mb()
    result["rank"] = int(os.environ.get("RANK", "0"))
    print(_RESULT + json.dumps(result), flush=True)


def _command_line(spec: dict, processes: int) -> list[str]:
    if processes == 1:
        return [sys.executable, _SCRIPT, json.dumps(spec)]
    launcher = str(Path(sys.executable).with_name("accelerate"))
    return [launcher, "launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            _SCRIPT, json.dumps(spec)]


def run_phase(spec: dict, timeout_s: float | None = None, processes: int = 1) -> dict:
    """Run one phase in fresh Python processes (several: under `accelerate launch`); process
    0's result, with the slowest process's seconds, every process's peak memory
    (`peak_rss_mb` the largest, `rank_rss_mb` each) and the wall time from start to exit
    (`wall_s`, start-up included)."""
    started = time.perf_counter()
    proc = subprocess.run(_command_line(spec, processes), capture_output=True, text=True,
                          timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"phase {spec['op']} failed: {proc.stderr.strip()[-2000:]}")
    ranks = sorted((json.loads(line[len(_RESULT):]) for line in proc.stdout.splitlines()
                    if line.startswith(_RESULT)), key=lambda r: r["rank"])
    result = dict(ranks[0])
    result["seconds"] = max(r["seconds"] for r in ranks)
    result["rank_rss_mb"] = [r["peak_rss_mb"] for r in ranks]
    result["peak_rss_mb"] = max(result["rank_rss_mb"])
    result["wall_s"] = time.perf_counter() - started
    return result


@contextlib.contextmanager
def busy_neighbour(cpu: int = 1):
    """A process spinning on one CPU (pinned there) for the length of the block."""
    code = f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(0.5)
        yield proc
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    child()
