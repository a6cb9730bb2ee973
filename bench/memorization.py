"""What the model already knew: text it surely saw in training against text it cannot have seen.

Usage: python bench/memorization.py [--model smollm2-135m] [--bytes 8192] [--no-write]

The same model, the same number of bytes of each:
- seen: a public-domain classic (alice29.txt), Python standard-library source (argparse.py)
  and the Apache License 2.0, copied all over the web;
- unseen: bench/data/new-2026.md, written for this repository in November 2026, after the
  model's training data was collected (2024), so it is new by construction;
- the unseen text with its words shuffled within each sentence (same words, no syntax);
- random letters in word-sized runs (nothing to know), and random bytes (not text at all:
  stored, as any archiver would).
Every row is a real round trip; xz is there for scale. Writes bench/results/memorization
.{json,md,png} and the docs/RESULTS.md block between the memorization-results markers.
"""

from __future__ import annotations

import datetime
import json
import random
import re
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from harness.report import bench_arguments, machine, publish

import llmzip  # noqa: F401,E402  (first: sets the thread environment before numpy loads)
from llmzip.tools import bench

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data"
RESULTS = ROOT / "bench" / "results"


def shuffled_words(text: bytes, seed: int = 1) -> bytes:
    """Each sentence's words in a random order: the vocabulary stays, the structure goes."""
    rng = random.Random(seed)
    out = []
    for sentence in re.split(rb"(?<=[.!?])\s+", text):
        words = sentence.split()
        rng.shuffle(words)
        out.append(b" ".join(words))
    return b"\n".join(out)


def random_letters(n: int, seed: int = 2) -> bytes:
    rng = random.Random(seed)
    words = ("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 9)))
             for _ in range(n))
    return " ".join(words).encode()[:n]


def texts(corpus: Path, n: int) -> dict[str, tuple[str, bytes]]:
    """label -> (kind, bytes), each cut to n bytes."""
    new = (DATA / "new-2026.md").read_bytes()
    return {
        "alice29.txt (a classic)": ("seen", (corpus / "alice29.txt").read_bytes()[:n]),
        "argparse.py (Python's library)": ("seen", (corpus / "argparse.py").read_bytes()[:n]),
        "Apache License 2.0": ("seen", (DATA / "apache-2.0.txt").read_bytes()[:n]),
        "new-2026.md (written here)": ("unseen", new[:n]),
        "new-2026.md, words shuffled": ("unseen, shuffled", shuffled_words(new)[:n]),
        "random letters and spaces": ("random", random_letters(n)),
        "random bytes": ("random", random.Random(3).randbytes(n)),
    }


def measure(model: str, items: dict, work: Path) -> list[dict]:
    rows = []
    for i, (label, (kind, data)) in enumerate(items.items()):
        path = work / f"{i}.txt"
        path.write_bytes(data)
        for r in bench.run([path], [model], classical=("xz",)):
            rows.append({"text": label, "kind": kind, **asdict(r)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict], model: str) -> str:
    lines = ["| text | kind | bytes | xz -9e | llmzip | model cross-entropy | archive + model "
             "| round trip |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for text in dict.fromkeys(r["text"] for r in rows):
        xz = next(r for r in rows if r["text"] == text and r["compressor"].startswith("xz"))
        ours = next(r for r in rows if r["text"] == text and r["compressor"].startswith("llmzip"))
        ce = "" if ours["cross_entropy_bpb"] is None else f"{ours['cross_entropy_bpb']:.3f}"
        lines.append(f"| {text} | {ours['kind']} | {ours['bytes']:,} | {xz['bpb']:.3f} "
                     f"| {ours['bpb']:.3f} | {ce} | {ours['two_part_bpb']:,.0f} "
                     f"| {'ok' if ours['roundtrip_ok'] else 'FAILED'} |")
    return "\n".join(lines)


def gap(rows: list[dict]) -> tuple[float, float]:
    """Mean cross-entropy of the seen texts, and of the unseen one (bits per byte)."""
    ours = [r for r in rows if r["compressor"].startswith("llmzip")]
    seen = [r["cross_entropy_bpb"] for r in ours if r["kind"] == "seen"]
    unseen = [r["cross_entropy_bpb"] for r in ours if r["kind"] == "unseen"]
    return sum(seen) / len(seen), sum(unseen) / len(unseen)


def chart(rows: list[dict], path: Path, model: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ours = [r for r in rows if r["compressor"].startswith("llmzip")]
    colors = {"seen": "tab:green", "unseen": "tab:blue", "unseen, shuffled": "tab:orange",
              "random": "tab:gray"}
    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.barh([r["text"] for r in ours], [r["bpb"] for r in ours],
            color=[colors[r["kind"]] for r in ours])
    for i, r in enumerate(ours):
        ax.text(r["bpb"] + 0.05, i, f"{r['bpb']:.2f}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("bits per byte (lower: the model knew more)")
    ax.set_title(f"{model}: seen, unseen, shuffled and random text")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> None:
    parser = bench_arguments(__doc__, ROOT, model=True)
    parser.add_argument("--bytes", type=int, default=8192)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(args.model, texts(args.corpus, args.bytes), Path(tmp))
    seen, unseen = gap(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    chart(rows, RESULTS / "memorization.png", args.model)
    text = "\n".join([
        f"Measured {datetime.date.today().isoformat()} on {machine()}; `bench/memorization.py`, "
        f"{args.model}, the first {args.bytes:,} bytes of each text.", "",
        table(rows, args.model), "",
        f"Seen texts average {seen:.3f} bits per byte of model cross-entropy, the unseen one "
        f"{unseen:.3f}: {unseen / seen:.2f}x. `archive + model` adds the model file, the "
        "two-part code length: at this size it is all model.", "",
        "![bits per byte: seen, unseen, shuffled, random](../bench/results/memorization.png)"])
    publish(ROOT, "memorization", text, rows, write=not args.no_write)
    if not all(r["roundtrip_ok"] for r in rows):
        raise SystemExit("a round trip FAILED")


if __name__ == "__main__":
    main()
