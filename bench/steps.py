"""Where a decoder step's time goes: the exact engine's KV-cached step by rows and cached positions.

Usage: python bench/steps.py [--model smollm2-135m] [--rows 1 2 4 11] [--positions 500 2000 4000]
                             [--threads 1 2] [--steps 8]

A decoder step feeds one token to each row (segment) being decoded; its cost sets
decompression speed. For each thread count, row count and cached position this prints the
fastest and the median step time, tokens per second at the fastest, and how much of the
step went to the matrix products (the backend's step products) and to attention over the
cache (`cpu.attention.attend_cached`); the rest is the small kernels (norms, RoPE,
quantization, frequencies) and Python. Where a faster kernel serves a row count (`amx`,
`vnni`, `avx2`, or torch's int8 matmul where `products.int8_matmul_serves`), the same step
is timed with the numba tiles alone too, in the same run. The cache holds zeros: a step's
cost does not depend on what the cache holds. The numba backend (`--device cpu`) only.
Run it alone; on a shared virtual machine the fastest step is the steadier figure (medians
of the same code have moved by 30% between runs).
"""

from __future__ import annotations

import argparse
import statistics
import time

import llmzip  # noqa: F401  (first: sets the thread environment before numpy loads)

# isort: split
import numba
import numpy as np

from llmzip.engine.exact.cpu import amx, avx2, vnni
from llmzip.engine.exact.cpu import backend as cpu_backend
from llmzip.engine.exact.cpu import products as kernels
from llmzip.engine.exact.stepper import Stepper
from llmzip.engine.factory import open_engine


class Timed:
    """Wraps a callable and adds up the seconds spent in it, and in its methods (a products
    object's `scaled`: products and scaling in one pass)."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args):
        return self._timed(self.fn, args)

    def __getattr__(self, name):
        attr = getattr(self.fn, name)
        return (lambda *args: self._timed(attr, args)) if callable(attr) else attr

    def _timed(self, fn, args):
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds += time.perf_counter() - started


ATTEND = cpu_backend.attend_cached  # what the numba backend's KV cache calls


def measure(engine, rows: int, position: int, steps: int, numba_only: bool = False) -> dict:
    stepper = Stepper(engine.net, engine.backend, rows, 4096)
    if numba_only:
        stepper.products = cpu_backend.TileProducts()
    ids = np.arange(rows, dtype=np.int64) + 100
    stepper.step(ids)  # first use: buffers and any compile
    stepper.pos = position
    products = stepper.products = Timed(stepper.products)
    attention = cpu_backend.attend_cached = Timed(ATTEND)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        stepper.step(ids)
        stepper.pos = position
        times.append(time.perf_counter() - started)
    total = sum(times)
    return {"best_ms": 1000 * min(times), "median_ms": 1000 * statistics.median(times),
            "tok_s": rows / min(times),
            "products": products.seconds / total, "attention": attention.seconds / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4, 11])
    parser.add_argument("--positions", type=int, nargs="+", default=[500, 2000, 4000])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    engine, _ = open_engine(args.model, None)
    int8, tiles, fast = kernels.int8_matmul_serves(), amx.available(), vnni.available()
    wide = avx2.available()
    print(f"{args.model}, numba {numba.__version__}, {args.steps} steps each; AMX tile products "
          + (f"used up to {amx.MAX_ROWS} rows" if tiles else "not available here")
          + "; AVX-512 VNNI products " + (f"used up to {vnni.MAX_ROWS} rows" if fast
                                            else "not available here")
          + " (where AMX's are not); torch's int8 matmul "
          + (f"used from {kernels.INT8_ROWS} rows where neither serves" if int8
             else "not used here (no VNNI, or inexact)")
          + "; AVX2 products " + ("used where none of those serves" if wide
                                  else "not available here")
          + ("; the last column times the same step with the numba kernels only"
             if int8 or fast or tiles or wide else ""))
    fast = fast or tiles
    other = int8 or fast or wide
    print("| threads | rows | cached positions | fastest step ms | median ms | tokens/s | "
          "products | attention |" + (" numba only: fastest ms |" if other else ""))
    print("|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if other else ""))
    for threads in args.threads:
        numba.set_num_threads(threads)
        for rows in args.rows:
            for position in args.positions:
                compare = fast or wide or (int8 and rows >= kernels.INT8_ROWS)
                alone = measure(engine, rows, position, args.steps, True) if compare else None
                r = measure(engine, rows, position, args.steps)
                print(f"| {threads} | {rows} | {position:,} | {r['best_ms']:.1f} | "
                      f"{r['median_ms']:.1f} | {r['tok_s']:.0f} | "
                      f"{r['products']:.0%} | {r['attention']:.0%} |"
                      + (f" {alone['best_ms']:.1f} |" if alone else " same |" if other
                         else ""),
                      flush=True)


if __name__ == "__main__":
    main()
