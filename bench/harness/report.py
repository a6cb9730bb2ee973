"""Reports for docs/RESULTS.md: the machine line, corpus tables, and sections between markers.

Every figure in docs/RESULTS.md comes from a `bench/` script; each script measures, then
hands its rows here, so the scripts hold no logic of their own. A section is the text
between `<!-- NAME results: start -->` and `<!-- NAME results: end -->`, replaced whole.
The scripts run as `python bench/X.py`, which puts bench/ on sys.path: they import this
as `harness.report`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from llmzip.tools.bench import Row

__all__ = ["RESULTS_DOC", "bench_arguments", "machine", "corpus_files", "replace_section",
           "publish", "ordered", "pivot", "details", "corpus_report"]

RESULTS_DOC = Path("docs") / "RESULTS.md"  # relative to the repository root
NO_WRITE_HELP = ("leave docs/RESULTS.md as it is (bench/results/ is still written and the "
                 "report printed)")


def bench_arguments(doc: str, root: Path, model: bool = False) -> argparse.ArgumentParser:
    """A bench script's parser with the options they share: --corpus (the repository's
    corpus/ by default), --no-write, and --model where the script runs one model."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=root / "corpus",
                        help="directory of corpus files (default: the repository's corpus/)")
    if model:
        parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--no-write", action="store_true", help=NO_WRITE_HELP)
    return parser


def machine() -> str:
    """CPU model, cores, torch and llmzip versions: what the figures depend on."""
    import torch

    from llmzip import __version__
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}{_vector_unit()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"llmzip {__version__}")


def _vector_unit() -> str:
    """The widest integer SIMD: the same CPU name comes with or without AVX-512 VNNI or
    AMX, and the int8 products' speed depends on them (`vnni`, `amx`)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return ""
    for flag, name in (("amx_int8", "AVX-512 VNNI, AMX"), ("avx512_vnni", "AVX-512 VNNI"),
                       ("avx512f", "AVX-512"), ("avx2", "AVX2")):
        if flag in flags:
            return f" ({name})"
    return ""


def corpus_files(corpus: Path, names=None) -> list[Path]:
    """The named files of the corpus directory, or all of them but its README (provenance
    and licences), sorted."""
    if names:
        return [corpus / n for n in names]
    return sorted(p for p in corpus.iterdir()
                  if p.is_file() and p.name != "README.md" and not p.name.startswith("."))


def replace_section(root: Path, section: str, text: str) -> None:
    """Replace the SECTION block of docs/RESULTS.md (markers kept) with text."""
    document = root / RESULTS_DOC
    start, end = f"<!-- {section} results: start -->", f"<!-- {section} results: end -->"
    content = document.read_text()
    if start not in content or end not in content:
        raise SystemExit(f"{document}: missing the markers {start} / {end}")
    head, rest = content.split(start, 1)
    _, tail = rest.split(end, 1)
    document.write_text(f"{head}{start}\n{text}\n{end}{tail}")


def publish(root: Path, section: str, text: str, data, write: bool = True) -> None:
    """A bench script's last step: bench/results/SECTION.json (the measurements) and .md
    (the report), the report printed, and docs/RESULTS.md's SECTION block replaced with it
    unless `write` is false (--no-write)."""
    results = root / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{section}.json").write_text(json.dumps(data, indent=1) + "\n")
    (results / f"{section}.md").write_text(text + "\n")
    print(text)
    if write:
        replace_section(root, section, text)


def ordered(rows: list[Row]) -> list[Row]:
    """Files by name; in each, the classical codecs in their usual order, then llmzip rows."""
    def key(r):
        ours = r.compressor.startswith("llmzip")
        return r.file, ours, r.compressor if ours else ""
    return sorted(rows, key=key)  # stable: classical rows keep their order


def _short(compressor: str) -> str:
    if compressor.startswith("llmzip"):
        return compressor.rsplit(" (", 1)[0]
    return compressor.split(" (")[0]


def pivot(rows: list[Row]) -> str:
    """Bits per byte: a row per file, a column per compressor, the best in bold."""
    files = list(dict.fromkeys(r.file for r in rows))
    comps = list(dict.fromkeys(r.compressor for r in rows))
    lines = ["| file | bytes | " + " | ".join(map(_short, comps)) + " |",
             "|---|---:|" + "---:|" * len(comps)]
    for f in files:
        by = {r.compressor: r for r in rows if r.file == f}
        best = min(r.bpb for r in by.values())
        cells = ["" if c not in by else
                 (f"**{by[c].bpb:.3f}**" if by[c].bpb == best else f"{by[c].bpb:.3f}")
                 for c in comps]
        lines.append(f"| {f} | {next(iter(by.values())).bytes:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def details(rows: list[Row]) -> str:
    """llmzip rows: code length against cross-entropy, two-part size, speed and memory."""
    lines = ["| file | model | bits/byte | model cross-entropy | coder overhead | archive + model "
             "| compress KB/s | decompress KB/s | peak RSS MB | round trip |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if not r.compressor.startswith("llmzip"):
            continue
        ce = "" if r.cross_entropy_bpb is None else f"{r.cross_entropy_bpb:.3f}"
        ovh = "" if r.overhead_pct is None else f"{r.overhead_pct:+.3f}%"
        lines.append(
            f"| {r.file} | {r.compressor.removeprefix('llmzip ')} | {r.bpb:.3f} | {ce} | {ovh} "
            f"| {r.two_part_bpb:.1f} | {r.bytes / 1000 / r.compress_s:.2f} "
            f"| {r.bytes / 1000 / r.decompress_s:.2f} | {r.peak_rss_mb:.0f} "
            f"| {'ok' if r.roundtrip_ok else 'FAILED'} |")
    return "\n".join(lines)


def corpus_report(rows: list[Row], header: str, section: str) -> str:
    """The corpus block of docs/RESULTS.md: links are relative to docs/."""
    return "\n\n".join([
        header, "Bits per byte (lower is better; **bold** is the best on the file):",
        pivot(rows), "llmzip in detail (model cross-entropy is what an ideal coder would "
        "reach; `archive + model` counts the model file too, the two-part MDL view):",
        details(rows), f"![bits per byte per file](../bench/results/{section}.png)",
        "Every row is a real round trip, decompressed and compared. Full table with timings: "
        f"[bench/results/{section}.md](../bench/results/{section}.md); regenerate with "
        "`make bench`."])
