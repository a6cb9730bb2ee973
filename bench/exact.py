"""What exact arithmetic costs: the same segments' cross-entropy under the model's own float32
forward and under the exact-v3 forward that every archive is coded with, in bits per byte.

Usage: python bench/exact.py [--models smollm2-135m gemma3-270m] [--max-bytes N]
                             [--corpus DIR] [--no-write]

Both sides go through the same integer frequency tables (`rules.frequencies`), so the
difference is the arithmetic alone: int8 weights, int16 activations, int8 keys and values,
decimal tables instead of libm. Speed is `bench/speed.py`'s. Prints a Markdown report and
puts it between the exact-results markers in docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import llmzip  # noqa: F401  (first: sets the thread environment before numpy loads)

# isort: split
from harness.report import NO_WRITE_HELP, corpus_files, machine, replace_section

from llmzip.codec import segments as seg
from llmzip.codec.rangecoder import code_lengths
from llmzip.container import Arithmetic
from llmzip.engine.exact.rules import frequencies
from llmzip.engine.factory import open_engine

ROOT = Path(__file__).resolve().parents[1]


def float_tables(model, ids: list[int], chunk: int = 256):
    """Frequencies of the model's own float32 full forward, in chunks so that 262k-token
    vocabularies fit."""
    import torch
    hf = model.hf_model()
    inputs = torch.tensor([[model.context_start_id] + list(ids[:-1])])
    with torch.inference_mode():
        hidden = hf.model(input_ids=inputs).last_hidden_state[0]
        head = hf.get_output_embeddings()
        for start in range(0, len(ids), chunk):
            yield frequencies(head(hidden[start:start + chunk]).double().numpy())


def cross_entropy_bits(tables, ids: list[int]) -> float:
    bits, pos = 0.0, 0
    for freqs in tables:
        n = len(freqs)
        bits += float(code_lengths(freqs, ids[pos:pos + n]).sum())
        pos += n
    return bits


def cost(model_name: str, data: bytes) -> dict:
    engine, model = open_engine(model_name, Arithmetic.EXACT_V3)
    segments = [s for s in seg.cut(data, model.tokenizer, 4096) if s.candidate]
    n_bytes = sum(len(s.raw) for s in segments)
    if not n_bytes:
        return {"bytes": 0}
    exact = sum(cross_entropy_bits(engine.full_tables(list(s.ids)), s.ids) for s in segments)
    floating = sum(cross_entropy_bits(float_tables(model, s.ids), s.ids) for s in segments)
    return {"bytes": n_bytes, "float_bpb": floating / n_bytes, "exact_bpb": exact / n_bytes,
            "cost_pct": 100 * (exact / floating - 1)}


def row(name: str, model: str, r: dict) -> str:
    if not r["bytes"]:
        return f"| {name} | {model} | (not text: no model-coded segment) | | |"
    return (f"| {name} | {model} | {r['float_bpb']:.4f} | {r['exact_bpb']:.4f} "
            f"| {r['cost_pct']:+.2f}% |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m"])
    parser.add_argument("--corpus", type=Path, default=ROOT / "corpus",
                        help="directory of corpus files (default: the repository's corpus/)")
    parser.add_argument("--max-bytes", type=int, default=20_000)
    parser.add_argument("--no-write", action="store_true", help=NO_WRITE_HELP)
    args = parser.parse_args()
    rows, results = [], {}
    for model in args.models:
        for path in corpus_files(args.corpus):
            r = results[f"{path.name}|{model}"] = cost(model, path.read_bytes()[:args.max_bytes])
            rows.append(row(path.name, model, r))
            print(rows[-1], file=sys.stderr, flush=True)
    text = "\n".join([
        f"Measured {datetime.date.today().isoformat()} on {machine()}; `bench/exact.py`, first "
        f"{args.max_bytes:,} bytes of each file.", "",
        "What exactness costs: cross-entropy of the same segments, the model's float32 forward "
        "against the exact-v3 forward, in bits per byte:", "",
        "| file | model | float32 | exact-v3 | cost |", "|---|---|---:|---:|---:|", *rows])
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "exact.json").write_text(json.dumps(results, indent=1) + "\n")
    print(text)
    if not args.no_write:
        replace_section(ROOT, "exact", text)


if __name__ == "__main__":
    main()
