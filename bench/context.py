"""What a segment's missing context costs: its bits cold, and primed with earlier text.

Usage: python bench/context.py [--corpus DIR] [--model smollm2-135m] [--no-write]

llmzip cuts a file into segments of at most 4,096 tokens that decode side by side, so each
segment starts with no context. This measures what that costs, and so what any scheme that
carries context across segments could gain at best: for three segments of each book (a
quarter, half and three quarters in), the model's cross-entropy of the segment's tokens
(exact arithmetic, the encoder's tables) cold, as llmzip codes it; primed with the file's
first K tokens (a prefix every segment could share: the decoder would decode it first); and
primed with the K tokens truly before the segment (what sequential decoding would have:
the upper bound). No archive is written: these are code lengths of the same tables that
llmzip codes (the coder adds about 0.04%). Writes bench/results/context.{json,md} and the
docs/RESULTS.md block between the context-results markers.
"""

from __future__ import annotations

import datetime
import sys
import time
from pathlib import Path

import llmzip  # noqa: F401  (first: sets the thread environment before numpy loads)

# isort: split
import numpy as np
from harness.report import bench_arguments, machine, publish

from llmzip.codec.rangecoder import code_lengths
from llmzip.codec.segments import cut
from llmzip.engine.factory import open_engine

ROOT = Path(__file__).resolve().parents[1]
FILES = ("alice29.txt", "asyoulik.txt")
PRIMES = (256, 1024)  # tokens of context given before a segment
SEGMENT_TOKENS = 4096


def code_bits(engine, context: list[int], ids: list[int]) -> float:
    """Bits of ids under the model after the context (itself coded first, not counted)."""
    tables = np.concatenate(list(engine.full_tables(context + ids)))[-len(ids):]
    return float(code_lengths(tables, ids).sum())


def measure(engine, tokenizer, name: str, data: bytes) -> list[dict]:
    segments = cut(data, tokenizer, SEGMENT_TOKENS)
    everything = [t for s in segments for t in s.ids]
    starts = np.cumsum([0] + [len(s.ids) for s in segments])
    rows = []
    for i in sorted({len(segments) * q // 4 for q in (1, 2, 3)} - {0}):
        started = time.perf_counter()
        ids = list(segments[i].ids)
        row = {"file": name, "segments": len(segments), "segment": i, "tokens": len(ids),
               "bytes": len(segments[i].raw), "cold_bits": code_bits(engine, [], ids)}
        for k in PRIMES:
            row[f"head_{k}"] = code_bits(engine, everything[:k], ids)
            row[f"past_{k}"] = code_bits(engine, everything[starts[i] - k:starts[i]], ids)
        row["seconds"] = time.perf_counter() - started
        print(row, file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    head = " | ".join(f"file's first {k} | true {k} before" for k in PRIMES)
    out = [f"| file | segment | tokens | cold (bits/byte) | {head} |",
           "|---|---:|---:|---:|" + "---:|" * (2 * len(PRIMES))]
    for r in rows:
        cells = []
        for k in PRIMES:
            for key in (f"head_{k}", f"past_{k}"):
                cells.append(f"{100 * (r[key] / r['cold_bits'] - 1):+.2f}%")
        out.append(f"| {r['file']} | {r['segment'] + 1} of {r['segments']} | {r['tokens']:,} | "
                   f"{r['cold_bits'] / r['bytes']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    parser = bench_arguments(__doc__, ROOT, model=True)
    args = parser.parse_args()
    engine, model = open_engine(args.model, None)
    rows = [r for f in FILES
            for r in measure(engine, model.tokenizer, f, (args.corpus / f).read_bytes())]
    text = "\n".join([
        f"Measured {datetime.date.today().isoformat()} on {machine()}; `bench/context.py`, "
        f"{args.model}, exact arithmetic, segments of the default cut ({SEGMENT_TOKENS:,} "
        "tokens). A segment's bits cold (as llmzip codes it, bits per byte of the segment), "
        "and the change when the model first reads the file's first K tokens, or the K "
        "tokens truly before the segment:", "", table(rows)])
    publish(ROOT, "context", text, rows, write=not args.no_write)


if __name__ == "__main__":
    main()
