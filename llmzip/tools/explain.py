"""Where the bits go: one self-contained HTML page with every token shaded by its cost.

The page shows the file's text, one element per model-coded token, shaded by the bits it
cost; hovering a token shows its bytes, probability, bits and the model's top alternatives.
On top: the totals, the model's cross-entropy next to the real archive size. The numbers are
those of a real compression (`Codec.compress_with_stats`), so they agree with `bench` and
`compress`. Blocks the model did not code (stored or LZMA) appear as one labelled element,
and so do copies of long repeats (`repeats`), at the token boundary nearest their place.
No network: styles, script and data are inline.
"""

from __future__ import annotations

import html
import itertools
import json

import numpy as np

from llmzip.codec.codec import CompressStats

__all__ = ["explain", "render_page", "top_alternatives"]

TOP_K = 5
_MAX_SHADE_BITS = 16.0  # a token costing this many bits or more gets the darkest shade


def top_alternatives(freqs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, k) ids of each row's k most likely tokens, best first, and their probabilities."""
    k = min(k, freqs.shape[1])
    ids = np.argpartition(-freqs, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(freqs, ids, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    ids, top = np.take_along_axis(ids, order, 1), np.take_along_axis(top, order, 1)
    return ids, top / freqs.sum(axis=1, keepdims=True)


def explain(codec, data: bytes, name: str, progress=None) -> tuple[str, CompressStats]:
    """Compress `data` with `codec` and return (HTML page, the compression's stats)."""
    tops: dict[int, list] = {}  # segment start -> its positions' top tokens, in order

    def observe(start, freqs):
        if start is None:  # coded again without adaptation: only the second pass counts
            tops.clear()
        else:
            tops.setdefault(start, []).append(top_alternatives(freqs, TOP_K))

    _, stats = codec.compress_with_stats(data, progress=progress, observe=observe)
    tokenizer = codec.tokenizer() if stats.n_tokens else None
    joined = {start: tuple(np.concatenate(col) for col in zip(*parts))
              for start, parts in tops.items()}
    return render_page(data, stats, tokenizer, name, joined), stats


def _shown(raw: bytes) -> str:
    """A token's bytes as text: UTF-8 where it decodes, \\xNN escapes where it does not."""
    return raw.decode("utf-8", "backslashreplace")


def _shade(bits: float) -> str:
    lightness = 100 - 55 * min(bits, _MAX_SHADE_BITS) / _MAX_SHADE_BITS
    return f"hsl(8,90%,{lightness:.0f}%)"


def _token_spans(seg, tokenizer, records: list, top) -> list[tuple[int, str]]:
    """(offset in the literal bytes, element) of each token of a segment."""
    spans, offset = [], seg.start
    for j, raw in enumerate(tokenizer.pieces(seg.ids)):
        bits = float(seg.bits[j])
        alternatives = []
        if top is not None:
            alternatives = [[_shown(tokenizer.table[int(t)]), round(float(p), 6)]
                            for t, p in zip(top[0][j], top[1][j])]
        records.append([_shown(raw), round(2.0 ** -bits, 6), round(bits, 3), alternatives])
        # HTML turns a lone CR into a line break: drop CRs from the visible text, and mark
        # tokens with nothing visible (a CR, an escape) with a dot
        visible = _shown(raw).replace("\r", "")
        kind, visible = ("t", visible) if visible else ("t x", "\u00b7")
        spans.append((offset, f'<span class="{kind}" data-i="{len(records) - 1}" '
                      f'style="background:{_shade(bits)}">{html.escape(visible)}</span>'))
        offset += len(raw)
    return spans


def render_page(data: bytes, stats: CompressStats, tokenizer, name: str,
                tops: dict | None = None) -> str:
    """The HTML page for a compression's stats (tokenizer: the model's ByteTokenizer;
    tops: each segment's top tokens and probabilities by its start, if known)."""
    records: list = []
    items: list[tuple[int, str]] = []  # (offset in the literal bytes, element)
    # where each copy sits in the literal bytes (the file less its copies): classical runs
    # are cut there
    copied_before = itertools.accumulate((c.size for c in stats.copies), initial=0)
    places = [c.dest - before for c, before in zip(stats.copies, copied_before)]
    # the literal bytes: of the file, or with a layout (`mixed`) of its text stream, whose
    # binary stream is shown last
    literal_size = sum(size for method, size in stats.blocks.items()
                       if method not in ("copy", "binary"))
    pos = 0
    for seg in stats.segments:
        items += _classical(pos, seg.start, places)
        items += _token_spans(seg, tokenizer, records, (tops or {}).get(seg.start))
        pos = seg.start + len(tokenizer.decode(seg.ids))
    items += _classical(pos, literal_size, places)
    if stats.blocks.get("binary"):
        items.append((literal_size, f'<span class="c" title="the binary stream: LZMA or stored">'
                      f'[{stats.blocks["binary"]:,} bytes between the text runs, coded without '
                      'the model]</span>'))
    copied = [(place, _copied(c)) for place, c in zip(places, stats.copies)]
    body = [element for _, _, element in sorted(
        [(offset, 1, element) for offset, element in items] +
        [(offset, 0, element) for offset, element in copied], key=lambda x: x[:2])]
    return _PAGE.format(
        title=html.escape(name), totals=_totals(stats, name), text="".join(body),
        data=json.dumps(records, ensure_ascii=True).replace("</", "<\\/"))


def _classical(start: int, stop: int, places: list[int]) -> list[tuple[int, str]]:
    """Labelled elements for literal bytes start..stop that the model did not code, cut
    where copies sit."""
    bounds = sorted({start, stop, *(p for p in places if start < p < stop)})
    return [(a, (f'<span class="c" title="not model-coded: stored or LZMA">[{b - a:,} bytes '
                 f'coded without the model]</span>')) for a, b in itertools.pairwise(bounds)]


def _copied(c) -> str:
    return (f'<span class="c" title="a copy of earlier bytes">[{c.size:,} bytes copied from '
            f'byte {c.source:,}]</span>')


def _totals(s: CompressStats, name: str) -> str:
    rows = [("file", html.escape(name), "file"),
            ("original", f"{s.original_bytes:,} bytes", "original-bytes"),
            ("archive", f"{s.archive_bytes:,} bytes", "archive-bytes"),
            ("archive bits/byte", f"{s.bpb:.4f}", "archive-bpb"),
            ("model", html.escape(f"{s.model or '-'} ({s.arithmetic or 'no model'})"), "model"),
            ("tokens", f"{s.n_tokens:,}", "tokens"),
            ("model-coded bytes", f"{s.model_bytes:,}", "model-bytes"),
            ("cross-entropy", f"{s.xent_bits:,.1f} bits", "xent-bits"),
            ("cross-entropy bits/byte", f"{s.xent_bpb:.4f}" if s.n_tokens else "-", "xent-bpb"),
            ("coder overhead", f"{s.overhead_pct:+.3f}%" if s.n_tokens else "-", "overhead")]
    cells = "".join(f'<tr><th>{label}</th><td id="{key}">{value}</td></tr>'
                    for label, value, key in rows)
    return f"<table id=\"totals\">{cells}</table>"


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>llmzip explain: {title}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 1.5em; color: #222; }}
#totals {{ border-collapse: collapse; margin-bottom: 1em; }}
#totals th {{ text-align: left; font-weight: 600; padding: 1px 14px 1px 0; }}
#totals td {{ font-variant-numeric: tabular-nums; }}
#legend span {{ display: inline-block; padding: 0 6px; }}
#text {{ white-space: pre-wrap; word-break: break-all; font: 13px/1.5 ui-monospace, monospace;
  border: 1px solid #ddd; padding: 10px; }}
.t {{ border-radius: 2px; }}
.t:hover {{ outline: 2px solid #1565c0; }}
.x {{ color: #aaa; }}
.c {{ color: #777; background: #eee; font-style: italic; }}
#tip {{ position: fixed; display: none; background: #fff; border: 1px solid #999;
  padding: 6px 8px; font: 12px/1.4 ui-monospace, monospace; box-shadow: 2px 2px 6px #0003;
  pointer-events: none; white-space: pre; }}
</style></head><body>
<h1>Where the bits go: {title}</h1>
{totals}
<div id="legend">cost per token:
<span style="background:hsl(8,90%,100%)">0 bits</span><span style="background:hsl(8,90%,86%)">4</span><span style="background:hsl(8,90%,72%)">8</span><span style="background:hsl(8,90%,59%)">12</span><span style="background:hsl(8,90%,45%)">16+</span>
</div>
<pre id="text">{text}</pre>
<div id="tip"></div>
<script type="application/json" id="tokens">{data}</script>
<script>
const tokens = JSON.parse(document.getElementById("tokens").textContent);
const tip = document.getElementById("tip");
const show = s => JSON.stringify(s);
document.getElementById("text").addEventListener("mousemove", e => {{
  const el = e.target.closest(".t");
  if (!el) {{ tip.style.display = "none"; return; }}
  const [text, p, bits, alts] = tokens[+el.dataset.i];
  tip.textContent = "token " + show(text) + "\\np = " + p.toPrecision(4) + ", " + bits.toFixed(2)
    + " bits" + (alts.length ? "\\nmodel's top guesses:\\n" + alts.map(
      ([t, q]) => "  " + (q * 100).toFixed(2).padStart(6) + "%  " + show(t)).join("\\n") : "");
  tip.style.display = "block";
  tip.style.left = Math.min(e.clientX + 14, innerWidth - tip.offsetWidth - 8) + "px";
  tip.style.top = Math.min(e.clientY + 14, innerHeight - tip.offsetHeight - 8) + "px";
}});
document.getElementById("text").addEventListener("mouseleave", () => tip.style.display = "none");
</script>
</body></html>
"""
