"""Short messages: llmzip's compact archives against classical codecs, and many at once.

Usage: python bench/short.py [--model smollm2-135m] [--no-write]

The 45 messages of corpus/short (three kinds of real short text, 15 each): each one's
llmzip archive (default settings, compressed alone), the model's cross-entropy, and gzip -9,
xz -9e, zstd -19, zstd -19 with a 16 KB dictionary trained on 500 other messages of the same
kind, and brotli -q 11 (where installed). Then 100 messages (the test sets and train
messages), compressed and decompressed one by one (`Codec.compress`, `decompress`) and
batched (`compress_many`, `decompress_many`) in this process, each phase without another's
forwards kept: messages per second both ways, and the archives compared byte for byte. Writes bench/results/short.{json,md} and the
docs/RESULTS.md block between the short-results markers.
"""

from __future__ import annotations

import datetime
import gzip
import json
import lzma
import statistics
import sys
import time
from pathlib import Path

from harness.measure import forget_forwards
from harness.report import bench_arguments, machine, publish

import llmzip  # noqa: F401  (first: sets the thread environment before numpy loads)
from llmzip import Codec
from llmzip.container import is_compact

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "corpus" / "short"
KINDS = ("commits", "news", "docstrings")
SPEED_MESSAGES = 100
NOTE = b"Meeting moved to 3pm tomorrow; please bring the Q3 numbers and the draft contract."


def load(kind: str, part: str) -> list[bytes]:
    lines = (DATA / f"{kind}-{part}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line).encode("utf-8") for line in lines]


def classical(kind: str, messages: list[bytes]) -> dict[str, list[int]]:
    import zstandard
    train = load(kind, "train")
    dictionary = zstandard.train_dictionary(16384, train)
    sizes = {"gzip -9": [len(gzip.compress(m, 9, mtime=0)) for m in messages],
             "xz -9e": [len(lzma.compress(m, preset=9 | lzma.PRESET_EXTREME))
                        for m in messages],
             "zstd -19": [len(zstandard.ZstdCompressor(level=19).compress(m))
                          for m in messages],
             "zstd -19, trained dictionary": [
                 len(zstandard.ZstdCompressor(level=19, dict_data=dictionary).compress(m))
                 for m in messages]}
    try:
        import brotli
        sizes["brotli -q 11"] = [len(brotli.compress(m, quality=11)) for m in messages]
    except ImportError:
        pass
    return sizes


def sizes(codec: Codec, kind: str) -> list[dict]:
    rows = []
    messages = load(kind, "test")
    others = classical(kind, messages)
    for i, m in enumerate(messages):
        blob, stats = codec.compress_with_stats(m)
        assert codec.decompress(blob) == m, f"{kind} {i}: round trip failed"
        row = {"kind": kind, "bytes": len(m), "llmzip": len(blob), "compact": is_compact(blob),
               "xent_bytes": stats.xent_bits / 8, **{k: v[i] for k, v in others.items()}}
        row["framing"] = row["llmzip"] - row["xent_bytes"]
        rows.append(row)
        print(row, file=sys.stderr, flush=True)
    return rows


def speed_messages() -> list[bytes]:
    """The SPEED_MESSAGES messages timed one by one against batched: each kind's test
    messages and its first 19 training ones."""
    messages = [m for kind in KINDS for m in load(kind, "test") + load(kind, "train")[:19]]
    return messages[:SPEED_MESSAGES]


def speed(model: str) -> dict:
    messages = speed_messages()
    Codec(model).load()  # the model loads once, outside the timings
    forget_forwards(model)
    started = time.perf_counter()
    alone = [Codec(model).compress(m) for m in messages]
    alone_compress = time.perf_counter() - started
    started = time.perf_counter()
    restored = [Codec(model).decompress(b) for b in alone]
    alone_decompress = time.perf_counter() - started
    codec = Codec(model)
    forget_forwards(model)
    started = time.perf_counter()
    batched = codec.compress_many(messages)
    batch_compress = time.perf_counter() - started
    started = time.perf_counter()
    restored_batch = codec.decompress_many(batched)
    batch_decompress = time.perf_counter() - started
    assert restored == restored_batch == messages
    result = {"messages": len(messages), "identical": batched == alone,
              "alone_compress_s": alone_compress, "alone_decompress_s": alone_decompress,
              "batch_compress_s": batch_compress, "batch_decompress_s": batch_decompress}
    print(result, file=sys.stderr, flush=True)
    return result


def _mean(rows, key) -> float:
    return statistics.fmean(r[key] for r in rows)


def report(rows: list[dict], fast: dict, model: str) -> str:
    keys = [k for k in ("gzip -9", "xz -9e", "zstd -19", "zstd -19, trained dictionary",
                        "brotli -q 11") if k in rows[0]]
    out = ["| messages | mean bytes | llmzip | model cross-entropy | " + " | ".join(keys)
           + " |", "|---|---:|---:|---:|" + "---:|" * len(keys)]
    for name, part in [(k, [r for r in rows if r["kind"] == k]) for k in KINDS] + [
            ("all 45", rows)]:
        out.append(f"| {name} | {_mean(part, 'bytes'):.0f} | **{_mean(part, 'llmzip'):.1f}** "
                   f"| {_mean(part, 'xent_bytes'):.1f} | "
                   + " | ".join(f"{_mean(part, k):.1f}" for k in keys) + " |")
    compact = [r for r in rows if r["compact"]]
    dictionary = _mean(rows, "zstd -19, trained dictionary")
    alone = fast["alone_compress_s"] + fast["alone_decompress_s"]
    batched = fast["batch_compress_s"] + fast["batch_decompress_s"]
    n = fast["messages"]
    out += ["", f"Framing (archive bytes minus the model's cross-entropy in bytes), over the "
            f"{len(compact)} compact archives of {len(rows)}: mean "
            f"{_mean(compact, 'framing'):.1f}, most {max(r['framing'] for r in compact):.1f} "
            f"bytes. Mean archive {_mean(rows, 'llmzip'):.1f} bytes = "
            f"{_mean(rows, 'llmzip') / (_mean(rows, 'xent_bytes')):.3f} x the mean "
            f"cross-entropy ({_mean(rows, 'xent_bytes'):.1f}), and "
            f"{_mean(rows, 'llmzip') / dictionary:.2f} x zstd -19 with a trained dictionary.",
            "", f"{n} messages, one by one: compressed in {fast['alone_compress_s']:.1f} s and "
            f"decompressed in {fast['alone_decompress_s']:.1f} s ({n / alone:.2f} messages a "
            f"second both ways); batched (`compress_many`, `decompress_many`): "
            f"{fast['batch_compress_s']:.1f} s and {fast['batch_decompress_s']:.1f} s "
            f"({n / batched:.2f} a second): {alone / batched:.1f}x; archives "
            f"{'identical' if fast['identical'] else 'DIFFERENT'} either way."]
    return "\n".join(out)


def main() -> None:
    parser = bench_arguments(__doc__, ROOT, model=True)
    args = parser.parse_args()
    codec = Codec(args.model)
    rows = [row for kind in KINDS for row in sizes(codec, kind)]
    note, note_stats = codec.compress_with_stats(NOTE)
    fast = speed(args.model)
    text = "\n".join([
        f"Measured {datetime.date.today().isoformat()} on {machine()}; `bench/short.py`, "
        f"{args.model}, default settings; bytes per message, each archive decoded and "
        "compared.", "", report(rows, fast, args.model), "",
        f"The note \"{NOTE.decode()}\" ({len(NOTE)} bytes): a {len(note)}-byte archive, "
        f"its cross-entropy {note_stats.xent_bits / 8:.1f} bytes; gzip -9 "
        f"{len(gzip.compress(NOTE, 9, mtime=0))} bytes."])
    publish(ROOT, "short", text, {"rows": rows, "speed": fast}, write=not args.no_write)


if __name__ == "__main__":
    main()
