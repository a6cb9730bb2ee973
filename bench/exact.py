"""What exact arithmetic costs and buys: bits per byte against the float model, and the speed
of full-sequence compression against compression with the decoder's KV-cached steps.

Usage: python bench/exact.py [--models smollm2-135m gemma3-270m] [--speed-file alice29.txt]
                             [--speed-bytes N] [--corpus DIR] [--no-readme]

1. Cost: for every corpus file and model, the cross-entropy of the same segments under the
   exact engine and under the model's own float32 forward (both through the same integer
   frequency tables), in bits per byte.
2. Speed, one run, one file, default settings: compression with the exact full forward,
   with the exact KV-cached steps (must give the identical archive), and with the float
   engine's KV-cached steps (the only way a float archive can be made decodable).
Prints a Markdown report and puts it between the exact-results markers in README.md.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import ROOT, machine, replace_between_markers  # noqa: E402

from llmzip import Codec  # noqa: E402
from llmzip.engine import frequencies  # noqa: E402

MARKERS = ("<!-- exact results: start -->", "<!-- exact results: end -->")


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


def cost_rows(model: str, files: list[Path]) -> list[str]:
    codec = Codec(model)
    engine = codec.engine(model, None)
    loaded = codec.loaded_model(model)
    rows = []
    for path in files:
        data = path.read_bytes()
        segments = [s for s in codec._segments(data) if s.use_model]
        if not segments:
            rows.append(f"| {path.name} | {model} | (not text: no model-coded segment) | | |")
            continue
        n_bytes = sum(len(s.raw) for s in segments)
        exact = sum(cross_entropy_bits(engine.full_tables(s.ids), s.ids) for s in segments)
        floating = sum(cross_entropy_bits(float_tables(loaded, s.ids), s.ids) for s in segments)
        rows.append(f"| {path.name} | {model} | {floating / n_bytes:.4f} | {exact / n_bytes:.4f} "
                    f"| {100 * (exact / floating - 1):+.2f}% |")
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def speed_rows(path: Path, max_bytes: int | None) -> tuple[list[str], float]:
    data = path.read_bytes()[:max_bytes]
    runs = [("exact, full forward (the default)", dict(encoder="full")),
            ("exact, KV-cached steps", dict(encoder="stepped")),
            ("float, KV-cached steps", dict(arithmetic="float"))]
    rows, seconds, archives = [], {}, {}
    for label, settings in runs:
        codec = Codec("smollm2-135m", **settings).load()  # load outside the timing
        started = time.perf_counter()
        blob, stats = codec.compress_with_stats(data)
        seconds[label] = time.perf_counter() - started
        archives[label] = blob
        rows.append(f"| {label} | {stats.n_tokens:,} | {seconds[label]:.0f} s "
                    f"| {stats.n_tokens / seconds[label]:.0f} | {stats.bpb:.4f} |")
        print(rows[-1], file=sys.stderr, flush=True)
    labels = [label for label, _ in runs]
    if archives[labels[0]] != archives[labels[1]]:
        raise SystemExit("exact full-forward and KV-cached archives differ: a bug")
    return rows, seconds[labels[1]] / seconds[labels[0]], seconds[labels[2]] / seconds[labels[0]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    parser.add_argument("--speed-file", default="alice29.txt")
    parser.add_argument("--speed-bytes", type=int, default=None)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    files = sorted(p for p in args.corpus.iterdir() if p.is_file())

    speed, vs_exact_steps, vs_float_steps = speed_rows(args.corpus / args.speed_file,
                                                       args.speed_bytes)
    cost = [row for model in args.models for row in cost_rows(model, files)]
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
        replace_between_markers(ROOT / "README.md", text, *MARKERS)


if __name__ == "__main__":
    main()
