"""What exact arithmetic costs and buys: bits per byte against the float model, and the speed
of full-sequence compression against compression with the decoder's KV-cached steps.

Usage: python bench/exact.py [--models smollm2-135m gemma3-270m] [--speed-file alice29.txt]
                             [--speed-bytes N] [--corpus DIR] [--no-readme] [--resume]

1. Cost: for every corpus file and model, the cross-entropy of the same segments under the
   exact engine and under the model's own float32 forward (both through the same integer
   frequency tables), in bits per byte.
2. Speed, one run, one file, default settings: compression with the exact full forward,
   with the exact KV-cached steps (must give the identical archive), and with the float
   engine's KV-cached steps (the only way a float archive can be made decodable).
Prints a Markdown report and puts it between the exact-results markers in README.md. Every
measurement is saved to bench/results/exact.json as soon as it is made; `--resume` keeps the
ones already there (same file, model and byte count), so a run of over an hour that is
interrupted, or a model added later, does not redo the rest.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import ROOT, machine, markers, replace_between_markers  # noqa: E402

from llmzip import Codec  # noqa: E402
from llmzip.engine import frequencies  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "exact.json"


class Measurements:
    """Rows measured so far, saved after each one (see --resume)."""

    def __init__(self, resume: bool):
        self.rows = json.loads(RESULTS.read_text()) if resume and RESULTS.is_file() else {}

    def get(self, key: str, measure):
        if key not in self.rows:
            self.rows[key] = measure()
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(self.rows, indent=1) + "\n")
        return self.rows[key]


def float_tables(loaded, ids: list[int], chunk: int = 256):
    """Frequencies of the model's own float32 full forward (what FLOAT arithmetic would code
    without the decoder's constraints), in chunks so 262k-token vocabularies fit."""
    inputs = torch.tensor([[loaded.context_start_id] + list(ids[:-1])])
    model = loaded.hf_model
    with torch.inference_mode():
        hidden = model.model(input_ids=inputs).last_hidden_state[0]  # (T, d)
        head = model.get_output_embeddings()
        for start in range(0, len(ids), chunk):
            yield frequencies(head(hidden[start:start + chunk]))


def cross_entropy_bits(tables, ids: list[int]) -> float:
    bits, pos = 0.0, 0
    for freqs in tables:
        n = len(freqs)
        picked = freqs[np.arange(n), ids[pos:pos + n]].astype(np.float64)
        bits += float((np.log2(freqs.sum(axis=1).astype(np.float64)) - np.log2(picked)).sum())
        pos += n
    return bits


def cost_rows(model: str, files: list[Path], saved: Measurements) -> list[str]:
    codec = Codec(model)
    rows = []
    for path in files:
        def measure(path=path):
            engine = codec.engine(model, None)
            loaded = codec.loaded_model(model)
            segments = [s for s in codec._segments(path.read_bytes()) if s.use_model]
            n_bytes = sum(len(s.raw) for s in segments)
            if not n_bytes:
                return {"bytes": 0}
            exact = sum(cross_entropy_bits(engine.full_tables(s.ids), s.ids) for s in segments)
            floating = sum(cross_entropy_bits(float_tables(loaded, s.ids), s.ids)
                           for s in segments)
            return {"bytes": n_bytes, "float_bpb": floating / n_bytes,
                    "exact_bpb": exact / n_bytes, "cost_pct": 100 * (exact / floating - 1)}
        row = saved.get(f"cost|{path.name}|{path.stat().st_size}|{model}", measure)
        if not row["bytes"]:
            rows.append(f"| {path.name} | {model} | (not text: no model-coded segment) | | |")
            continue
        rows.append(f"| {path.name} | {model} | {row['float_bpb']:.4f} | {row['exact_bpb']:.4f} "
                    f"| {row['cost_pct']:+.2f}% |")
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def speed_rows(path: Path, max_bytes: int | None, saved: Measurements):
    data = path.read_bytes()[:max_bytes]
    runs = [("exact, full forward (the default)", dict(encoder="full")),
            ("exact, KV-cached steps", dict(encoder="stepped")),
            ("float, KV-cached steps", dict(arithmetic="float"))]
    rows, seconds, digests = [], {}, {}
    for label, settings in runs:
        def measure(settings=settings):
            codec = Codec("smollm2-135m", **settings).load()  # load outside the timing
            started = time.perf_counter()
            blob, stats = codec.compress_with_stats(data)
            return {"seconds": time.perf_counter() - started, "tokens": stats.n_tokens,
                    "bpb": stats.bpb, "sha256": hashlib.sha256(blob).hexdigest()}
        run = saved.get(f"speed|{path.name}|{len(data)}|{label}", measure)
        seconds[label], digests[label] = run["seconds"], run["sha256"]
        rows.append(f"| {label} | {run['tokens']:,} | {run['seconds']:.0f} s "
                    f"| {run['tokens'] / run['seconds']:.0f} | {run['bpb']:.4f} |")
        print(rows[-1], file=sys.stderr, flush=True)
    labels = [label for label, _ in runs]
    if digests[labels[0]] != digests[labels[1]]:
        raise SystemExit("exact full-forward and KV-cached archives differ: a bug")
    return rows, seconds[labels[1]] / seconds[labels[0]], seconds[labels[2]] / seconds[labels[0]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    parser.add_argument("--speed-file", default="alice29.txt")
    parser.add_argument("--speed-bytes", type=int, default=None)
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--resume", action="store_true",
                        help="keep the measurements already in bench/results/exact.json")
    args = parser.parse_args()
    files = sorted(p for p in args.corpus.iterdir() if p.is_file())
    saved = Measurements(args.resume)

    speed, vs_exact_steps, vs_float_steps = speed_rows(args.corpus / args.speed_file,
                                                       args.speed_bytes, saved)
    cost = [row for model in args.models for row in cost_rows(model, files, saved)]
    scope = f"first {args.speed_bytes:,} bytes of" if args.speed_bytes else "all of"
    text = "\n".join([
        f"Measured {datetime.date.today().isoformat()} on {machine()}; `bench/exact.py`.", "",
        "What exactness costs: cross-entropy of the same segments, float32 forward against the "
        "exact forward, in bits per byte:", "",
        "| file | model | float32 | exact | cost |", "|---|---|---:|---:|---:|", *cost, "",
        f"What it buys: compressing {scope} {args.speed_file} (one run, default settings, "
        f"{torch.get_num_threads()} threads):", "",
        "| encoder | tokens | time | tokens/s | bits/byte |", "|---|---:|---:|---:|---:|", *speed,
        "", f"The full forward is {vs_exact_steps:.1f}x faster than the exact KV-cached steps "
        f"(identical archive) and {vs_float_steps:.1f}x faster than float KV-cached steps."])
    print(text)
    if not args.no_readme:
        replace_between_markers(ROOT / "README.md", text, *markers("exact"))


if __name__ == "__main__":
    main()
