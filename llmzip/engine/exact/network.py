"""The exact transformer: Llama and Gemma 3 as integer weights, one forward for both directions.

`ExactNetwork.layer` is the one forward step of a layer over any set of rows (token
positions). The encoder runs it over whole segments (`group_tables`, attention of a
segment over its own keys); the decoder runs it one position per row (`stepper.Stepper`,
attention over an int8 KV cache). Both call the same rules (`rules`) and take their
integer products and attention from one backend (`backend`), whose every kernel gives
the reference integers, so their frequency tables are identical bit for bit.

The weights (`weights`) are int8 per output channel, with norm gains folded in (Llama) or
kept to scale the activation (Gemma 3).
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np

from llmzip.cache import cache_root, locked, new_entry
from llmzip.engine.exact import rules as ar
from llmzip.engine.exact.tables import grown, persisted, rope_table
from llmzip.engine.exact.weights import (
    ARCHITECTURES,
    LINEARS,
    NO_GAIN,
    NORMS,
    Layer,
    Linear,
    network_digest,
    quantize_checkpoint,
)
from llmzip.errors import ModelUnavailableError
from llmzip.files import read_json
from llmzip.models.model import float_state

__all__ = ["ExactNetwork", "load_network", "segment_key", "within"]

LOGIT_ELEMENTS = 2**23  # encoder: vocabulary logits per chunk (170 rows of 49k, 32 of 262k):
# each chunk's logits, frequencies and products are ~400 MB at 2^24, the encoder's peak
RECALL_TOKENS = 8192  # encoder: a group this small keeps its outputs for a second pass
BATCH_ROWS = 4096  # encoder: short segments run as one stack of rows, up to this many


def segment_key(ids) -> bytes:
    """A segment's inputs as a key for outputs computed ahead of their group."""
    return np.asarray(ids, np.int64).tobytes()


def within(segments: list, positions: int) -> list:
    """The first segments whose positions add up to at most `positions`: what a prefetch
    runs and keeps."""
    chosen = []
    for ids in segments:
        if len(ids) > positions:
            break
        chosen.append(ids)
        positions -= len(ids)
    return chosen


class ExactNetwork:
    """A Llama or Gemma 3 decoder whose every number is reproducible bit for bit."""

    def __init__(self, meta: dict, arrays: dict[str, np.ndarray]):
        """meta, arrays: from `weights.quantize_checkpoint` (or the cache that stores them)."""
        self.meta = meta
        self.arch_name = meta["arch"]
        self.arch = ARCHITECTURES[self.arch_name]
        self.n_heads, self.n_kv, self.head_dim = meta["n_heads"], meta["n_kv"], meta["head_dim"]
        self.groups = self.n_heads // self.n_kv
        self.eps, self.q_factor, self.embed_scale = meta["eps"], meta["q_factor"], meta["embed_scale"]
        self.embed = arrays["embed"]

        def linear(prefix):
            return Linear(arrays[f"{prefix}.w8"], arrays[f"{prefix}.scale"],
                          arrays.get(f"{prefix}.gain", NO_GAIN))

        self.layers = [Layer(*(linear(f"{i}.{n}") for n in LINEARS), layer["theta"],
                             layer["window"], {n: arrays[f"{i}.norm.{n}"] for n in NORMS
                                               if f"{i}.norm.{n}" in arrays})
                       for i, layer in enumerate(meta["layers"])]
        self.lm_head = linear("lm_head")
        self.vocab_size = self.lm_head.w8.shape[0]
        self._rope: dict = {}
        self._recent: dict = {}  # a small group's last outputs (`_hidden`)

    def digest(self) -> bytes:
        """BLAKE2b-128 of the arithmetic's version and everything a probability depends on."""
        layers = [((layer.qkv, layer.o, layer.gate_up, layer.down),
                   [layer.norms[n] for n in NORMS if n in layer.norms],
                   layer.theta, layer.window) for layer in self.layers]
        return network_digest(ar.VERSION.encode(), self.arch_name, (self.n_heads, self.n_kv,
                              self.head_dim), (self.eps, self.q_factor), self.embed, layers,
                              self.lm_head)

    # --- one forward step, shared by the encoder and the decoder ---------------------------

    def rope(self, theta: float, n_pos: int):
        return grown(self._rope, theta, n_pos,
                     lambda n: persisted(rope_table, theta, self.head_dim, max(n, 4096 + 1)))

    def embed_rows(self, ids: np.ndarray) -> np.ndarray:
        h = self.embed[ids].astype(np.float64)
        return h * self.embed_scale if self.embed_scale is not None else h

    def linear(self, lin: Linear, x: np.ndarray, products,
               normed: bool = False) -> np.ndarray:
        """lin applied to x (R, K), or to RMSNorm(x) (times the kept gain): (R, N) float64.
        The quantized input is int16-valued float32, what every product kernel reads."""
        xq = np.empty(x.shape, np.float32)
        factor = np.empty(x.shape[0])
        if normed:
            ar.norm_quantize_rows(x, lin.gain, self.eps, xq, factor)
        else:
            ar.quantize_rows(x, xq, factor)
        out = np.empty((x.shape[0], lin.w8.shape[0]))
        if not products.scaled(xq, factor, lin, out):  # products and scaling in one pass
            ar.scale_products(products(xq, lin), factor, lin.scale, out)
        return out

    def layer(self, layer: Layer, h: np.ndarray, attend, products) -> np.ndarray:
        """h (R, d) through one layer; attend(qkv) -> (R, heads * D) from the rows' queries,
        keys and values side by side (R, (heads + 2 KV heads) * D)."""
        attn = attend(self.linear(layer.qkv, h, products, normed=True))
        ar.add_post_norm(h, self.linear(layer.o, attn, products),
                         layer.norms.get("post_attn", NO_GAIN), self.eps)
        act = ar.activation(self.linear(layer.gate_up, h, products, normed=True),
                            self.arch["gelu"])
        ar.add_post_norm(h, self.linear(layer.down, act, products),
                         layer.norms.get("post_ffn", NO_GAIN), self.eps)
        return h

    def heads(self, layer: Layer, qkv: np.ndarray, positions: np.ndarray):
        """Queries (R, heads, D), keys and values (R, KV heads, D) from qkv at positions
        (R,): QK-normed where the model has gains, queries and keys rotated (RoPE)."""
        rows, d, nq, nkv = qkv.shape[0], self.head_dim, self.n_heads, self.n_kv
        q = np.ascontiguousarray(qkv[:, :nq * d]).reshape(rows, nq, d)
        k = np.ascontiguousarray(qkv[:, nq * d:(nq + nkv) * d]).reshape(rows, nkv, d)
        v = np.ascontiguousarray(qkv[:, (nq + nkv) * d:]).reshape(rows, nkv, d)
        if "q" in layer.norms:
            ar.head_norm(q, layer.norms["q"], self.eps)
            ar.head_norm(k, layer.norms["k"], self.eps)
        cos, sin = self.rope(layer.theta, int(positions.max()) + 1)
        ar.rotate(q, positions, cos, sin)
        ar.rotate(k, positions, cos, sin)
        return q, k, v

    @staticmethod
    def quantize_qkv(q, k, v):
        """Queries (R, heads, D) as int16-valued float32 with scales (R, heads); int8 keys
        and values (R, H, D) with a scale per (row, head)."""
        qq, qs = np.empty(q.shape, np.float32), np.empty(q.shape[:2])
        ar.quantize_queries(q, qq, qs)
        kq, ks = np.empty(k.shape, np.int8), np.empty(k.shape[:2])
        ar.quantize_kv(k, kq, ks)
        vq, vs = np.empty(v.shape, np.int8), np.empty(v.shape[:2])
        ar.quantize_kv(v, vq, vs)
        return qq, qs, kq, ks, vq, vs

    def logits(self, h: np.ndarray, products) -> np.ndarray:
        return self.linear(self.lm_head, h, products, normed=True)

    # --- whole segments (encoder) --------------------------------------------------------------

    def group_tables(self, segments: list[np.ndarray], backend):
        """(position, {index: tables}) for several segments at once, chunk by chunk, every
        chunk at the same positions in each segment still running: one forward per segment,
        then one head product per chunk over all of them (the head's weights read once per
        2^24 table entries, not once per segment's share). Each segment's inputs are the
        context start, then every token but the last."""
        hidden = self._recalled(segments, backend)  # (T_i, d) each
        head = backend.head_products(sum(len(h) for h in hidden), self.lm_head)
        chunk = max(1, LOGIT_ELEMENTS // (self.vocab_size * len(segments)))
        for start in range(0, max(len(h) for h in hidden), chunk):
            running = [i for i, h in enumerate(hidden) if len(h) > start]
            parts = [hidden[i][start:start + chunk] for i in running]
            freqs = ar.frequencies(self.logits(np.concatenate(parts), head))  # (sum, V)
            bounds = np.cumsum([len(p) for p in parts])[:-1]
            yield start, dict(zip(running, np.split(freqs, bounds)))

    def _recalled(self, segments: list[np.ndarray], backend) -> list[np.ndarray]:
        """Each segment's last-layer output, recalled when the same group comes again: a
        file whose adaptation does not pay is coded a second time with the model alone
        (`codec.groups.encode`), and that second forward would repeat the first. The latest
        groups are kept, up to RECALL_TOKENS positions (38 MB) in all, so a small file's
        groups all are, and a big file's pass through. The backend does not enter the key:
        every backend computes the same integers."""
        key = tuple(segment_key(ids) for ids in segments)
        if key in self._recent:
            return self._recent[key]
        hidden = self._hidden_many(segments, backend)
        self._recall(key, hidden)
        return hidden

    def forget(self) -> None:
        """Let go of the outputs kept for a second pass (so that a benchmark's phases start
        alike)."""
        self._recent.clear()

    def _recall(self, key: tuple, hidden: list[np.ndarray]) -> None:
        self._recent[key] = hidden
        while sum(len(h) for group in self._recent.values() for h in group) > RECALL_TOKENS:
            del self._recent[next(iter(self._recent))]  # the oldest group

    def prefetch(self, segments: list[np.ndarray], backend) -> None:
        """Run many one-segment groups' forward at once, for `group_tables` to recall each
        (many short messages: their rows stacked make one product of BLAS size, where each
        alone is a few dozen rows)."""
        chosen = within(segments, RECALL_TOKENS)
        for ids, h in zip(chosen, self._hidden_many(chosen, backend)):
            self._recall((segment_key(ids),), [h])

    def _hidden_many(self, segments: list[np.ndarray], backend) -> list[np.ndarray]:
        """Each segment's last-layer output (T_i, d): short ones stacked, up to BATCH_ROWS
        rows a run (the products are the same integers for a row alone or stacked)."""
        out, run = [], []
        for ids in list(segments) + [None]:
            if run and (ids is None or sum(map(len, run)) + len(ids) > BATCH_ROWS):
                out += self._hidden(run, backend)
                run = []
            if ids is not None:
                run.append(ids)
        return out

    def _hidden(self, segments: list[np.ndarray], backend) -> list[np.ndarray]:
        """The last layer's output (T_i, d) of segments whose rows run stacked."""
        for ids in segments:
            if len(ids) > ar.MAX_KEYS:
                raise ValueError(f"segment of {len(ids)} tokens exceeds the exact bound of "
                                 f"{ar.MAX_KEYS}")
        bounds = np.cumsum([0] + [len(ids) for ids in segments])
        positions = np.concatenate([np.arange(len(ids)) for ids in segments])
        h = self.embed_rows(np.concatenate(segments))
        products = backend.segment_products(len(h))

        def attend(layer, qkv):
            q, k, v = self.heads(layer, qkv, positions)
            return np.concatenate([backend.attend_segment(self, layer, q[a:b], k[a:b], v[a:b])
                                   for a, b in zip(bounds[:-1], bounds[1:])])

        for layer in self.layers:
            h = self.layer(layer, h, functools.partial(attend, layer), products)
        return [h[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


# --- the integer weights' cache -----------------------------------------------------------

EXACT_LAYOUT = 1  # bump when the cached exact weights change meaning


def load_network(directory: Path, config: dict):
    """(ExactNetwork, digest): loaded from the cache, or quantized and cached first. The
    digest is recomputed on every load, so a damaged entry is noticed and rebuilt."""
    target = _exact_cache_dir(directory)
    with locked(target):
        loaded = _load_exact(target)
        if loaded is None:
            try:
                meta, arrays = quantize_checkpoint(config, float_state(directory))
            except NotImplementedError as exc:
                raise ModelUnavailableError(f"{exc}; use --arithmetic float") from None
            digest = ExactNetwork(meta, arrays).digest()
            with new_entry(target) as work:
                for name, array in arrays.items():
                    np.save(work / f"{name}.npy", array)
                manifest = {"layout": EXACT_LAYOUT, "meta": meta, "digest": digest.hex()}
                (work / "manifest.json").write_text(json.dumps(manifest))
            loaded = _load_exact(target)
    return loaded


def _load_exact(target: Path):
    """The cached network and digest, or None if absent, of another layout, or damaged."""
    manifest = read_json(target / "manifest.json")
    if manifest.get("layout") != EXACT_LAYOUT:
        return None
    try:
        arrays = {f.stem: np.asarray(np.load(f, mmap_mode="r")) for f in target.glob("*.npy")}
        net = ExactNetwork(manifest["meta"], arrays)
    except (OSError, ValueError, KeyError):
        return None
    digest = net.digest()
    return (net, digest) if digest.hex() == manifest.get("digest") else None


def _exact_cache_dir(directory: Path) -> Path:
    """Keyed by the model directory and its files' names, sizes and modification times."""
    h = hashlib.sha256(str(directory.resolve()).encode())
    for f in sorted(directory.iterdir()):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return cache_root() / "exact" / f"{directory.name}-{h.hexdigest()[:16]}"
