"""File <-> archive: segments -> tokens -> engine -> coder -> container, and the inverse.

Compression is a handful of stages (`Codec.compress_with_stats`): cut the file into
segments (`segments`), get the model's coder rows for the candidates (a full forward per
segment with exact arithmetic, else the decoder's own steps), choose each segment's method,
code the model segments in groups of `group_size` (one range-coder stream per group), pack
the archive. Decompression decodes a wave of groups at a time in lockstep (`lockstep`), as
many as the decoder's memory budget allows, then checks every size and the checksum.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field

import numpy as np

from . import lockstep
from . import segments as seg
from .coder import CoderRows, StreamDecoder, TwoLevel, default_bucket_size, encode_group
from .container import (Arithmetic, Header, Method, ModelInfo, check_bucket_size,
                        decompress_members, pack, unpack)
from .errors import CorruptArchiveError, LlmzipError, ModelMismatchError
from .settings import Machine, Settings

__all__ = ["Codec", "CompressStats", "SegmentCost", "content_checksum"]


def content_checksum(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=8).digest()


@dataclass
class SegmentCost:
    """What each token of one model-coded segment cost (for `explain` and reports)."""

    start: int  # byte offset of the segment in the file
    ids: tuple[int, ...]
    bits: np.ndarray  # (T,) -log2 p of each token under the coded frequencies


@dataclass
class CompressStats:
    """What compression measured: sizes, the model's cross-entropy, and the time taken."""

    original_bytes: int
    archive_bytes: int
    code_bits: int  # bits of the range-coder streams
    segments: list[SegmentCost] = field(default_factory=list)  # model-coded, in file order
    blocks: dict = field(default_factory=dict)  # method name -> original bytes
    model: str = ""
    arithmetic: str = ""
    elapsed_s: float = 0.0
    load_s: float = 0.0  # of elapsed_s, loading (on first use: converting) the model

    @property
    def n_tokens(self) -> int:
        return sum(len(s.ids) for s in self.segments)

    @property
    def model_bytes(self) -> int:
        return self.blocks.get("model", 0)

    @property
    def xent_bits(self) -> float:
        """-sum log2 p(token) under the frequencies handed to the coder."""
        return float(sum(s.bits.sum() for s in self.segments))

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
        xent = self.xent_bits
        return 100 * (self.code_bits / xent - 1) if xent else float("nan")

    @property
    def tok_per_s(self) -> float:
        """Tokens per second of coding, model loading excluded."""
        coding_s = self.elapsed_s - self.load_s
        return self.n_tokens / coding_s if coding_s > 0 else 0.0


def _groups(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


class Codec:
    """Compresses and decompresses with one model and settings.

    The model loads on first need (a file with no text, or an archive with no model-coded
    block, never loads one) and stays loaded in the process (`engine.open_engine`), so the
    one-shot `llmzip.compress`/`decompress` pay the load once."""

    def __init__(self, model: str | None = None, **options):
        """options: `Settings` fields (what the archive records) and `Machine` fields (how
        this machine runs; never changes an archive)."""
        self.settings, self.machine = Settings.split(model, options)
        self.load_s = 0.0

    def _engine(self, name: str, arithmetic: Arithmetic | None, from_archive: bool = False):
        from .engine import open_engine
        started = time.perf_counter()
        try:
            return open_engine(name, arithmetic, from_archive)
        finally:
            self.load_s += time.perf_counter() - started

    def load(self) -> "Codec":
        """Load the model and engine now, so that timings that follow measure coding alone."""
        self._engine(self.settings.model_name, self.settings.arithmetic_enum())
        return self

    def tokenizer(self):
        return self._engine(self.settings.model_name, self.settings.arithmetic_enum())[1].tokenizer

    # --- compression -----------------------------------------------------------------------

    def compress(self, data: bytes, progress=None) -> bytes:
        return self.compress_with_stats(data, progress)[0]

    def compress_with_stats(self, data: bytes, progress=None, observe=None
                            ) -> tuple[bytes, CompressStats]:
        """Archive bytes and what was measured. progress(done_tokens, total_tokens, bits);
        observe(segment_start, freqs) sees every frequency table coded (for `explain`)."""
        started, loading_before = time.perf_counter(), self.load_s
        data = bytes(data)
        segments, rows, engine = self._model_rows(data, progress, observe)
        coded = seg.model_coded(segments, {i: float(r.xent_bits.sum()) for i, r in rows.items()})
        blocks, payloads = seg.classical_blocks(segments, coded)
        streams = [encode_group([rows[i] for i in group])
                   for group in _groups(sorted(coded), self.settings.group_size)]
        info = self._model_info(engine) if coded else None
        archive = pack(Header(len(data), content_checksum(data), blocks, info), payloads, streams)
        stats = CompressStats(
            len(data), len(archive), 8 * sum(map(len, streams)),
            [SegmentCost(segments[i].start, segments[i].ids, rows[i].xent_bits)
             for i in sorted(coded)], _block_bytes(blocks),
            info.name if info else "", info.arithmetic.label if info else "",
            time.perf_counter() - started, self.load_s - loading_before)
        return archive, stats

    def _model_rows(self, data: bytes, progress, observe):
        """The file's segments, the coder rows of every candidate, and the engine."""
        s = self.settings
        if not data or not seg.has_text(data):
            return [seg.Segment(0, data, (), False)] if data else [], {}, None
        engine, model = self._engine(s.model_name, s.arithmetic_enum())
        segments = seg.cut(data, model.tokenizer, s.segment_tokens)
        candidates = [i for i, x in enumerate(segments) if x.candidate]
        if not candidates:
            return segments, {}, engine
        self.machine.apply_threads()
        two_level = TwoLevel(engine.vocab_size, default_bucket_size(engine.vocab_size))
        tracker = lockstep.Progress(progress, sum(len(segments[i].ids) for i in candidates))
        encode = _encode_full if engine.full_forward and s.encoder == "full" else _encode_stepped
        rows = encode(engine, two_level, [segments[i] for i in candidates], s.group_size,
                      tracker, observe)
        return segments, dict(zip(candidates, rows)), engine

    def _model_info(self, engine) -> ModelInfo:
        s, exact = self.settings, engine.arithmetic != Arithmetic.FLOAT
        return ModelInfo(s.model_name, engine.fingerprint(), engine.arithmetic, s.segment_tokens,
                         s.group_size, default_bucket_size(engine.vocab_size),
                         threads=0 if exact else self.machine.torch_threads(),
                         runtime="" if exact else engine.runtime())

    # --- decompression ---------------------------------------------------------------------

    def decompress(self, blob: bytes, progress=None) -> bytes:
        """The original bytes, after checking every size and the content checksum; a file
        of archives back to back (`compress -c a b`) gives their outputs in order."""
        return decompress_members(bytes(blob), lambda member: self._decompress_one(member, progress))

    def _decompress_one(self, blob: bytes, progress) -> bytes:
        header, payloads, streams = unpack(blob)
        model_parts = iter(self._decode_model_blocks(header, streams, progress)
                           if header.model_blocks() else [])
        payload_parts = iter(payloads)
        out = []
        for block in header.blocks:
            if block.method == Method.MODEL:
                out.append(next(model_parts))
            elif block.method == Method.LZMA:
                out.append(seg.lzma_decompress(next(payload_parts), block.raw_size))
            else:
                out.append(next(payload_parts))
        data = b"".join(out)
        if len(data) != header.original_size or content_checksum(data) != header.checksum:
            raise CorruptArchiveError(_checksum_failure(header))
        return data

    def _decode_model_blocks(self, header: Header, streams, progress) -> list[bytes]:
        info = header.model
        name = self.settings.model or info.name
        if info.arithmetic == Arithmetic.FLOAT:
            self.machine.apply_threads(info.threads)
        engine, model = self._engine(name, info.arithmetic, from_archive=self.settings.model is None)
        if engine.fingerprint() != info.fingerprint:
            raise ModelMismatchError(
                f"archive was made with model '{info.name}' ({info.fingerprint.hex()[:12]}, "
                f"{info.arithmetic.label} arithmetic) but '{name}' is "
                f"{engine.fingerprint().hex()[:12]}; decompress with --model {info.name}")
        check_bucket_size(info.bucket_size, engine.vocab_size)
        blocks = header.model_blocks()
        groups = list(zip(_groups(blocks, info.group_size), streams))
        tracker = lockstep.Progress(progress, sum(b.n_tokens for b in blocks))
        two_level = TwoLevel(engine.vocab_size, info.bucket_size)
        tuner = self.machine.tuner() if engine.arithmetic == Arithmetic.EXACT_V3 else None
        out = []
        for wave in self.machine.waves(groups, engine):
            ids = _decode_wave(engine, two_level, wave, model.tokenizer, tracker, tuner)
            for block, block_ids in zip([b for group, _ in wave for b in group], ids):
                raw = model.tokenizer.decode(block_ids)
                if len(raw) != block.raw_size:
                    raise CorruptArchiveError(_checksum_failure(header))
                out.append(raw)
        return out


def _encode_full(engine, two_level, segments, group_size, tracker, observe) -> list[CoderRows]:
    """Exact arithmetic: one full-sequence forward per segment, in chunks of positions."""
    out = []
    for segment in segments:
        parts, pos = [], 0
        for freqs in engine.full_tables(list(segment.ids)):
            parts.append(two_level.split(freqs, np.asarray(segment.ids[pos:pos + len(freqs)])))
            if observe:
                observe(segment.start, freqs)
            pos += len(freqs)
            tracker.tick(len(freqs), float(parts[-1].xent_bits.sum()))
        out.append(CoderRows.concat(parts))
    return out


def _encode_stepped(engine, two_level, segments, group_size, tracker, observe) -> list[CoderRows]:
    """The decoder's own KV-cached steps, group by group (the float engine's only way)."""
    out = []
    for group in _groups(segments, group_size):
        parts = [[] for _ in group]

        def known(t, freqs, active, group=group, parts=parts):
            tokens = np.array([group[i].ids[t] for i in active])
            rows = two_level.split(freqs, tokens)
            for j, i in enumerate(active):
                parts[i].append(rows.take(j))
                if observe:
                    observe(group[i].start, freqs[j:j + 1])
            tracker.tick(0, float(rows.xent_bits.sum()))
            return tokens

        lockstep.run(engine, [len(x.ids) for x in group], known, tracker)
        out += [CoderRows.concat(p) for p in parts]
    return out


def _decode_wave(engine, two_level, wave, tokenizer, tracker, tuner) -> list[list[int]]:
    """Token ids of every block of a wave of groups (in group, then block order): each
    group's stream decodes its active blocks, in block order, at every step. A block whose
    tokens spell more bytes than it declares stops the decoding at once."""
    blocks = [b for group, _ in wave for b in group]
    group_of = [g for g, (group, _) in enumerate(wave) for _ in group]
    decoders = [StreamDecoder(stream, two_level) for _, stream in wave]
    ids: list[list[int]] = [[] for _ in blocks]
    token_bytes = tokenizer.byte_lengths()
    spelled = np.zeros(len(blocks), np.int64)
    declared = np.array([b.raw_size for b in blocks])

    def decoded(t, freqs, active):
        tokens = np.empty(len(active), np.int64)
        for g, decoder in enumerate(decoders):
            mine = sorted((j for j, i in enumerate(active) if group_of[i] == g),
                          key=lambda j: active[j])  # the encoder's order: block order
            if mine:
                tokens[mine] = decoder.decode(freqs[mine])
        spelled[active] += token_bytes[tokens]
        if (spelled[active] > declared[active]).any():
            raise CorruptArchiveError("a block decodes to more bytes than it declares "
                                      "(archive damaged, or another model)")
        for i, token in zip(active, tokens.tolist()):
            ids[i].append(token)
        return tokens

    lockstep.run(engine, [b.n_tokens for b in blocks], decoded, tracker, tuner)
    return ids


def _block_bytes(blocks) -> dict:
    totals: dict[str, int] = {}
    for b in blocks:
        totals[b.method.name.lower()] = totals.get(b.method.name.lower(), 0) + b.raw_size
    return totals


def _checksum_failure(header: Header) -> str:
    info = header.model
    if info is not None and info.arithmetic == Arithmetic.FLOAT:
        return ("checksum mismatch after decoding: this archive used float arithmetic, which "
                f"decodes only with {info.runtime} and {info.threads} threads (or it is damaged)")
    return "checksum mismatch after decoding (archive is damaged)"
