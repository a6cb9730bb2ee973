"""llmzip against the peers on their common ground: alice29.txt's first 20,000 bytes, the same
SmolLM2-135M GGUF, 2 CPU cores.

Usage: python bench/peers.py [--corpus DIR] [--no-readme]

llmzip runs here, twice: with default settings, and with one segment holding the whole
slice (the context the peers use). The peers' figures were measured on the same machine
type with the same GGUF and slice (llama-zip and Nacrith, run from their repositories);
they are quoted, not re-run, and marked so.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

from llmzip import Codec
from llmzip.report import machine, replace_section

ROOT = Path(__file__).resolve().parents[1]

N_BYTES = 20_000
PEERS = [  # (name, bits per byte, KB/s compress, KB/s decompress, note)
    ("llama-zip (llama.cpp, same GGUF)", 1.114, 0.21, 0.21,
     "no header or checksum; decodes only on the same machine; random input grew 37%"),
    ("Nacrith (SmolLM2-135M + n-gram mixing)", 1.137, 0.06, 0.06,
     "decodes only on the same software stack"),
]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    data = (args.corpus / "alice29.txt").read_bytes()[:N_BYTES]
    rows = [measure(data, "default settings"),
            measure(data, "one 8,192-token segment", segment_tokens=8192)]
    rows += [f"| {name} | {bpb:.3f} | | {kc:.2f} | {kd:.2f} | quoted (same machine type); {note} |"
             for name, bpb, kc, kd, note in PEERS]
    text = "\n".join([
        f"alice29.txt, first {N_BYTES:,} bytes, SmolLM2-135M, 2 CPU cores. Measured "
        f"{datetime.date.today().isoformat()} on {machine()}; `bench/peers.py`.", "",
        "| compressor | bits/byte | model cross-entropy | compress KB/s | decompress KB/s | notes |",
        "|---|---:|---:|---:|---:|---|", *rows])
    print(text)
    if not args.no_readme:
        replace_section(ROOT / "README.md", "peers", text)


if __name__ == "__main__":
    main()
