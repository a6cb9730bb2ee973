"""Regenerate README's results: every corpus file through five classical codecs and llmzip.

Usage: python bench/corpus.py [--models smollm2-135m gemma3-270m] [--max-bytes N]
                              [--corpus ../shared/corpus] [--no-readme] [--section NAME]

Writes bench/results/NAME.{md,json,png} and replaces the block between the markers
`<!-- NAME results: start -->` and `<!-- NAME results: end -->` in README.md with the
tables, the chart and the machine and date (NAME is `corpus` unless --section says
otherwise, so a run on shorter slices gets its own table). Every row is a real round trip
(llmzip.bench); on 2 CPU cores the whole corpus takes hours.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from dataclasses import asdict
from pathlib import Path

import llmzip
from llmzip import bench

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def markers(section: str) -> tuple[str, str]:
    return f"<!-- {section} results: start -->", f"<!-- {section} results: end -->"


def machine() -> str:
    """CPU model, cores, torch and llmzip versions: what the figures depend on."""
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), llmzip {llmzip.__version__}")


def ordered(rows: list[bench.Row]) -> list[bench.Row]:
    """Files by name; in each, the classical codecs in their usual order, then llmzip rows."""
    def key(r):
        ours = r.compressor.startswith("llmzip")
        return r.file, ours, r.compressor if ours else ""
    return sorted(rows, key=key)  # stable: classical rows keep their order


def pivot(rows: list[bench.Row]) -> str:
    """Bits per byte: a row per file, a column per compressor."""
    files = list(dict.fromkeys(r.file for r in rows))
    comps = list(dict.fromkeys(r.compressor for r in rows))
    short = [c.split(" (")[0] if not c.startswith("llmzip") else c.rsplit(" (", 1)[0]
             for c in comps]
    lines = ["| file | bytes | " + " | ".join(short) + " |",
             "|---|---:|" + "---:|" * len(comps)]
    for f in files:
        by = {r.compressor: r for r in rows if r.file == f}
        best = min(r.bpb for r in by.values())
        cells = []
        for c in comps:
            r = by.get(c)
            cell = "" if r is None else f"{r.bpb:.3f}"
            cells.append(f"**{cell}**" if r is not None and r.bpb == best else cell)
        lines.append(f"| {f} | {next(iter(by.values())).bytes:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def details(rows: list[bench.Row]) -> str:
    """llmzip rows: code length against cross-entropy, two-part size, speed and memory."""
    ours = [r for r in rows if r.compressor.startswith("llmzip")]
    lines = ["| file | model | bits/byte | model cross-entropy | coder overhead | archive + model "
             "| compress KB/s | decompress KB/s | peak RSS MB | round trip |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in ours:
        ce = "" if r.cross_entropy_bpb is None else f"{r.cross_entropy_bpb:.3f}"
        ovh = "" if r.overhead_pct is None else f"{r.overhead_pct:+.3f}%"
        lines.append(
            f"| {r.file} | {r.compressor.removeprefix('llmzip ')} | {r.bpb:.3f} | {ce} | {ovh} "
            f"| {r.two_part_bpb:.1f} | {r.bytes / 1000 / r.compress_s:.2f} "
            f"| {r.bytes / 1000 / r.decompress_s:.2f} | {r.peak_rss_mb:.0f} "
            f"| {'ok' if r.roundtrip_ok else 'FAILED'} |")
    return "\n".join(lines)


def report(rows: list[bench.Row], header: str, section: str) -> str:
    return "\n\n".join([
        header, "Bits per byte (lower is better; **bold** is the best on the file):",
        pivot(rows), "llmzip in detail (model cross-entropy is what an ideal coder would "
        "reach; `archive + model` counts the model file too, the two-part MDL view):",
        details(rows), f"![bits per byte per file](bench/results/{section}.png)",
        "Every row is a real round trip, decompressed and compared. Full table with timings: "
        f"[bench/results/{section}.md](bench/results/{section}.md); regenerate with "
        "`make bench`."])


def replace_between_markers(path: Path, text: str, start: str, end: str) -> None:
    content = path.read_text()
    if start not in content or end not in content:
        raise SystemExit(f"{path}: missing the markers {start} / {end}")
    head, rest = content.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{text}\n{end}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(llmzip.PRESETS))
    parser.add_argument("--max-bytes", type=int, default=None)
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    parser.add_argument("--files", nargs="*", help="file names inside the corpus (default: all)")
    parser.add_argument("--no-readme", action="store_true", help="leave README.md as it is")
    parser.add_argument("--add", action="store_true", help="keep the rows of other "
                        "compressors from the last results (to add a model in a later run)")
    parser.add_argument("--section", default="corpus",
                        help="results file stem and README markers (default: corpus)")
    args = parser.parse_args()
    files = [args.corpus / f for f in args.files] if args.files \
        else sorted(p for p in args.corpus.iterdir() if p.is_file())

    def on_row(r):
        print(f"{r.file:>16}  {r.compressor:<48} {r.bpb:6.3f} bpb  {r.compress_s:7.1f} s "
              f"+ {r.decompress_s:7.1f} s  {'ok' if r.roundtrip_ok else 'FAILED'}",
              file=sys.stderr, flush=True)

    rows = bench.run(files, args.models, max_bytes=args.max_bytes, on_row=on_row)
    stem = RESULTS / args.section
    if args.add and stem.with_suffix(".json").is_file():
        kept = [bench.Row(**r) for r in json.loads(stem.with_suffix(".json").read_text())["rows"]
                if r["compressor"] not in {row.compressor for row in rows}]
        rows = ordered(rows + kept)
    date = datetime.date.today().isoformat()
    scope = f"first {args.max_bytes:,} bytes of each file" if args.max_bytes else "whole files"
    header = f"Measured {date} on {machine()}; {scope}, `bench/corpus.py`."
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".md").write_text(f"{header}\n\n{bench.render(rows, 'md')}\n")
    stem.with_suffix(".json").write_text(json.dumps(
        {"date": date, "machine": machine(), "scope": scope,
         "rows": [asdict(r) for r in rows]}, indent=1) + "\n")
    bench.plot(rows, str(stem.with_suffix(".png")),
               title=f"Bits per byte on the corpus ({scope}; black: model cross-entropy)")
    text = report(rows, header, args.section)
    print(text)
    if not args.no_readme:
        replace_between_markers(ROOT / "README.md", text, *markers(args.section))
    if not all(r.roundtrip_ok for r in rows):
        raise SystemExit("a round trip FAILED")


if __name__ == "__main__":
    main()
