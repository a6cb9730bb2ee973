"""One process against two (`accelerate launch`): time, tokens/s and peak memory per process.

Usage: python bench/scale.py [--file alice29.txt] [--bytes N] [--group-size 2] [--no-write]

Compresses the file with 1 and with 2 processes and decompresses each archive with the
other count: the two archives must be byte-identical and both must decode to the file.
Each phase runs in fresh processes (`harness.measure`), the model loaded before the clock
starts; `wall` includes the launch. With 2 processes each gets one of the 2 cores. Work is
shared by groups of segments, so the group size is small enough here for two processes to
get a share each (alice29: 11 segments). Run it alone. Writes bench/results/scale.{json,md}
and the docs/RESULTS.md block between the scale-results markers.
"""

from __future__ import annotations

import datetime
import json
import sys
import tempfile
from pathlib import Path

from harness.measure import run_phase
from harness.report import bench_arguments, machine, publish

import llmzip  # noqa: F401,E402  (first: sets the thread environment before numpy loads)

ROOT = Path(__file__).resolve().parents[1]


def phases(path: Path, n_bytes: int | None, group_size: int, work: Path) -> list[dict]:
    settings = {"group_size": group_size}
    rows = []
    for processes in (1, 2):
        archive = work / f"{processes}.llmz"
        comp = run_phase({"op": "compress", "file": str(path), "bytes": n_bytes,
                          "archive": str(archive), "settings": settings}, processes=processes)
        rows.append({"phase": "compress", "processes": processes, **comp})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if (work / "1.llmz").read_bytes() != (work / "2.llmz").read_bytes():
        raise SystemExit("the 1- and 2-process archives differ: a bug")
    for processes, made_by in ((1, 2), (2, 1)):  # each decodes the other's archive
        dec = run_phase({"op": "decompress", "archive": str(work / f"{made_by}.llmz"),
                         "original": str(path), "bytes": n_bytes}, processes=processes)
        if not dec["ok"]:
            raise SystemExit(f"{processes} processes decoded a wrong file")
        rows.append({"phase": "decompress", "processes": processes, **dec})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def report(rows: list[dict], header: str) -> str:
    lines = [header, "",
             "| phase | processes | seconds | wall (with launch) | tokens/s | speed-up "
             "| peak RSS per process, MB |", "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        alone = next(x for x in rows if x["phase"] == r["phase"] and x["processes"] == 1)
        lines.append(
            f"| {r['phase']} | {r['processes']} | {r['seconds']:.1f} | {r['wall_s']:.1f} "
            f"| {r['tokens'] / r['seconds']:.0f} | {alone['seconds'] / r['seconds']:.2f}x "
            f"| {', '.join(f'{m:.0f}' for m in r['rank_rss_mb'])} |")
    lines += ["", "The 1- and 2-process archives are byte-identical; each process count "
              "decoded the other's archive to the original bytes."]
    return "\n".join(lines)


def main() -> None:
    parser = bench_arguments(__doc__, ROOT)
    parser.add_argument("--file", default="alice29.txt")
    parser.add_argument("--bytes", type=int, default=None)
    parser.add_argument("--group-size", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = phases(args.corpus / args.file, args.bytes, args.group_size, Path(tmp))
    scope = f"first {args.bytes:,} bytes of {args.file}" if args.bytes else args.file
    date = datetime.date.today().isoformat()
    header = (f"Measured {date} on {machine()}; `bench/scale.py`, {scope}, groups of "
              f"{args.group_size} segments, nothing else running.")
    text = report(rows, header)
    publish(ROOT, "scale", text, {"date": date, "machine": machine(), "rows": rows},
            write=not args.no_write)


if __name__ == "__main__":
    main()
