"""File <-> archive: segments -> tokens -> engine -> coder -> container, and the inverse.

Compression is a handful of stages (`Codec.compress_with_stats`): take the text runs of
mixed input out as a text stream, the rest to one LZMA block (`mixed`), take long
repeats out of the text as copies (`repeats`), cut the rest into segments (`segments`),
get the model's coder rows for the candidates (a full forward per segment with exact
arithmetic, else the decoder's own steps), choose each segment's method, code the model
segments in groups of `group_size` (one range-coder stream per group), pack
the archive. Decompression decodes a wave of groups at a time in lockstep (`lockstep`), as
many as the decoder's memory budget allows, puts the copies back, joins the text stream
with the binary stream, then checks every size and the checksum.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llmzip.codec import groups, mixed, repeats
from llmzip.codec import segments as seg
from llmzip.codec.rangecoder import default_bucket_size
from llmzip.codec.settings import Settings, physical_memory, release_freed_memory
from llmzip.container import (
    Arithmetic,
    Block,
    Compact,
    Header,
    Layout,
    LayoutKind,
    Method,
    ModelInfo,
    check_bucket_size,
    is_compact,
    pack,
    pack_compact,
    split_members,
    unpack,
    unpack_compact,
)
from llmzip.errors import CorruptArchiveError, ModelMismatchError
from llmzip.models.presets import PRESETS, preset_by_number

__all__ = ["Codec", "CompressStats", "SegmentCost", "content_checksum"]

PREFETCH_MESSAGES = 64  # compress_many: messages whose forward runs as one stack


def content_checksum(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=8).digest()


@dataclass
class SegmentCost:
    """What each token of one model-coded segment cost (for `explain` and reports)."""

    start: int  # byte offset of the segment in the literal bytes (the file less its copies)
    ids: tuple[int, ...]
    bits: np.ndarray  # (T,) -log2 p of each token under the coded frequencies


@dataclass
class CompressStats:
    """What compression measured: sizes, the model's cross-entropy, and the time taken."""

    original_bytes: int
    archive_bytes: int
    code_bits: int  # bits of the range-coder streams
    segments: list[SegmentCost] = field(default_factory=list)  # model-coded, in file order
    blocks: dict = field(default_factory=dict)  # method name (or "copy") -> original bytes
    copies: list = field(default_factory=list)  # container.Copy, in file order
    model: str = ""
    arithmetic: str = ""
    elapsed_s: float = 0.0
    load_s: float = 0.0  # of elapsed_s, loading (on first use: converting) the model
    payload_bytes: int = 0  # the other blocks' payloads: LZMA-coded or stored bytes

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
    def framing_bytes(self) -> int:
        """The archive's bytes that code no content: header, checksums and block table."""
        return self.archive_bytes - self.code_bits // 8 - self.payload_bytes

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


def engine_label(engine) -> str:
    """Which arithmetic, backend and device an engine runs: 'exact-v3 on numba (cpu;
    decoder kernels avx2, dots)'."""
    backend = getattr(engine, "backend", None)
    where = f" on {backend.label}" if backend is not None else ""
    return f"{engine.arithmetic.label}{where}"


class Codec:
    """Compresses and decompresses with one model and settings.

    The model loads on first need (a file with no text, or an archive with no model-coded
    block, never loads one) and stays loaded in the process (`engine.open_engine`), so the
    one-shot `llmzip.compress`/`decompress` pay the load once."""

    def __init__(self, model: str | None = None, team=None, log=None, **options):
        """options: `Settings` fields (what the archive records) and `Machine` fields (how
        this machine runs; never changes an archive). team: the processes sharing the work
        (default: those `accelerate launch` started, else this one alone). log: told, in a
        line, when a model loads and which engine and device run it."""
        from llmzip.parallel.distributed import join
        self.settings, self.machine = Settings.split(model, options)
        self.team = team or join()
        self.load_s = 0.0
        self.log, self._logged = log, set()

    def _engine(self, name: str, arithmetic: Arithmetic | None, from_archive: bool = False):
        from llmzip.engine.factory import open_engine
        key = (name, arithmetic, from_archive)
        if self.log and key not in self._logged:
            self.log(f"loading model {name}")
        started = time.perf_counter()
        try:
            engine, model = open_engine(name, arithmetic, from_archive, self.machine.device)
        finally:
            self.load_s += time.perf_counter() - started
        if self.log and key not in self._logged:
            self._logged.add(key)
            self.log(f"model {name} ready in {time.perf_counter() - started:.1f} s: "
                     f"{engine_label(engine)}")
        return engine, model

    def load(self, archive: bytes | None = None) -> "Codec":
        """Load the model and engine now (those an archive needs, if given), so that the
        timings that follow measure coding alone."""
        info = unpack(archive)[0].model if archive is not None else None
        if info is None and archive is None:
            self._engine(self.settings.model_name, self.settings.arithmetic_enum())
        elif info is not None:
            self._engine(self.settings.model or info.name, info.arithmetic,
                         from_archive=self.settings.model is None)
        return self

    def tokenizer(self):
        return self._engine(self.settings.model_name, self.settings.arithmetic_enum())[1].tokenizer

    # --- compression -----------------------------------------------------------------------

    def compress(self, data: bytes, progress=None) -> bytes:
        return self.compress_with_stats(data, progress)[0]

    def compress_with_stats(self, data: bytes, progress=None, observe=None
                            ) -> tuple[bytes | None, CompressStats | None]:
        """Archive bytes and what was measured. progress(done_tokens, total_tokens, bits);
        observe(segment_start, freqs) sees every frequency table coded (for `explain`), and
        observe(None, None) if the model's part is coded again (adapting did not pay).
        In a team of processes, every one codes a share and process 0 alone gets the
        archive (the others get None, None)."""
        started, loading_before = time.perf_counter(), self.load_s
        data = bytes(data)
        cut = self._cut(data)
        text = cut.text if cut else data
        found = repeats.copies(text) if self.settings.copies else []
        segments, coded, engine = self._model_coding(repeats.literal(text, found), progress,
                                                     observe, compact=not found and not cut)
        release_freed_memory()  # the encoder's logits and tables: ~400 MB a chunk
        if coded is None:
            return None, None
        if cut and not coded.bits:  # the model codes none of the text: as without a layout
            cut = None
            found = repeats.copies(data) if self.settings.copies else []
            segments = [seg.Segment(0, repeats.literal(data, found), (), False)]
        blocks, payloads = seg.classical_blocks(segments, set(coded.bits))
        info = self._model_info(engine, coded.adaptation) if coded.bits else None
        if coded.trimmed:  # one segment, coded by a preset's model: the compact form
            archive = pack_compact(PRESETS[self.settings.model_name].number, coded.adaptation,
                                   blocks[0].n_tokens, data, coded.streams[0])
        else:
            layout = None
            if cut:
                layout, payload = _layout(cut)
                payloads.append(payload)
            archive = pack(Header(len(data), content_checksum(data), blocks, info,
                                  copies=found, layout=layout), payloads, coded.streams)
        totals = _block_bytes(blocks, found)
        if cut:
            totals["binary"] = len(cut.binary)
        stats = CompressStats(
            len(data), len(archive), 8 * sum(map(len, coded.streams)),
            [SegmentCost(segments[i].start, segments[i].ids, coded.bits[i])
             for i in sorted(coded.bits)], totals, found,
            info.name if info else "", info.arithmetic.label if info else "",
            time.perf_counter() - started, self.load_s - loading_before,
            sum(map(len, payloads)))
        return archive, stats

    def _cut(self, data: bytes) -> mixed.Cut | None:
        """Where the text runs of mixed input are (`mixed`); None for text, for a file with
        no text, or with layout "none"."""
        if self.settings.layout == "none" or not seg.has_text(data):
            return None
        return mixed.plan(data, tar=self.settings.layout == "auto")

    def _model_coding(self, data: bytes, progress, observe, compact: bool = False):
        """The segments of data (the literal bytes), what the model coded (None off
        process 0), the engine. compact: code a lone segment's stream for the compact form,
        where the settings and the model allow it (`coded.trimmed` says so)."""
        s = self.settings
        if not data or not seg.has_text(data):
            return [seg.Segment(0, data, (), False)] if data else [], groups.Coded({}, []), None
        engine, model = self._engine(s.model_name, s.arithmetic_enum())
        segments = seg.cut(data, model.tokenizer, s.segment_tokens)
        candidates = [i for i, x in enumerate(segments) if x.candidate]
        if not candidates:
            return segments, groups.Coded({}, []), engine
        self.machine.apply_threads()
        trim = compact and len(segments) == 1 and self._compact_allowed(engine)
        coded = groups.encode(engine, segments, candidates, s.group_size,
                              engine.full_forward and s.encoder == "full",
                              s.adaptation_enum(), self.team, progress, observe, trim)
        return segments, coded, engine

    def _compact_allowed(self, engine) -> bool:
        """A compact archive names a preset by number and its exact-v3 fingerprint: only a
        preset's own model, in exact-v3, with its default bucket size, alone."""
        preset = PRESETS.get(self.settings.model_name)
        return (self.settings.compact and preset is not None and self.team.size == 1
                and engine.arithmetic == Arithmetic.EXACT_V3
                and engine.fingerprint().hex() == preset.fingerprint)

    def _model_info(self, engine, adaptation) -> ModelInfo:
        s, exact = self.settings, engine.arithmetic != Arithmetic.FLOAT
        return ModelInfo(s.model_name, engine.fingerprint(), engine.arithmetic, s.segment_tokens,
                         s.group_size, default_bucket_size(engine.vocab_size),
                         threads=0 if exact else self.machine.torch_threads(),
                         runtime="" if exact else engine.runtime(),
                         adaptation=adaptation)

    # --- decompression ---------------------------------------------------------------------

    def decompress(self, blob: bytes, progress=None) -> bytes | None:
        """The original bytes, after checking every size and the content checksum; a file
        of archives back to back (`compress -c a b`) gives their outputs in order. In a
        team of processes, process 0 alone gets them (the others get None)."""
        parts = [self._decompress_one(member, progress) for member in split_members(bytes(blob))]
        release_freed_memory()  # the decoder's caches and tables
        return None if None in parts else b"".join(parts)

    def _decompress_one(self, blob: bytes, progress) -> bytes | None:
        if is_compact(blob):
            return self._decompress_compact(unpack_compact(blob), progress)
        header, payloads, streams = unpack(blob)
        memory = physical_memory()
        if header.copies and header.original_size > memory // 2:
            raise CorruptArchiveError(
                f"archive declares {header.original_size:,} bytes of output, more than half "
                f"of this machine's memory ({memory:,} bytes); refused (damaged or crafted)")
        model_parts = self._decode_model_blocks(header, streams, progress) \
            if header.model_blocks() else []
        if model_parts is None:  # another process of the team assembles the output
            return None
        model_parts, payload_parts, out = iter(model_parts), iter(payloads), []
        for block in header.blocks:
            if block.method == Method.MODEL:
                out.append(next(model_parts))
            elif block.method == Method.LZMA:
                out.append(seg.lzma_decompress(next(payload_parts), block.raw_size))
            else:
                out.append(next(payload_parts))
        data = b"".join(out)
        if header.copies:
            data = repeats.restore(data, header.copies, header.text_size)
        if header.layout:
            data = _join(header.layout, data, next(payload_parts))
        if len(data) != header.original_size or content_checksum(data) != header.checksum:
            raise CorruptArchiveError(_checksum_failure(header))
        return data

    def compress_many(self, messages: list[bytes]) -> list[bytes]:
        """Each message's own archive (the same bytes as `compress` gives it alone): for
        many short texts, which `decompress_many` decodes side by side. Messages of one
        segment run the model's forward together, their rows stacked, a batch at a time."""
        messages = [bytes(m) for m in messages]
        out = []
        for start in range(0, len(messages), PREFETCH_MESSAGES):
            batch = messages[start:start + PREFETCH_MESSAGES]
            self.prefetch(batch)
            out += [self.compress(message) for message in batch]
        return out

    def prefetch(self, messages: list[bytes]) -> None:
        """Run the model's forward over these inputs' one-segment texts now, as one stack
        of rows, for the compressions of them that follow (up to PREFETCH_MESSAGES short
        ones: what the network keeps). Changes no archive, only how fast it comes."""
        s = self.settings
        texts = [m for m in messages if m and seg.has_text(m)]
        if not texts or (s.copies and any(repeats.copies(m) for m in texts)):
            return
        engine, model = self._engine(s.model_name, s.arithmetic_enum())
        if getattr(engine, "prefetch", None) is None:
            return
        cuts = [seg.cut(m, model.tokenizer, s.segment_tokens) for m in texts]
        engine.prefetch([list(c[0].ids) for c in cuts if len(c) == 1 and c[0].candidate])

    def decompress_many(self, blobs: list[bytes], progress=None) -> list[bytes]:
        """The originals of many archives, in order. Compact archives of one preset and
        adaptation are decoded side by side, a row each in the decoder's steps (in waves
        that fit its memory), so a hundred short messages take little longer than their
        longest one; any other archive is decoded on its own."""
        out: list[bytes | None] = [None] * len(blobs)
        batches: dict = {}
        for i, blob in enumerate(map(bytes, blobs)):
            if is_compact(blob):
                c = unpack_compact(blob)
                batches.setdefault((c.preset, c.adaptation), []).append((i, c))
            else:
                out[i] = self.decompress(blob, progress)
        for batch in batches.values():
            for (i, c), original in zip(batch, self._decode_compacts([c for _, c in batch],
                                                                    progress)):
                out[i] = original
        return out

    def _decode_compacts(self, batch: list[Compact], progress) -> list[bytes] | None:
        """Compact archives of one preset and adaptation, decoded together; each checked."""
        engine, model = self._compact_engine(batch[0])
        info = ModelInfo(model.name, engine.fingerprint(), Arithmetic.EXACT_V3,
                         max(c.n_tokens for c in batch), 1,
                         default_bucket_size(engine.vocab_size), adaptation=batch[0].adaptation)
        blocks = [Block(Method.MODEL, groups.UNKNOWN, 0, c.n_tokens) for c in batch]
        parts = groups.decode(engine, info, blocks, [c.stream for c in batch], model.tokenizer,
                              self.machine, self.team, progress, trimmed_streams=True)
        if parts is None:
            return None
        for c, original in zip(batch, parts):
            if not c.matches(original):
                raise CorruptArchiveError(_compact_failure())
        return parts

    def _compact_engine(self, c: Compact):
        """The engine a compact archive's preset number names (or --model), refused in one
        line unless its exact-v3 fingerprint is the preset's."""
        preset = preset_by_number(c.preset)
        if preset is None:
            raise CorruptArchiveError(f"compact archive names preset number {c.preset}, which "
                                      "this llmzip does not know (damaged, or a newer llmzip "
                                      "wrote it)")
        name = self.settings.model or preset
        engine, model = self._engine(name, Arithmetic.EXACT_V3,
                                     from_archive=self.settings.model is None)
        want = PRESETS[preset].fingerprint
        if engine.fingerprint().hex() != want:
            raise ModelMismatchError(
                f"archive was made with preset {preset} ({want[:12]}, exact-v3 arithmetic) "
                f"but '{name}' is {engine.fingerprint().hex()[:12]}; install {preset}'s "
                f"model ({PRESETS[preset].install})")
        return engine, model

    def _decompress_compact(self, c: Compact, progress) -> bytes | None:
        parts = self._decode_compacts([c], progress)
        return None if parts is None else parts[0]

    def _decode_model_blocks(self, header: Header, streams, progress) -> list[bytes] | None:
        info = header.model
        name = self.settings.model or info.name
        if info.arithmetic == Arithmetic.FLOAT:
            self.machine.apply_threads(info.threads)
        engine, model = self._engine(name, info.arithmetic, from_archive=self.settings.model is None)
        if engine.fingerprint() != info.fingerprint:
            if info.arithmetic == Arithmetic.EXACT and Path(name).name == Path(info.name).name:
                raise ModelMismatchError(
                    f"archive was made with exact-v2 arithmetic (llmzip 0.1), which decodes "
                    f"only where torch rounds square roots as the writer's machine did; here "
                    f"'{name}' has v2 fingerprint {engine.fingerprint().hex()[:12]}, not "
                    f"{info.fingerprint.hex()[:12]} (decode it on the machine that wrote it)")
            raise ModelMismatchError(
                f"archive was made with model '{info.name}' ({info.fingerprint.hex()[:12]}, "
                f"{info.arithmetic.label} arithmetic) but '{name}' is "
                f"{engine.fingerprint().hex()[:12]}; decompress with --model {info.name}")
        check_bucket_size(info.bucket_size, engine.vocab_size)
        try:
            return groups.decode(engine, info, header.model_blocks(), streams,
                                      model.tokenizer, self.machine, self.team, progress)
        except CorruptArchiveError:
            if info.arithmetic == Arithmetic.FLOAT:  # most likely another machine's floats
                raise CorruptArchiveError(_checksum_failure(header)) from None
            raise


def _layout(cut: mixed.Cut) -> tuple[Layout, bytes]:
    """The header's layout and the binary stream's payload."""
    method, payload = seg.classical_payload(cut.binary)
    block = Block(method, len(cut.binary), payload_size=len(payload))
    runs = tuple(cut.runs) if cut.kind == LayoutKind.RUNS else ()
    return Layout(cut.kind, block, len(cut.text), runs=runs, members=cut.members), payload


def _join(layout: Layout, text: bytes, payload: bytes) -> bytes:
    """The file from its decoded text stream and its binary stream's payload."""
    b = layout.binary
    binary = seg.lzma_decompress(payload, b.raw_size) if b.method == Method.LZMA else payload
    if layout.kind == LayoutKind.RUNS:
        return mixed.join(text, binary, list(layout.runs))
    return mixed.tar_join(text, binary, layout.members)


def _compact_failure() -> str:
    return ("checksum mismatch after decoding (the compact archive is damaged or truncated, "
            "or another model of the same name decoded it)")


def _block_bytes(blocks, copies) -> dict:
    totals: dict[str, int] = {}
    for b in blocks:
        totals[b.method.name.lower()] = totals.get(b.method.name.lower(), 0) + b.raw_size
    if copies:
        totals["copy"] = sum(c.size for c in copies)
    return totals


def _checksum_failure(header: Header) -> str:
    info = header.model
    if info is not None and info.arithmetic == Arithmetic.FLOAT:
        return ("checksum mismatch after decoding: this archive used float arithmetic, which "
                f"decodes only with {info.runtime} and {info.threads} threads (or it is damaged)")
    return "checksum mismatch after decoding (archive is damaged)"
