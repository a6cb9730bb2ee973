"""What the levels -1 to -9 cost and buy: archive size against decoding speed, on one text.

Usage: python bench/levels.py [--corpus DIR] [--model smollm2-135m] [--bytes N] [--no-write]

Each level sets the longest segment (`llmzip.cli.commands.LEVELS`). On the first --bytes of
alice29.txt (default 24,000: about 6,000 tokens, so that the levels up to 7 cut it
differently), every level is compressed and decompressed in this process with the same
model, each archive checked by decoding it: its segments, size, bits per byte and both
speeds, no level starting with another's forwards kept. Levels whose longest segment holds
the whole text give the same archive as the first such level, and are not run again. Writes bench/results/levels.{json,md}
and the docs/RESULTS.md block between the levels-results markers.
"""

from __future__ import annotations

import datetime
import sys
import time
from pathlib import Path

from harness.measure import forget_forwards
from harness.report import bench_arguments, machine, publish

import llmzip  # noqa: F401  (first: sets the thread environment before numpy loads)
from llmzip import Codec
from llmzip.cli.commands import LEVELS

ROOT = Path(__file__).resolve().parents[1]


def measure(level: int, data: bytes, model: str) -> dict:
    codec = Codec(model, segment_tokens=LEVELS[level]).load()
    forget_forwards(model)  # no level starts with another's forwards
    started = time.perf_counter()
    blob, stats = codec.compress_with_stats(data)
    compress_s = time.perf_counter() - started
    started = time.perf_counter()
    assert codec.decompress(blob) == data, f"level {level}: round trip failed"
    decompress_s = time.perf_counter() - started
    row = {"level": level, "segment_tokens": LEVELS[level], "tokens": stats.n_tokens,
           "segments": len(stats.segments),
           "archive_bytes": len(blob), "bpb": 8 * len(blob) / len(data),
           "compress_kb_s": len(data) / 1e3 / compress_s,
           "decompress_kb_s": len(data) / 1e3 / decompress_s}
    print(row, file=sys.stderr, flush=True)
    return row


def table(rows: list[dict], size: int) -> str:
    out = ["| level | longest segment (tokens) | segments | archive (bytes) | bits/byte "
           "| against -6 | compress (KB/s) | decompress (KB/s) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    six = next(r for r in rows if r["level"] == 6)["archive_bytes"]
    for r in rows:
        speeds = (f"as -{r['same_as']} | as -{r['same_as']}" if r.get("same_as") else
                  f"{r['compress_kb_s']:.2f} | {r['decompress_kb_s']:.2f}")
        out.append(f"| -{r['level']} | {r['segment_tokens']:,} | {r['segments']} | "
                   f"{r['archive_bytes']:,} | {r['bpb']:.3f} | "
                   f"{100 * (r['archive_bytes'] / six - 1):+.1f}% | {speeds} |")
    return "\n".join(out)


def main() -> None:
    parser = bench_arguments(__doc__, ROOT, model=True)
    parser.add_argument("--bytes", type=int, default=24000)
    args = parser.parse_args()
    data = (args.corpus / "alice29.txt").read_bytes()[:args.bytes]
    rows, whole = [], None
    for level in LEVELS:
        if whole is not None:  # the text fits one segment from here on: the same archive
            rows.append({**whole, "level": level, "segment_tokens": LEVELS[level],
                         "same_as": whole["level"]})
            continue
        rows.append(measure(level, data, args.model))
        if rows[-1]["tokens"] < LEVELS[level]:
            whole = rows[-1]
    text = "\n".join([
        f"Measured {datetime.date.today().isoformat()} on {machine()}; `bench/levels.py`, "
        f"{args.model}, the first {len(data):,} bytes of alice29.txt, default settings but "
        "the level; each archive decoded and compared, in one process.", "",
        table(rows, len(data))])
    publish(ROOT, "levels", text, rows, write=not args.no_write)


if __name__ == "__main__":
    main()
