"""File <-> archive: segments -> tokens -> engine -> coder -> container, and the inverse.

A file's tokens are cut into segments of at most `segment_tokens`. Segments that look like
text go to the model; the others, and any the model codes worse than LZMA would, become
classical blocks (LZMA2 or stored, whichever is smaller), so no input grows by more than the
header. Model segments are coded side by side in groups of `group_size`, one range-coder
stream per group, so the decoder advances a whole group per model step (with exact
arithmetic, as many groups at once as its memory budget allows).

With exact arithmetic the encoder runs one full-sequence forward per segment, because the
decoder's KV-cached steps give bit-identical frequencies. With float arithmetic the encoder
runs the decoder's own KV-cached steps, in the same groups, so both see the same numbers.
"""

from __future__ import annotations

import functools
import hashlib
import lzma
import os
import re
import time
from dataclasses import dataclass, field

import numpy as np

from .coder import StreamDecoder, TwoLevel, default_bucket_size, encode_steps
from .container import Arithmetic, Block, Header, Method, ModelInfo, pack, unpack
from .errors import CorruptArchiveError, LlmzipError, ModelMismatchError

__all__ = ["Codec", "CompressStats", "SegmentCost", "content_checksum", "top_alternatives"]

_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
_NOT_TEXT = re.compile("[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f\udc80-\udcff]")
_MODEL_HEADER_BYTES = 40  # what naming a model costs in the header, about


def content_checksum(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=8).digest()


def looks_like_text(raw: bytes) -> bool:
    """At most 5% invalid UTF-8 or control bytes: worth a model's time."""
    text = raw.decode("utf-8", "surrogateescape")
    return bool(text) and len(_NOT_TEXT.findall(text)) <= 0.05 * len(text)


def lzma_compress(raw: bytes) -> bytes:
    return lzma.compress(raw, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)


def lzma_decompress(payload: bytes, size: int) -> bytes:
    try:
        out = lzma.decompress(payload, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    except lzma.LZMAError:
        raise CorruptArchiveError("LZMA block does not decode (archive damaged)") from None
    if len(out) != size:
        raise CorruptArchiveError("LZMA block has the wrong size (archive damaged)")
    return out


@dataclass
class SegmentCost:
    """What each token of one model-coded segment cost (for `explain` and reports)."""

    start: int  # byte offset of the segment in the file
    ids: list[int]
    bits: np.ndarray  # (T,) -log2 p of each token under the coded frequencies
    top_ids: np.ndarray | None = None  # (T, k) the model's most likely tokens, best first
    top_p: np.ndarray | None = None  # (T, k) their probabilities


@dataclass
class CompressStats:
    """What compression measured: sizes, the model's cross-entropy, and the time taken."""

    original_bytes: int = 0
    archive_bytes: int = 0
    n_tokens: int = 0  # tokens coded by the model
    model_bytes: int = 0  # original bytes coded by the model
    xent_bits: float = 0.0  # -sum log2 p(token) under the frequencies handed to the coder
    code_bits: int = 0  # bits of the range-coder streams
    elapsed_s: float = 0.0
    load_s: float = 0.0  # of elapsed_s, loading (on first use: converting) the model
    model: str = ""
    arithmetic: str = ""
    blocks: dict = field(default_factory=dict)  # method name -> original bytes
    segments: list[SegmentCost] = field(default_factory=list)  # model-coded, in file order

    @property
    def bpb(self) -> float:
        return 8 * self.archive_bytes / self.original_bytes if self.original_bytes else 0.0

    @property
    def xent_bpb(self) -> float:
        """Cross-entropy per original byte of the model-coded part."""
        return self.xent_bits / self.model_bytes if self.model_bytes else float("nan")

    @property
    def overhead_pct(self) -> float:
        """Range-coder stream bits against the cross-entropy they code."""
        return 100 * (self.code_bits / self.xent_bits - 1) if self.xent_bits else float("nan")

    @property
    def tok_per_s(self) -> float:
        """Tokens per second of coding, model loading excluded."""
        coding_s = self.elapsed_s - self.load_s
        return self.n_tokens / coding_s if coding_s > 0 else 0.0


@dataclass
class _Segment:
    start: int  # byte offset in the file
    raw: bytes
    ids: list[int]
    use_model: bool = False
    rows: tuple | None = None  # encoder rows from TwoLevel.split
    top: tuple | None = None  # (ids, probabilities) of the most likely tokens, if asked


def top_alternatives(freqs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, k) ids of each row's k most likely tokens, best first, and their probabilities."""
    k = min(k, freqs.shape[1])
    ids = np.argpartition(-freqs, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(freqs, ids, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    ids, top = np.take_along_axis(ids, order, 1), np.take_along_axis(top, order, 1)
    return ids, top / freqs.sum(axis=1, keepdims=True)


def _groups(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


class _Progress:
    """Counts tokens and bits for an optional callback(done_tokens, total_tokens, bits)."""

    def __init__(self, callback, total: int):
        self.callback, self.total, self.done, self.bits = callback, total, 0, 0.0
        self.tick(0)

    def tick(self, n_tokens: int, bits: float = 0.0):
        self.done += n_tokens
        self.bits += bits
        if self.callback:
            self.callback(self.done, self.total, self.bits)


class Codec:
    """Compresses and decompresses with the given model and settings.

    Models load on first need (an archive with no model-coded block, such as binary input,
    never loads one) and the last two models and engines stay loaded in the process, so
    `llmzip.compress`/`decompress`, which build a Codec per call, pay the load once.
    """

    def __init__(self, model: str | None = None, *, arithmetic: str | None = None,
                 threads: int | None = None, segment_tokens: int = 4096, group_size: int = 8,
                 encoder: str = "full", decode_batch: int | None = None,
                 decode_memory_mb: int | None = None):
        from .models import DEFAULT_MODEL
        self.model_name = model
        self.default_model = model or DEFAULT_MODEL
        self.arithmetic = arithmetic  # None: exact where supported
        self.threads = threads
        self.segment_tokens = segment_tokens
        self.group_size = group_size
        self.encoder = encoder  # "full" (exact only) or "stepped": the decoder's KV steps
        self.decode_batch = decode_batch  # exact only: rows per forward while decoding
        # exact only: KV cache budget for groups decoded together (default: 1/4 of RAM)
        self.decode_memory = (decode_memory_mb << 20) if decode_memory_mb is not None \
            else _physical_memory() // 4
        self._loaded: dict = {}
        self.load_s = 0.0  # time spent loading models and building engines

    # --- models and engines ----------------------------------------------------------------

    def _set_threads(self, n: int | None):
        import torch
        if n:
            torch.set_num_threads(n)

    def loaded_model(self, name: str):
        if name not in self._loaded:
            started = time.perf_counter()
            self._loaded[name] = _shared_model(name)
            self.load_s += time.perf_counter() - started
        return self._loaded[name]

    def engine(self, name: str, arithmetic: Arithmetic | None):
        from .exact import supports
        loaded = self.loaded_model(name)
        if arithmetic is None:
            arithmetic = Arithmetic.EXACT if supports(loaded) else Arithmetic.FLOAT
        if arithmetic == Arithmetic.EXACT and not supports(loaded):
            raise LlmzipError(f"exact arithmetic does not cover the {loaded.architecture} "
                              f"architecture of '{name}'; use --arithmetic float")
        started = time.perf_counter()
        engine = _shared_engine(name, arithmetic)
        self.load_s += time.perf_counter() - started  # near 0 once the engine is built
        return engine

    def load(self) -> "Codec":
        """Load the model and build its engine now (otherwise done on first need), so that
        timings that follow measure coding alone."""
        self.engine(self.default_model, self._requested_arithmetic())
        return self

    def _requested_arithmetic(self) -> Arithmetic | None:
        if self.arithmetic in (None, "auto"):
            return None
        try:
            return Arithmetic[self.arithmetic.upper()]
        except KeyError:
            raise LlmzipError(f"unknown arithmetic '{self.arithmetic}' (exact or float)") from None

    # --- compression -----------------------------------------------------------------------

    def compress(self, data: bytes, progress=None) -> bytes:
        return self.compress_with_stats(data, progress)[0]

    def compress_with_stats(self, data: bytes, progress=None, top_k: int = 0
                            ) -> tuple[bytes, CompressStats]:
        """Archive bytes and what was measured. progress(done_tokens, total_tokens, bits);
        top_k > 0 also records each position's top_k most likely tokens (for `explain`)."""
        started, loading_before = time.perf_counter(), self.load_s
        data = bytes(data)
        stats = CompressStats(original_bytes=len(data))
        segments = self._segments(data)
        model_info = None
        if any(s.use_model for s in segments):
            model_info, streams = self._code_model_segments(segments, stats, progress, top_k)
        if not any(s.use_model for s in segments):
            model_info, streams = None, []
        blocks, payloads = self._blocks(segments)
        header = Header(len(data), content_checksum(data), blocks, model_info)
        archive = pack(header, payloads, streams)
        stats.archive_bytes = len(archive)
        stats.code_bits = 8 * sum(len(s) for s in streams)
        stats.elapsed_s = time.perf_counter() - started
        stats.load_s = self.load_s - loading_before
        for b in blocks:
            stats.blocks[b.method.name.lower()] = stats.blocks.get(b.method.name.lower(), 0) \
                + b.raw_size
        return archive, stats

    def _segments(self, data: bytes) -> list[_Segment]:
        """Cut the file into token segments; mark those worth a model run."""
        if not data:
            return []
        window = 1024
        if not any(looks_like_text(data[i:i + window]) for i in range(0, len(data), window)):
            return [_Segment(0, data, [])]  # no text anywhere: no model, no tokenizer
        tokenizer = self.loaded_model(self.default_model).tokenizer
        ids = tokenizer.encode(data)
        segments, start, i = [], 0, 0
        while i < len(ids):
            cut = min(i + self.segment_tokens, len(ids))
            if ids[cut - 1] == tokenizer.escape_id and cut < len(ids):
                cut += 1  # never split an escaped byte from its escape
            seg_ids = ids[i:cut]
            raw = tokenizer.decode(seg_ids)
            segments.append(_Segment(start, raw, seg_ids, use_model=looks_like_text(raw)))
            start += len(raw)
            i = cut
        if b"".join(s.raw for s in segments) != data:
            raise LlmzipError("internal error: tokens do not reproduce the input")
        return segments

    def _code_model_segments(self, segments, stats: CompressStats, progress, top_k: int):
        self._set_threads(self.threads)
        engine = self.engine(self.default_model, self._requested_arithmetic())
        exact = engine.arithmetic == Arithmetic.EXACT
        two_level = TwoLevel(engine.vocab_size, default_bucket_size(engine.vocab_size))
        candidates = [s for s in segments if s.use_model]
        tracker = _Progress(progress, sum(len(s.ids) for s in candidates))
        if exact and self.encoder == "full":
            for seg in candidates:
                seg.rows, seg.top = self._full_rows(engine, two_level, seg, tracker, top_k)
        else:
            for group in _groups(candidates, self.group_size):
                self._stepped_rows(engine, two_level, group, tracker, top_k)
        if exact:  # tables do not depend on grouping, so segments can still change method
            self._demote_losing_segments(candidates)
        coded = [s for s in segments if s.use_model]
        if not coded:
            return None, []
        streams = [self._encode_group(group) for group in _groups(coded, self.group_size)]
        for seg in coded:
            stats.n_tokens += len(seg.ids)
            stats.model_bytes += len(seg.raw)
            stats.xent_bits += float(seg.rows[4].sum())
            stats.segments.append(SegmentCost(seg.start, seg.ids, seg.rows[4],
                                              *(seg.top or (None, None))))
        stats.model, stats.arithmetic = self.default_model, engine.arithmetic.name.lower()
        info = ModelInfo(
            name=self.default_model, fingerprint=engine.fingerprint(),
            arithmetic=engine.arithmetic, segment_tokens=self.segment_tokens,
            group_size=self.group_size, bucket_size=two_level.bucket_size,
            threads=0 if exact else _torch_threads(),
            runtime="" if exact else engine.runtime())
        return info, streams

    def _full_rows(self, engine, two_level, seg, tracker, top_k):
        """One full forward over a segment: its encoder rows, and its top tokens if asked."""
        parts, tops, pos = [], [], 0
        for freqs in engine.full_tables(seg.ids):
            n = len(freqs)
            rows = two_level.split(freqs, np.asarray(seg.ids[pos:pos + n]))
            parts.append(rows)
            if top_k:
                tops.append(top_alternatives(freqs, top_k))
            pos += n
            tracker.tick(n, float(rows[4].sum()))
        return _concat(parts), _concat(tops) if top_k else None

    def _stepped_rows(self, engine, two_level, group, tracker, top_k):
        """Run the decoder's KV-cached steps over a group and keep each segment's rows."""
        longest = max(len(s.ids) for s in group)
        stepper = engine.stepper(len(group), longest)
        per_seg = [[] for _ in group]
        per_seg_top = [[] for _ in group]
        inputs = np.full(len(group), engine.context_start_id, np.int64)
        for t in range(longest):
            freqs = stepper.step(inputs)
            active = [i for i, s in enumerate(group) if len(s.ids) > t]
            tokens = np.array([group[i].ids[t] for i in active])
            rows = two_level.split(freqs[active], tokens)
            top = top_alternatives(freqs[active], top_k) if top_k else None
            for j, i in enumerate(active):
                per_seg[i].append(tuple(r[j:j + 1] for r in rows))
                if top_k:
                    per_seg_top[i].append(tuple(r[j:j + 1] for r in top))
            tracker.tick(len(active), float(rows[4].sum()))
            inputs = np.array([s.ids[t] if len(s.ids) > t else engine.context_start_id
                               for s in group], np.int64)
        for seg, rows, tops in zip(group, per_seg, per_seg_top):
            seg.rows, seg.top = _concat(rows), _concat(tops) if top_k else None

    @staticmethod
    def _demote_losing_segments(candidates):
        """Send to LZMA the segments the model codes worse than LZMA would code them in
        context (LZMA's ratio over all candidate text, shared out by length); drop the model
        altogether when it saves less than naming it costs in the header."""
        text = b"".join(seg.raw for seg in candidates)
        lzma_ratio = min(len(lzma_compress(text)), len(text)) / len(text)
        saving = 0.0
        for seg in candidates:
            classical_bytes = len(seg.raw) * lzma_ratio
            model_bytes = seg.rows[4].sum() / 8
            if model_bytes >= classical_bytes:
                seg.use_model = False
            else:
                saving += classical_bytes - model_bytes
        if saving < _MODEL_HEADER_BYTES:
            for seg in candidates:
                seg.use_model = False

    @staticmethod
    def _encode_group(group) -> bytes:
        def steps():
            for t in range(max(len(s.ids) for s in group)):
                active = [s for s in group if len(s.ids) > t]
                yield (np.stack([s.rows[0][t] for s in active]),
                       np.stack([s.rows[1][t] for s in active]),
                       np.array([s.rows[2][t] for s in active], np.int32),
                       np.array([s.rows[3][t] for s in active], np.int32))
        return encode_steps(steps())

    @staticmethod
    def _blocks(segments) -> tuple[list[Block], list[bytes]]:
        """MODEL blocks for model segments; each run of other segments becomes one block."""
        blocks, payloads, run = [], [], []

        def flush():
            if run:
                raw = b"".join(run)
                packed = lzma_compress(raw)
                if len(packed) < len(raw):
                    blocks.append(Block(Method.LZMA, len(raw), payload_size=len(packed)))
                    payloads.append(packed)
                else:
                    blocks.append(Block(Method.STORED, len(raw), payload_size=len(raw)))
                    payloads.append(raw)
                run.clear()

        for seg in segments:
            if seg.use_model:
                flush()
                blocks.append(Block(Method.MODEL, len(seg.raw), n_tokens=len(seg.ids)))
            else:
                run.append(seg.raw)
        flush()
        return blocks, payloads

    # --- decompression ---------------------------------------------------------------------

    def decompress(self, blob: bytes, progress=None) -> bytes:
        """The original bytes, after checking size and content checksum."""
        header, payloads, streams = unpack(bytes(blob))
        model_parts = self._decode_model_blocks(header, streams, progress) \
            if header.model_blocks() else []
        out, payload_iter, model_iter = [], iter(payloads), iter(model_parts)
        for block in header.blocks:
            if block.method == Method.MODEL:
                out.append(next(model_iter))
            elif block.method == Method.LZMA:
                out.append(lzma_decompress(next(payload_iter), block.raw_size))
            else:
                out.append(next(payload_iter))
        data = b"".join(out)
        if len(data) != header.original_size or content_checksum(data) != header.checksum:
            raise CorruptArchiveError(_checksum_failure(header))
        return data

    def _decode_model_blocks(self, header: Header, streams, progress) -> list[bytes]:
        info = header.model
        name = self.model_name or info.name
        self._set_threads(info.threads if info.arithmetic == Arithmetic.FLOAT else self.threads)
        engine = self.engine(name, info.arithmetic)
        if engine.fingerprint() != info.fingerprint:
            raise ModelMismatchError(
                f"archive was made with model '{info.name}' ({info.fingerprint.hex()[:12]}, "
                f"{info.arithmetic.name.lower()} arithmetic) but '{name}' is "
                f"{engine.fingerprint().hex()[:12]}; decompress with --model {info.name}")
        two_level = TwoLevel(engine.vocab_size, info.bucket_size)
        blocks = header.model_blocks()
        tracker = _Progress(progress, sum(b.n_tokens for b in blocks))
        tokenizer = self.loaded_model(name).tokenizer
        groups = list(zip(_groups(blocks, info.group_size), streams))
        exact = engine.arithmetic == Arithmetic.EXACT
        out = []
        for wave in (self._waves(groups, engine) if exact else [[g] for g in groups]):
            decode = self._decode_wave if exact else self._decode_float_group
            for block, seg_ids in zip([b for group, _ in wave for b in group],
                                      decode(engine, two_level, wave, tracker)):
                raw = tokenizer.decode(seg_ids)
                if len(raw) != block.raw_size:
                    raise CorruptArchiveError(_checksum_failure(header))
                out.append(raw)
        return out

    def _waves(self, groups, engine) -> list[list]:
        """Consecutive groups decoded together, as many as the decoder's memory budget
        allows: exact arithmetic gives the same numbers in any batch, and one step for
        many rows costs far less than one step each."""
        waves, rows, longest = [], 0, 0
        for group, stream in groups:
            g_longest = max(b.n_tokens for b in group)
            cost = engine.cache_bytes(rows + len(group), max(longest, g_longest))
            if waves and cost > self.decode_memory:
                waves.append([])
                rows, longest = 0, 0
            if not waves:
                waves.append([])
            waves[-1].append((group, stream))
            rows, longest = rows + len(group), max(longest, g_longest)
        return waves

    def _decode_wave(self, engine, two_level, wave, tracker) -> list[list[int]]:
        """Token ids of every block of the wave's groups (in group, then block order).

        The model's rows are the blocks sorted longest first, so the rows still active at a
        step are a prefix and finished ones cost nothing; each group's stream decodes its own
        active blocks in block order, as the encoder wrote them."""
        blocks = [(g, b) for g, (group, _) in enumerate(wave) for b in group]
        order = sorted(range(len(blocks)), key=lambda i: -blocks[i][1].n_tokens)
        row_of = {i: r for r, i in enumerate(order)}
        lengths = [blocks[i][1].n_tokens for i in order]
        group_rows = [[row_of[i] for i, (g, _) in enumerate(blocks) if g == gi]
                      for gi in range(len(wave))]
        decoders = [StreamDecoder(stream, two_level) for _, stream in wave]
        stepper = engine.stepper(len(blocks), lengths[0], max_batch=self.decode_batch)
        ids = [[] for _ in blocks]  # by row
        inputs = np.full(len(blocks), engine.context_start_id, np.int64)
        for t in range(lengths[0]):
            freqs = stepper.step(inputs)  # (active rows, V)
            n_active = len(inputs)
            for decoder, rows in zip(decoders, group_rows):
                active = [r for r in rows if r < n_active]
                if active:
                    for r, tok in zip(active, decoder.decode(freqs[active]).tolist()):
                        ids[r].append(tok)
            tracker.tick(n_active)
            n_next = sum(length > t + 1 for length in lengths)
            inputs = np.array([ids[r][t] for r in range(n_next)], np.int64)
        return [ids[row_of[i]] for i in range(len(blocks))]

    def _decode_float_group(self, engine, two_level, wave, tracker) -> list[list[int]]:
        """Float arithmetic: the encoder's own batch layout, all rows every step."""
        [(group, stream)] = wave
        decoder = StreamDecoder(stream, two_level)
        longest = max(b.n_tokens for b in group)
        stepper = engine.stepper(len(group), longest)
        ids = [[] for _ in group]
        inputs = np.full(len(group), engine.context_start_id, np.int64)
        for t in range(longest):
            freqs = stepper.step(inputs)
            active = [i for i, b in enumerate(group) if b.n_tokens > t]
            tokens = decoder.decode(freqs[active])
            for i, tok in zip(active, tokens.tolist()):
                ids[i].append(tok)
            tracker.tick(len(active))
            inputs = np.array([ids[i][t] if group[i].n_tokens > t else engine.context_start_id
                               for i in range(len(group))], np.int64)
        return ids


def _concat(parts: list[tuple]) -> tuple:
    """Row-wise concatenation of equal-length tuples of arrays."""
    return tuple(np.concatenate(column) for column in zip(*parts))


@functools.lru_cache(maxsize=2)
def _shared_model(name: str):
    """Loaded models, shared by the Codecs of a process (a load takes seconds)."""
    from .models import load_model
    return load_model(name)


@functools.lru_cache(maxsize=2)
def _shared_engine(name: str, arithmetic: Arithmetic):
    """Engines, shared likewise (an exact engine converts every weight once)."""
    from .engine import FloatEngine
    from .exact import ExactEngine
    loaded = _shared_model(name)
    return ExactEngine(loaded) if arithmetic == Arithmetic.EXACT else FloatEngine(loaded)


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _torch_threads() -> int:
    import torch
    return torch.get_num_threads()


def _checksum_failure(header: Header) -> str:
    info = header.model
    if info is not None and info.arithmetic == Arithmetic.FLOAT:
        return ("checksum mismatch after decoding: this archive used float arithmetic, which "
                f"decodes only with {info.runtime} and {info.threads} threads (or it is damaged)")
    return "checksum mismatch after decoding (archive is damaged)"
