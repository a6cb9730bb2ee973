"""llmzip against the peers on their common ground: alice29.txt's first 20,000 bytes, the same
SmolLM2-135M GGUF, 2 CPU cores.

Usage: python bench/peers.py [--corpus DIR] [--no-write] [--llama-zip COMMAND]

llmzip runs here, twice: with default settings, and with one segment holding the whole
slice (the context the peers use). With --llama-zip (its command line, e.g. the
`llama-zip` of a virtual environment where it and llama-cpp-python are installed; neither
is a dependency of ours), llama-zip compresses and decompresses the same slice with the
same GGUF in the same run, timed from process start (its model load included, ~1 s), and
its row says so. Otherwise, and for Nacrith always, the figures are quoted from an earlier
measurement on an AMD EPYC (2 cores), and marked so. Writes bench/results/peers.{json,md}
and the docs/RESULTS.md block between the peers-results markers.
"""

from __future__ import annotations

import datetime
import subprocess
import sys
import time
from pathlib import Path

from harness.report import bench_arguments, machine, publish

from llmzip import Codec
from llmzip.models.presets import resolve

ROOT = Path(__file__).resolve().parents[1]

N_BYTES = 20_000
LLAMA_ZIP = "llama-zip (llama.cpp, same GGUF)"
LLAMA_ZIP_NOTE = "no header or checksum; decodes only on the same machine; random input grew 37%"
PEERS = [  # (name, bits per byte, KB/s compress, KB/s decompress, note): quoted
    (LLAMA_ZIP, 1.114, 0.21, 0.21, LLAMA_ZIP_NOTE),
    ("Nacrith (SmolLM2-135M + n-gram mixing)", 1.137, 0.06, 0.06,
     "decodes only on the same software stack"),
]
QUOTED = "quoted (measured earlier on an AMD EPYC, 2 cores)"


def measure(data: bytes, label: str, **settings) -> str:
    codec = Codec("smollm2-135m", **settings).load()
    started = time.perf_counter()
    blob, stats = codec.compress_with_stats(data)
    compress_s = time.perf_counter() - started
    started = time.perf_counter()
    ok = codec.decompress(blob) == data
    decompress_s = time.perf_counter() - started
    row = (f"| llmzip, {label} | {stats.bpb:.3f} | {stats.xent_bpb:.3f} "
           f"| {len(data) / 1000 / compress_s:.2f} | {len(data) / 1000 / decompress_s:.2f} "
           f"| measured now; round trip {'ok' if ok else 'FAILED'}; decodes on any machine |")
    print(row, file=sys.stderr, flush=True)
    return row


def measure_llama_zip(data: bytes, command: str) -> str:
    """llama-zip's own command line on the same slice and GGUF, both ways, as a user runs
    it (n_ctx: the model's 8,192 tokens, so the slice is one window)."""
    gguf = str(resolve("smollm2-135m").gguf_parts[0])
    seconds = {}
    output = data
    for mode in ("-c", "-d"):
        started = time.perf_counter()
        try:
            output = subprocess.run([command, gguf, mode], input=output, capture_output=True,
                                    check=True).stdout
        except (OSError, subprocess.CalledProcessError) as e:
            raise SystemExit(f"bench/peers.py: llama-zip {mode} failed: {e}") from None
        seconds[mode] = time.perf_counter() - started
        if mode == "-c":
            archive = output
    ok = output == data
    row = (f"| {LLAMA_ZIP} | {8 * len(archive) / len(data):.3f} | "
           f"| {len(data) / 1000 / seconds['-c']:.2f} | {len(data) / 1000 / seconds['-d']:.2f} "
           f"| measured now (its command line, model load included); round trip "
           f"{'ok' if ok else 'FAILED'}; {LLAMA_ZIP_NOTE} |")
    print(row, file=sys.stderr, flush=True)
    return row


def main() -> None:
    parser = bench_arguments(__doc__, ROOT)
    parser.add_argument("--llama-zip", metavar="COMMAND",
                        help="run llama-zip beside llmzip (its command line)")
    args = parser.parse_args()
    data = (args.corpus / "alice29.txt").read_bytes()[:N_BYTES]
    rows = [measure(data, "default settings"),
            measure(data, "one 8,192-token segment", segment_tokens=8192)]
    if args.llama_zip:
        rows.append(measure_llama_zip(data, args.llama_zip))
    rows += [f"| {name} | {bpb:.3f} | | {kc:.2f} | {kd:.2f} | {QUOTED}; {note} |"
             for name, bpb, kc, kd, note in PEERS if not (args.llama_zip and name == LLAMA_ZIP)]
    text = "\n".join([
        f"alice29.txt, first {N_BYTES:,} bytes, SmolLM2-135M, 2 CPU cores. Measured "
        f"{datetime.date.today().isoformat()} on {machine()}; `bench/peers.py`.", "",
        "| compressor | bits/byte | model cross-entropy | compress KB/s | decompress KB/s | notes |",
        "|---|---:|---:|---:|---:|---|", *rows])
    publish(ROOT, "peers", text, {"date": datetime.date.today().isoformat(),
                                  "machine": machine(), "rows": rows},
            write=not args.no_write)


if __name__ == "__main__":
    main()
