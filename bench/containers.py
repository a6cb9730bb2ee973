"""Text inside containers: tars of real source trees and documents, against their files.

Usage: python bench/containers.py [--model smollm2-135m] [--no-write] [--quick]

Four sets of text files found on this machine, each chosen by a fixed rule (the first N by
name within a size range, so another machine picks its own files of the same kind): C
headers of /usr/include/linux, modules of this Python's standard library, man pages of
/usr/share/man/man1 (their roff sources, ungzipped), and Debian copyright files of
/usr/share/doc. Each set is made into a tar by GNU tar (`tar c --sort=name`, the files'
own metadata), and coded:
- the tar through llmzip with default settings (a tar is cut by its members), with its
  text runs found in any file (`layout="runs"`), and without a layout (`layout="none"`,
  as llmzip coded a tar before layouts);
- the same files concatenated (in the tar's order) through llmzip, and one by one (the sum
  of their archives);
- the tar through xz -9e and zstd -19 --long.
The default archive of each tar is decoded and compared byte for byte. The first set is
also put in an ar archive and a stored zip (where those tools are installed), which llmzip
cuts by their text runs, and coded likewise.

Then the corpus files: whether a layout applies to each, and its first 16 KB compressed
with and without layouts in turn, the archives and the times side by side, so that what
layouts cost a file they do not apply to shows. --quick: two small sets, for a try of the script.

Writes bench/results/containers.{json,md} and the docs/RESULTS.md block between the
containers-results markers.
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from harness.measure import forget_forwards
from harness.report import bench_arguments, corpus_files, machine, publish

import llmzip  # noqa: F401  (first: sets the thread environment before numpy loads)
from llmzip import Codec
from llmzip.codec import mixed
from llmzip.container import describe

ROOT = Path(__file__).resolve().parents[1]
CORPUS_SLICE = 16384


def _first(paths, count: int, low: int, high: int, size=lambda p: p.stat().st_size):
    chosen = [p for p in sorted(paths) if p.is_file() and low <= size(p) <= high]
    return chosen[:count]


def collect(workdir: Path, quick: bool) -> dict[str, Path]:
    """Each set's directory under workdir (files copied in, man pages ungzipped)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    sets = {
        "C headers (linux/)": [(p.name, p.read_bytes()) for p in _first(
            Path("/usr/include/linux").glob("*.h"), 12 if quick else 60, 1, 3000)],
        "Python modules": [(p.name, p.read_bytes()) for p in _first(
            stdlib.glob("*.py"), 3 if quick else 8, 2000, 4000)],
        "man pages": [(p.name[:-3], gzip.decompress(p.read_bytes())) for p in _first(
            Path("/usr/share/man/man1").glob("*.1.gz"), 12, 1, 4000,
            size=lambda p: len(gzip.decompress(p.read_bytes())))] if not quick else [],
        "copyright files": [(p.parent.name, p.read_bytes()) for p in _first(
            Path("/usr/share/doc").glob("*/copyright"), 15, 1000, 3000)] if not quick else [],
    }
    dirs = {}
    for name, files in sets.items():
        if not files:
            continue
        top = workdir / name.split()[0].lower()
        top.mkdir()
        for filename, data in files:
            (top / filename).write_bytes(data)
        dirs[name] = top
    return dirs


def make_tar(directory: Path) -> tuple[bytes, list[bytes]]:
    """GNU tar of the directory, and its files' contents in the tar's order."""
    tar = subprocess.run(["tar", "c", "--sort=name", "-C", str(directory.parent),
                          directory.name], check=True, capture_output=True).stdout
    names = subprocess.run(["tar", "t"], input=tar, check=True,
                           capture_output=True).stdout.decode().split()
    files = [(directory.parent / n).read_bytes() for n in names
             if (directory.parent / n).is_file()]
    return tar, files


def classical(tar: bytes) -> dict[str, int]:
    out = {}
    for name, command in (("xz -9e", ["xz", "-9e", "-c"]),
                          ("zstd -19 --long", ["zstd", "-19", "--long", "-c", "-q"])):
        if shutil.which(command[0]):
            out[name] = len(subprocess.run(command, input=tar, check=True,
                                           capture_output=True).stdout)
    return out


def tar_row(name: str, directory: Path, model: str) -> dict:
    tar, files = make_tar(directory)
    row = {"set": name, "files": len(files), "text_bytes": sum(map(len, files)),
           "tar_bytes": len(tar), "tar_sha256": hashlib.sha256(tar).hexdigest()}
    for label, layout in (("tar", "auto"), ("tar, runs", "runs"), ("tar, no layout", "none")):
        codec = Codec(model, layout=layout)
        forget_forwards(model)
        started = time.perf_counter()
        blob = codec.compress(tar)
        row[label] = len(blob)
        row[f"{label} s"] = time.perf_counter() - started
        if layout == "auto":
            facts = describe(blob)
            row["layout"] = facts["layout"]
            forget_forwards(model)
            started = time.perf_counter()
            row["identical"] = Codec(model).decompress(blob) == tar
            row["decompress s"] = time.perf_counter() - started
    codec = Codec(model)
    row["concatenated"] = len(codec.compress(b"".join(files)))
    row["one by one"] = sum(len(codec.compress(f)) for f in files)
    row.update(classical(tar))
    row["ratio"] = row["tar"] / row["concatenated"]
    print(row, file=sys.stderr, flush=True)
    return row


OTHER_CONTAINERS = {  # the same files in containers llmzip has no parser for
    "ar": (["ar", "rcS"], "set.a"),
    "zip -0 (stored)": (["zip", "-q", "-0", "-X"], "set.zip"),
}


def other_rows(name: str, directory: Path, model: str, concatenated: int) -> list[dict]:
    """The set in each of OTHER_CONTAINERS (where its tool is installed), coded with default
    settings and without a layout, and decoded."""
    files = sorted(p.name for p in directory.iterdir())
    rows = []
    for label, (command, filename) in OTHER_CONTAINERS.items():
        if not shutil.which(command[0]):
            continue
        container = directory.parent / filename
        subprocess.run([*command, str(container), *files], cwd=directory, check=True,
                       capture_output=True)
        data = container.read_bytes()
        container.unlink()
        row = {"set": name, "container": label, "bytes": len(data),
               "concatenated": concatenated}
        for key, layout in (("llmzip", "auto"), ("no layout", "none")):
            forget_forwards(model)
            started = time.perf_counter()
            blob = Codec(model, layout=layout).compress(data)
            row[key], row[f"{key} s"] = len(blob), time.perf_counter() - started
            if layout == "auto":
                row["layout"] = describe(blob)["layout"]
                row["identical"] = Codec(model).decompress(blob) == data
        row.update(classical(data))
        row["ratio"] = row["llmzip"] / concatenated
        print(row, file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def corpus_row(path: Path, model: str) -> dict:
    whole = path.read_bytes()
    data = whole[:CORPUS_SLICE]
    row = {"file": path.name, "bytes": len(whole), "layout": mixed.plan(whole) is not None}
    for label, layout in (("none", "none"), ("auto", "auto")):
        codec = Codec(model, layout=layout)
        forget_forwards(model)
        started = time.perf_counter()
        row[label] = len(codec.compress(data))
        row[f"{label} s"] = time.perf_counter() - started
    print(row, file=sys.stderr, flush=True)
    return row


def report(tars: list[dict], others: list[dict], corpus: list[dict]) -> str:
    extra = [k for k in ("xz -9e", "zstd -19 --long") if k in tars[0]]
    out = ["| tar of | files | text bytes | tar bytes | **llmzip** | runs | no layout | "
           "files concatenated | one by one | " + " | ".join(extra) + " | tar / concatenated |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(extra) + "---:|"]
    for r in tars:
        out.append(f"| {r['set']} | {r['files']} | {r['text_bytes']:,} | {r['tar_bytes']:,} | "
                   f"**{r['tar']:,}** | {r['tar, runs']:,} | {r['tar, no layout']:,} | "
                   f"{r['concatenated']:,} | {r['one by one']:,} | "
                   + " | ".join(f"{r[k]:,}" for k in extra) + f" | {r['ratio']:.3f} |")
    out += ["", "Bytes. llmzip: default settings (a tar is cut by its members); runs: its text "
            "runs found as in any file; no layout: the tar coded as one file, as before "
            "layouts. Round trips of the default archives: "
            + ", ".join(f"{r['set']} {'identical' if r['identical'] else 'DIFFERENT'} "
                        f"({r['tar_bytes'] / 1024 / r['decompress s']:.2f} KB/s)"
                        for r in tars) + ".", ""]
    if others:
        out += [f"The {others[0]['set']} in other containers, which llmzip has no parser "
                "for: cut by their text runs where a layout applies (an ar archive's headers "
                "are text, so it is coded as one text file).", "",
                "| container | bytes | cut | **llmzip** | no layout | files concatenated | "
                + " | ".join(extra) + " | container / concatenated |",
                "|---|---:|---|---:|---:|---:|" + "---:|" * len(extra) + "---:|"]
        for r in others:
            cut = (f"{r['layout']['kind']}: {r['layout']['text_runs']:,} text runs"
                   if r["layout"] else "none")
            out.append(f"| {r['container']} | {r['bytes']:,} | {cut} | **{r['llmzip']:,}** | "
                       f"{r['no layout']:,} | {r['concatenated']:,} | "
                       + " | ".join(f"{r[k]:,}" for k in extra) + f" | {r['ratio']:.3f} |")
        out += ["", "Round trips: " + ", ".join(
            f"{r['container']} {'identical' if r['identical'] else 'DIFFERENT'}"
            for r in others) + ".", ""]
    out += ["Corpus files: whether a layout applies to the whole file (where none does, its "
            "archive is the one it had before layouts), and its first "
            f"{CORPUS_SLICE // 1024} KB compressed without and with layouts in turn:", "",
            "| file | bytes | a layout applies | first 16 KB without: bytes | s | with: bytes "
            "| s |", "|---|---:|---|---:|---:|---:|---:|"]
    for r in corpus:
        out.append(f"| {r['file']} | {r['bytes']:,} | {'yes' if r['layout'] else 'no'} | "
                   f"{r['none']:,} | "
                   f"{r['none s']:.1f} | {r['auto']:,} | {r['auto s']:.1f} |")
    return "\n".join(out)


def main() -> None:
    parser = bench_arguments(__doc__, ROOT, model=True)
    parser.add_argument("--quick", action="store_true", help="two small sets (a try)")
    args = parser.parse_args()
    Codec(args.model).load()  # loading is not timed
    with tempfile.TemporaryDirectory() as workdir:
        sets = collect(Path(workdir), args.quick)
        tars = [tar_row(name, d, args.model) for name, d in sets.items()]
        first = next(iter(sets))  # the C headers
        others = other_rows(first, sets[first], args.model, tars[0]["concatenated"])
    corpus = [corpus_row(p, args.model) for p in corpus_files(args.corpus)
              if not args.quick or p.name == "argparse.py"]
    text = "\n".join([
        f"Measured {datetime.date.today().isoformat()} on {machine()}; "
        f"`bench/containers.py{' --quick' if args.quick else ''}`, {args.model}.", "",
        report(tars, others, corpus)])
    publish(ROOT, "containers", text, {"tars": tars, "others": others, "corpus": corpus},
            write=not args.no_write and not args.quick)


if __name__ == "__main__":
    main()
