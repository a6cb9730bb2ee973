"""Regenerate the corpus results: every corpus file through five classical codecs and llmzip.

Usage: python bench/corpus.py [--models smollm2-135m gemma3-270m] [--max-bytes N]
                              [--corpus corpus] [--no-write] [--section NAME]

Writes bench/results/NAME.{md,json,png} and replaces the block between the markers
`<!-- NAME results: start -->` and `<!-- NAME results: end -->` in docs/RESULTS.md with
the tables, the chart and the machine and date (NAME is `corpus` unless --section says
otherwise, so a run on shorter slices gets its own table). Every row is a real round trip
(`llmzip.tools.bench`); on 2 CPU cores the whole corpus takes hours.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from dataclasses import asdict
from pathlib import Path

from harness.report import (
    NO_WRITE_HELP,
    corpus_files,
    corpus_report,
    machine,
    ordered,
    replace_section,
)

import llmzip
from llmzip.tools import bench

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(llmzip.PRESETS))
    parser.add_argument("--max-bytes", type=int, default=None)
    parser.add_argument("--corpus", type=Path, default=ROOT / "corpus",
                        help="directory of corpus files (default: the repository's corpus/)")
    parser.add_argument("--files", nargs="*", help="file names inside the corpus (default: all)")
    parser.add_argument("--no-write", action="store_true", help=NO_WRITE_HELP)
    parser.add_argument("--add", action="store_true", help="keep the rows of other "
                        "compressors from the last results (to add a model in a later run)")
    parser.add_argument("--section", default="corpus",
                        help="results file stem and docs/RESULTS.md markers (default: corpus)")
    args = parser.parse_args()
    files = corpus_files(args.corpus, args.files)

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
    text = corpus_report(rows, header, args.section)
    print(text)
    if not args.no_write:
        replace_section(ROOT, args.section, text)
    if not all(r.roundtrip_ok for r in rows):
        raise SystemExit("a round trip FAILED")


if __name__ == "__main__":
    main()
