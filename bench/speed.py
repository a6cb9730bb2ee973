"""Decompression against compression: speed, memory, start-up and a busy neighbour, one run.

Usage: python bench/speed.py [--corpus DIR] [--no-write] [--skip-big | --only-big]

Every phase runs in a fresh process (`harness.measure`) and reports its own peak memory;
the model is loaded before the clock starts, except for the start-up row, which times a
whole `llmzip compress` of 100 bytes with the converted model cached. Run it alone: on 2
cores anything else running changes the figures. Writes bench/results/speed.{json,md} and
the docs/RESULTS.md block between the speed-results markers.
"""

from __future__ import annotations

import datetime
import json
import sys
import tempfile
from pathlib import Path

from harness.measure import busy_neighbour, run_phase
from harness.report import bench_arguments, machine, publish

import llmzip  # noqa: F401,E402  (first: sets the thread environment before numpy loads)

ROOT = Path(__file__).resolve().parents[1]
BIG_BYTES = 1_000_000


def round_trip(label: str, path: Path, work: Path, n_bytes: int | None = None,
               neighbour: bool = False) -> dict:
    archive = work / f"{label}.llmz"
    comp = run_phase({"op": "compress", "file": str(path), "bytes": n_bytes,
                      "archive": str(archive)})
    dec = run_phase({"op": "decompress", "archive": str(archive), "original": str(path),
                     "bytes": n_bytes})
    row = {"label": label, "bytes": comp["bytes"], "tokens": comp["tokens"],
           "bpb": comp["bpb"], "compress_s": comp["seconds"], "decompress_s": dec["seconds"],
           "compress_rss_mb": comp["peak_rss_mb"], "decompress_rss_mb": dec["peak_rss_mb"],
           "ok": dec["ok"]}
    if neighbour:
        with busy_neighbour():
            loaded = run_phase({"op": "decompress", "archive": str(archive),
                                "original": str(path), "bytes": n_bytes})
        row["decompress_busy_s"] = loaded["seconds"]
        row["ok"] = row["ok"] and loaded["ok"]
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def big_bytes(corpus: Path) -> bytes:
    """1 MB of text: the corpus's text files one after another, repeated (bench/repeats.py
    counts its copies)."""
    text = b"".join((corpus / f).read_bytes() for f in
                    ("alice29.txt", "asyoulik.txt", "argparse.py", "object_h_64k.h"))
    return (text * (BIG_BYTES // len(text) + 1))[:BIG_BYTES]


def big_text(corpus: Path, work: Path) -> Path:
    path = work / "big.txt"
    path.write_bytes(big_bytes(corpus))
    return path


def startup(work: Path) -> float:
    """Seconds for `llmzip compress` of 100 bytes, process start to exit (best of 3)."""
    small = work / "small.txt"
    small.write_bytes(b"The quick brown fox jumps over the lazy dog, and then it rests. " * 2)
    small.write_bytes(small.read_bytes()[:100])
    run_phase({"op": "command", "argv": ["compress", "-f", "-q", str(small)]})  # warm caches
    return min(run_phase({"op": "command", "argv": ["compress", "-f", "-q", str(small)]})["wall_s"]
               for _ in range(3))


def kbps(row: dict, key: str) -> float:
    return row["bytes"] / 1000 / row[key]


def report(rows: list[dict], start_s: float | None, header: str) -> str:
    lines = [header, "",
             "| text | bytes | tokens | bits/byte | compress KB/s | decompress KB/s "
             "| decompress / compress | peak MB compress | peak MB decompress | round trip |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['bytes']:,} | {r['tokens']:,} | {r['bpb']:.3f} "
            f"| {kbps(r, 'compress_s'):.2f} | {kbps(r, 'decompress_s'):.2f} "
            f"| {r['compress_s'] / r['decompress_s']:.0%} | {r['compress_rss_mb']:.0f} "
            f"| {r['decompress_rss_mb']:.0f} | {'ok' if r['ok'] else 'FAILED'} |")
    busy = [r for r in rows if "decompress_busy_s" in r]
    for r in busy:
        lines += ["", f"With a busy process pinned to one of the 2 cores, decompressing "
                  f"{r['label']} took {r['decompress_busy_s']:.1f} s against "
                  f"{r['decompress_s']:.1f} s alone: {r['decompress_busy_s'] / r['decompress_s']:.2f}x."]
    if start_s is not None:
        lines += ["", f"Start-up: `llmzip compress` of a 100-byte file, the converted model "
                  f"cached, takes {start_s:.2f} s from process start to exit (best of 3)."]
    return "\n".join(lines)


def main() -> None:
    parser = bench_arguments(__doc__, ROOT)
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--skip-big", action="store_true", help="leave out the 1 MB text")
    sizes.add_argument("--only-big", action="store_true",
                       help="only the 1 MB text (about an hour), to bench/results/speed-big.*")
    args = parser.parse_args()
    alice = args.corpus / "alice29.txt"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        start_s, rows = None, []
        if not args.only_big:
            start_s = startup(work)
            rows = [round_trip("alice29.txt, first 20 KB", alice, work, 20_000, neighbour=True),
                    round_trip("alice29.txt", alice, work)]
        if not args.skip_big:
            rows.append(round_trip("1 MB of corpus text", big_text(args.corpus, work), work))
    date = datetime.date.today().isoformat()
    header = (f"Measured {date} on {machine()}; `bench/speed.py"
              f"{' --only-big' if args.only_big else ''}`, every phase in a fresh process, "
              "nothing else running.")
    text = report(rows, start_s, header)
    publish(ROOT, "speed-big" if args.only_big else "speed", text,
            {"date": date, "machine": machine(), "startup_s": start_s, "rows": rows},
            write=not (args.no_write or args.only_big))
    if not all(r["ok"] for r in rows):
        raise SystemExit("a round trip FAILED")


if __name__ == "__main__":
    main()
