"""What copies of long repeats change: the repeats in each file, its archive with and without.

Usage: python bench/repeats.py [--corpus DIR] [--model smollm2-135m] [--no-write]

For every corpus file and the generated service log: the repeats that
`llmzip.codec.repeats` takes out as copies (256 bytes or more from 16 KB back, or 4 KB or
more from anywhere): how many, how many bytes, how long finding them took; then, for a file
with any, two real compressions with the same model and settings, `--no-copies` and the
default, each checked by decoding it. A file without copies gets the same archive either
way (the header lists no copies and keeps its format version), so it is not compressed
twice. The 1 MB text of `bench/speed.py --only-big` (the corpus's texts repeated) gets its
copies counted here, and is compressed only in that script's run. Writes
bench/results/repeats.{json,md} and the docs/RESULTS.md block between the repeats-results
markers.
"""

from __future__ import annotations

import datetime
import lzma
import sys
import time
from pathlib import Path

from harness.report import bench_arguments, machine, publish

import llmzip  # noqa: F401  (first: sets the thread environment before numpy loads)
from llmzip import Codec
from llmzip.codec.repeats import FAR, LONG_COPY, MIN_COPY, copies

ROOT = Path(__file__).resolve().parents[1]
FILES = ("alice29.txt", "argparse.py", "asyoulik.txt", "libpython_elf_64k.bin", "object_h_64k.h")


def measure(name: str, data: bytes, model: str, compress: bool = True) -> dict:
    started = time.perf_counter()
    found = copies(data)
    row = {"file": name, "bytes": len(data), "copies": len(found),
           "copied_bytes": sum(c.size for c in found), "find_s": time.perf_counter() - started,
           "xz_bytes": len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))}
    if found and compress:
        for key, on in (("plain_bytes", False), ("copies_bytes", True)):
            blob = Codec(model, copies=on).compress(data)
            assert Codec(model).decompress(blob) == data, f"{name}: round trip failed"
            row[key] = len(blob)
    print(row, file=sys.stderr, flush=True)
    return row


def table(rows: list[dict]) -> str:
    out = ["| file | bytes | copies | copied bytes | finding them | xz -9e | llmzip --no-copies "
           "| llmzip | change |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        sizes = ("same archive", "same archive", "")
        if r["copies"] and "plain_bytes" not in r:
            sizes = ("not compressed here", "", "")
        elif r["copies"]:
            change = 100 * (r["copies_bytes"] / r["plain_bytes"] - 1)
            sizes = (f"{r['plain_bytes']:,}", f"{r['copies_bytes']:,}", f"{change:+.2f}%")
        out.append(f"| {r['file']} | {r['bytes']:,} | {r['copies']} | {r['copied_bytes']:,} | "
                   f"{r['find_s'] * 1000:.0f} ms | {r['xz_bytes']:,} | " + " | ".join(sizes) + " |")
    return "\n".join(out)


def main() -> None:
    parser = bench_arguments(__doc__, ROOT, model=True)
    args = parser.parse_args()
    texts = [(f, (args.corpus / f).read_bytes()) for f in FILES]
    texts.append(("service.log", (ROOT / "bench" / "data" / "service.log").read_bytes()))
    rows = [measure(name, data, args.model) for name, data in texts]
    sys.path.insert(0, str(ROOT / "bench"))
    from speed import big_bytes
    rows.append(measure("1 MB of corpus text", big_bytes(args.corpus), args.model,
                        compress=False))
    text = "\n".join([
        f"Measured {datetime.date.today().isoformat()} on {machine()}; `bench/repeats.py`, "
        f"{args.model}, default settings; copies of repeats of {MIN_COPY} bytes or more from "
        f"{FAR:,} bytes back or more, or of {LONG_COPY:,} bytes or more; archive sizes in bytes, "
        "each decoded and compared.", "", table(rows)])
    publish(ROOT, "repeats", text, rows, write=not args.no_write)


if __name__ == "__main__":
    main()
