"""Side-by-side measurements: llmzip against gzip, bzip2, xz, zstd and brotli on real files.

Every row is a real round trip (compressed, decompressed and compared), timed in this
process, with its own peak resident memory. For llmzip rows the model's cross-entropy sits
next to the real archive size, and the model file's size gives the two-part (MDL) view:
archive plus model, per byte. `render` prints rows as a Markdown table, CSV or JSON
(one object per row, keyed by `COLUMNS`); `plot` draws them. No torch at import time.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from llmzip.errors import LlmzipError
from llmzip.tools.baselines import NAMES, baselines

__all__ = ["Row", "COLUMNS", "measure_baseline", "measure_llmzip", "run", "render", "plot",
           "adaptation_ablation"]


@dataclass
class Row:
    file: str
    bytes: int
    compressor: str  # "gzip -9 (zlib 1.3)", "llmzip smollm2-135m (exact)", ...
    compressed_bytes: int
    bpb: float  # 8 * compressed_bytes / bytes
    cross_entropy_bpb: float | None  # model's -sum log2 p over the bytes it coded, per byte
    overhead_pct: float | None  # range-coder bits against that cross-entropy
    framing_bytes: int | None  # header, checksums and block table: bytes that code no content
    model_bytes: int | None  # size of the model file(s) a decoder needs
    two_part_bpb: float | None  # (archive + model) per byte: L(model) + L(data | model)
    compress_s: float
    decompress_s: float
    compress_kb_s: float  # kilobytes (1000 B) of input per second
    decompress_kb_s: float | None  # likewise; None: compressed only
    peak_rss_mb: float  # this process's peak resident memory during the row
    roundtrip_ok: bool | None  # None: compressed only (measure_llmzip(decode=False))


COLUMNS = [f.name for f in fields(Row)]


# --- memory ----------------------------------------------------------------------------------

def _reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM, so each row gets its own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(func, *args, **kwargs):
    started = time.perf_counter()
    result = func(*args, **kwargs)
    return result, time.perf_counter() - started


def _kb_per_s(size: int, seconds: float) -> float:
    return size / 1000 / seconds if seconds > 0 else math.inf


# --- rows ------------------------------------------------------------------------------------

def measure_baseline(key: str, data: bytes, file: str) -> Row:
    """One classical codec at its strongest common setting (see `baselines`)."""
    base = baselines()[key]
    _reset_peak_rss()
    packed, compress_s = _timed(base.compress, data)
    restored, decompress_s = _timed(base.decompress, packed)
    return Row(file, len(data), f"{base.name} ({base.version})", len(packed),
               _bpb(len(packed), len(data)), None, None, None, None, None, compress_s,
               decompress_s, _kb_per_s(len(data), compress_s),
               _kb_per_s(len(data), decompress_s), _peak_rss_mb(), restored == data)


def measure_llmzip(codec, data: bytes, file: str, progress=None, decode: bool = True) -> Row:
    """One llmzip round trip with a (loaded) Codec; progress(phase, done, total, bits).
    decode=False: compression alone (decompress_s 0, roundtrip_ok None), for files whose
    decoding would take longer than a bench can spend."""
    from llmzip.models.presets import model_file_bytes
    _reset_peak_rss()
    (blob, stats), compress_s = _timed(
        codec.compress_with_stats, data,
        progress=(lambda d, t, b: progress("compress", d, t, b)) if progress else None)
    restored, decompress_s = _timed(
        codec.decompress, blob,
        progress=(lambda d, t, b: progress("decompress", d, t, b)) if progress else None
    ) if decode else (None, 0.0)
    model_size = model_file_bytes(codec.settings.model_name)
    coded = stats.n_tokens > 0
    return Row(file, len(data), f"llmzip {codec.settings.model_name}",
               len(blob), _bpb(len(blob), len(data)),
               stats.xent_bpb if coded else None, stats.overhead_pct if coded else None,
               stats.framing_bytes, model_size, _bpb(len(blob) + model_size, len(data)),
               compress_s, decompress_s, _kb_per_s(len(data), compress_s),
               _kb_per_s(len(data), decompress_s) if decode else None, _peak_rss_mb(),
               restored == data if decode else None)


def _bpb(size: int, original: int) -> float:
    return 8 * size / original if original else 0.0


def run(files, models=(), *, max_bytes: int | None = None, classical=None,
        codec_settings: dict | None = None, on_row=None, progress=None) -> list[Row]:
    """Rows for every file: each classical codec (default: every one installed), then
    llmzip with each model (loaded once)."""
    from llmzip.codec.codec import Codec
    installed = baselines()  # or one line saying what to install, before any model loads
    classical = [k for k in NAMES if k in installed] if classical is None else classical
    codecs = [Codec(m, **(codec_settings or {})).load() for m in models]  # load untimed
    rows = []
    for path in files:
        data = Path(path).read_bytes()[:max_bytes]
        name = Path(path).name
        for key in classical:
            rows.append(measure_baseline(key, data, name))
            on_row and on_row(rows[-1])
        for codec in codecs:
            rows.append(measure_llmzip(codec, data, name, progress))
            on_row and on_row(rows[-1])
    return rows


def adaptation_ablation(data: bytes, variants: dict, model: str | None = None,
                        segment_tokens: int = 4096, group_size: int = 8) -> dict[str, float]:
    """Model cross-entropy in bits per byte of the text segments of `data`, for each
    variant of adaptation: None (the model alone) or `adapt.Adapter` options. One full
    forward per group serves every variant (each adapts its own copy of the tables), so
    the variants differ only in what they mix in. Exact engines only."""
    from llmzip.codec import segments as seg
    from llmzip.codec.adapt import Adapter
    from llmzip.codec.groups import adapt_chunk, groups_of
    from llmzip.codec.rangecoder import code_lengths
    from llmzip.codec.settings import Settings
    from llmzip.engine.factory import open_engine
    from llmzip.engine.tables import copied
    engine, loaded = open_engine(Settings(model).model_name, None)
    text = [s for s in seg.cut(data, loaded.tokenizer, segment_tokens) if s.candidate]
    bits = dict.fromkeys(variants, 0.0)
    for group in groups_of(text, group_size):
        adapters = {k: None if v is None else Adapter(len(group), **v) for k, v in variants.items()}
        for pos, tables in engine.group_tables([list(x.ids) for x in group]):
            for name, adapter in adapters.items():
                mine = copied(tables) if adapter else tables
                if adapter:
                    adapt_chunk(adapter, group, mine, pos)
                for i, t in mine.items():
                    bits[name] += float(code_lengths(t, group[i].ids[pos:pos + len(t)]).sum())
    n_bytes = sum(len(s.raw) for s in text)
    return {k: v / n_bytes if n_bytes else float("nan") for k, v in bits.items()}


# --- rendering -------------------------------------------------------------------------------

def _cell(value, key: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if key.endswith("_s"):
            return f"{value:.2f}"
        if key.endswith("kb_s") or key == "peak_rss_mb":
            return f"{value:.1f}" if value < 100 else f"{value:.0f}"
        return f"{value:.3f}"
    if isinstance(value, int) and key.endswith("bytes"):
        return f"{value:,}"
    return str(value)


_MARKDOWN_COLUMNS = {  # column -> heading, with its unit (the Markdown table is for people)
    "file": "file", "bytes": "bytes", "compressor": "compressor",
    "compressed_bytes": "compressed (bytes)", "bpb": "bits/byte",
    "cross_entropy_bpb": "model cross-entropy (bits/byte)", "overhead_pct": "coder overhead (%)",
    "framing_bytes": "framing (bytes)", "two_part_bpb": "bits/byte counting the model file",
    "compress_kb_s": "compress (KB/s)", "decompress_kb_s": "decompress (KB/s)",
    "peak_rss_mb": "peak memory (MB)", "roundtrip_ok": "round trip",
}


def render(rows: list[Row], fmt: str = "md") -> str:
    """Rows as a Markdown table ("md"), CSV ("csv") or JSON ("json", a list of objects)."""
    if fmt == "json":
        return json.dumps([asdict(r) for r in rows], indent=1)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
        return out.getvalue()
    if fmt != "md":
        raise ValueError(f"unknown format {fmt!r} (md, csv or json)")
    keys = list(_MARKDOWN_COLUMNS)
    lines = ["| " + " | ".join(_MARKDOWN_COLUMNS[k] for k in keys) + " |",
             "|" + "|".join("---" if k in ("file", "compressor") else "---:" for k in keys) + "|"]
    for r in rows:
        values = asdict(r)
        lines.append("| " + " | ".join(_cell(values[k], k) for k in keys) + " |")
    return "\n".join(lines)


def plot(rows: list[Row], path: str, title: str = "") -> None:
    """Bits per byte per file and compressor; llmzip bars carry the model's cross-entropy as
    a black tick, so code length and cross-entropy can be compared at a glance."""
    try:
        import matplotlib
    except ImportError:
        raise LlmzipError("--plot needs matplotlib, which is not installed: "
                          "pip install 'llmzip[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = list(dict.fromkeys(r.file for r in rows))
    compressors = list(dict.fromkeys(r.compressor for r in rows))
    width = 0.8 / len(compressors)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.6 * len(files) * len(compressors) / 4), 4.2))
    colors = plt.get_cmap("tab10")
    ce_label = "model cross-entropy"
    for j, comp in enumerate(compressors):
        xs, ys, ces = [], [], []
        for i, f in enumerate(files):
            row = next((r for r in rows if r.file == f and r.compressor == comp), None)
            if row is not None:
                xs.append(i + (j - (len(compressors) - 1) / 2) * width)
                ys.append(row.bpb)
                ces.append(row.cross_entropy_bpb)
        ax.bar(xs, ys, width * 0.92, label=comp.split(" (")[0] if "llmzip" not in comp
               else comp, color=colors(j % 10))
        marks = [(x, ce) for x, ce in zip(xs, ces) if ce is not None]
        if marks:
            ax.hlines([ce for _, ce in marks], [x - width / 2 for x, _ in marks],
                      [x + width / 2 for x, _ in marks], colors="black", linewidth=2,
                      label=ce_label)
            ce_label = None
    ax.set_xticks(range(len(files)), files)
    ax.set_ylabel("bits per byte (lower is better)")
    ax.set_title(title or "Compressed size per file")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
