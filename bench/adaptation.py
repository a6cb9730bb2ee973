"""The model alone against the model adapted to the file (`--adapt counts`), side by side.

Usage: python bench/adaptation.py [--model smollm2-135m] [--prefix 20000] [--no-write]

One run, alone on the machine:
1. Whole files (every corpus file and bench/data/service.log, a 120 KB JSON-lines service log
   made by bench/data/make_service_log.py), compressed with the model alone and adapted:
   real archive sizes, compression speed and peak memory. Decoding every whole file twice
   would take hours on 2 cores, so:
2. round trips of the first --prefix bytes of alice29.txt and the service log in both modes,
   twice each (the faster run kept): decompression speed, and each decoded and compared;
3. an ablation on the same prefixes: model cross-entropy with each part of the adaptation
   alone (one forward pass per group shared by every variant, `bench.adaptation_ablation`).
Writes bench/results/adaptation.{json,md} and docs/RESULTS.md's adaptation-results block.
"""

from __future__ import annotations

import datetime
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

from harness.report import bench_arguments, corpus_files, machine, publish

import llmzip  # noqa: F401  (first: sets the thread environment before numpy loads)
from llmzip import Codec
from llmzip.codec.adapt import RULES
from llmzip.container import Adaptation
from llmzip.tools import bench

ROOT = Path(__file__).resolve().parents[1]
LOG = ROOT / "bench" / "data" / "service.log"
MODES = {"model alone": "none", "adapted": "counts"}
VARIANTS = {  # ablation: name -> Adapter options (None: no adapter)
    "model alone": None,
    "counts-v1 rules": {"rules": RULES[Adaptation.COUNTS_V1]},
    "no spread sets": {"rules": replace(RULES[Adaptation.COUNTS], spread=False)},
    "no constant": {"rules": replace(RULES[Adaptation.COUNTS], constant=False)},
    "order 1 only": {"orders": (1,)},
    "orders 2-6 only": {"orders": (2, 3, 4, 6)},
    "fixed rate": {"schedule": False},
    "counts (default)": {},
}


def rows_for(files: list[Path], model: str, prefix: int | None, decode: bool,
             repeats: int = 1) -> list[dict]:
    """A row per file and mode (model alone, then adapted). With repeats, each mode runs
    that many times, the two modes alternating (alone, adapted, adapted, alone, ...), and
    each row keeps its fastest run: on 2 cores one run's time varies by 10%."""
    codecs = {mode: Codec(model, adapt=adapt).load() for mode, adapt in MODES.items()}
    xz = bench.baselines()["xz"]
    rows = []
    for path in files:
        data = path.read_bytes()[:prefix]
        xz_bpb = 8 * len(xz.compress(data)) / len(data)
        runs = {mode: [] for mode in MODES}
        for r in range(repeats):
            for mode in list(MODES)[::1 if r % 2 == 0 else -1]:
                row = bench.measure_llmzip(codecs[mode], data, path.name, decode=decode)
                runs[mode].append({"mode": mode, "xz_bpb": xz_bpb, **asdict(row)})
                print(json.dumps(runs[mode][-1]), file=sys.stderr, flush=True)
        rows += [min(runs[mode], key=lambda x: x["compress_s"] + x["decompress_s"])
                 for mode in MODES]
    return rows


def _pct(new: float, old: float) -> str:
    return f"{100 * (new / old - 1):+.2f}%"


def whole_table(rows: list[dict]) -> str:
    lines = ["| file | bytes | xz -9e | model alone | adapted | change | compress KB/s "
             "(alone / adapted) | speed change | peak RSS MB (alone / adapted) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for alone, adapted in zip(rows[::2], rows[1::2]):
        speed = [r["bytes"] / 1000 / r["compress_s"] for r in (alone, adapted)]
        lines.append(
            f"| {alone['file']} | {alone['bytes']:,} | {alone['xz_bpb']:.3f} | {alone['bpb']:.3f} "
            f"| {adapted['bpb']:.3f} | {_pct(adapted['compressed_bytes'], alone['compressed_bytes'])} "
            f"| {speed[0]:.2f} / {speed[1]:.2f} | {_pct(speed[1], speed[0])} "
            f"| {alone['peak_rss_mb']:,.0f} / {adapted['peak_rss_mb']:,.0f} |")
    return "\n".join(lines)


def round_trip_table(rows: list[dict]) -> str:
    lines = ["| first bytes of | model alone | adapted | compress KB/s (alone / adapted) "
             "| decompress KB/s (alone / adapted) | decompression speed change | round trips |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for alone, adapted in zip(rows[::2], rows[1::2]):
        comp = [r["bytes"] / 1000 / r["compress_s"] for r in (alone, adapted)]
        dec = [r["bytes"] / 1000 / r["decompress_s"] for r in (alone, adapted)]
        ok = "ok" if alone["roundtrip_ok"] and adapted["roundtrip_ok"] else "FAILED"
        lines.append(f"| {alone['file']} ({alone['bytes']:,} B) | {alone['bpb']:.3f} "
                     f"| {adapted['bpb']:.3f} | {comp[0]:.2f} / {comp[1]:.2f} "
                     f"| {dec[0]:.2f} / {dec[1]:.2f} | {_pct(dec[1], dec[0])} | {ok} |")
    return "\n".join(lines)


def ablation_table(ablations: dict[str, dict[str, float]]) -> str:
    lines = ["| first bytes of | " + " | ".join(VARIANTS) + " |",
             "|---|" + "---:|" * len(VARIANTS)]
    for file, bpb in ablations.items():
        base = bpb["model alone"]
        cells = [f"{bpb[v]:.4f}" + ("" if v == "model alone" else f" ({_pct(bpb[v], base)})")
                 for v in VARIANTS]
        lines.append(f"| {file} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = bench_arguments(__doc__, ROOT, model=True)
    parser.add_argument("--prefix", type=int, default=20000)
    args = parser.parse_args()
    short = [args.corpus / "alice29.txt", LOG]
    trips = rows_for(short, args.model, args.prefix, decode=True, repeats=2)
    ablations = {}
    for path in short:
        ablations[path.name] = bench.adaptation_ablation(path.read_bytes()[:args.prefix],
                                                         VARIANTS, args.model)
        print(json.dumps({path.name: ablations[path.name]}), file=sys.stderr, flush=True)
    whole = rows_for(corpus_files(args.corpus) + [LOG], args.model, None, decode=False)
    text = "\n".join([
        f"Measured {datetime.date.today().isoformat()} on {machine()}; `bench/adaptation.py`, "
        f"{args.model}, exact arithmetic, default segments (4,096 tokens) and groups (8), alone "
        "on the machine. Whole files, compressed (sizes are real archives):", "",
        whole_table(whole), "",
        f"Round trips of each file's first {args.prefix:,} bytes, decoded and compared (the "
        "faster of two runs per mode):", "",
        round_trip_table(trips), "",
        "What each part buys (model cross-entropy in bits per byte of the same prefixes; "
        "one forward pass shared by every column):", "",
        ablation_table(ablations)])
    publish(ROOT, "adaptation", text, {"whole": whole, "round_trips": trips,
                                       "ablation": ablations}, write=not args.no_write)
    if not all(r["roundtrip_ok"] for r in trips):
        raise SystemExit("a round trip FAILED")


if __name__ == "__main__":
    main()
