"""The model's part of an archive: candidate segments to group streams, and back to tokens.

Encoding: the candidates are taken in groups of `group_size`, and each process of the team
codes a contiguous share of the groups (balanced by tokens): the coder rows of every
candidate (one full forward each with exact arithmetic, else the decoder's own steps), the
choice of model or LZMA for each (`segments.model_saving`), and the stream of each group of
its model-coded segments, written as soon as the group is complete, so that memory holds
one group's rows. Process 0 gathers each segment's code length and the streams; a group
that straddles two shares (a segment before it went to LZMA) is coded again there, the
same bytes as anywhere else. Decoding: each process decodes a share of the groups, a wave
of groups at a time in lockstep (`lockstep`), and process 0 gathers the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from llmzip.codec import lockstep
from llmzip.codec import segments as seg
from llmzip.codec.adapt import adapter_for
from llmzip.codec.rangecoder import (
    CoderRows,
    StreamDecoder,
    TwoLevel,
    default_bucket_size,
    encode_group,
    trimmed,
)
from llmzip.container import Adaptation
from llmzip.engine.tables import across, copied
from llmzip.errors import CorruptArchiveError
from llmzip.parallel.distributed import shares

__all__ = ["Coded", "encode", "decode"]


def groups_of(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


@dataclass
class Coded:
    """What the model stage gives the archive: each model-coded segment's bits per token
    (by segment index) and the groups' range-coder streams."""

    bits: dict[int, np.ndarray]
    streams: list[bytes]
    adaptation: Adaptation = Adaptation.NONE  # what the streams were coded with
    trimmed: bool = False  # one stream in the compact archive's form (`rangecoder.trimmed`)


@dataclass
class _Share:
    """One process's result: (index, bytes saved against LZMA, bits per token) of each of
    its candidates, and (members, stream) of each group it coded."""

    segments: list[tuple[int, float, np.ndarray]]
    groups: list[tuple[tuple[int, ...], bytes]]


UNKNOWN = -1  # a block's raw_size when its archive does not declare it (`compact`)

# Adapting must save the header byte that records it. Below that the file is coded again,
# which doubles its compression time; a 20 KB prefix of alice29 is already 3 bytes smaller
# adapted (bench/adaptation.py), so mostly files of a few KB pay the second pass.
ADAPTATION_BITS = 8


def encode(engine, segments, candidates, group_size, full_forward, adaptation, team, progress,
           observe, trim: bool = False, replay: dict | None = None) -> Coded | None:
    """The streams of a file's model-coded segments (None on processes other than 0).

    With adaptation, if the whole team's segments saved less than ADAPTATION_BITS (a short
    file), they are coded again with the model alone, so adapting does not make a short
    archive bigger. observe(None, None) then says that what it saw is void. trim: streams
    in the compact archive's form (`rangecoder.trimmed`). replay: the first pass's tables,
    which the second pass codes again without running the model."""
    if replay is not None:
        engine = _Replayed(engine, replay)
    two_level = TwoLevel(engine.vocab_size, default_bucket_size(engine.vocab_size))
    ledger = [0.0]  # bits this process's adapters saved
    rows_of = partial(_rows_full if full_forward else _rows_stepped, adaptation=adaptation,
                      ledger=ledger)
    groups = groups_of(candidates, group_size)
    mine = shares([sum(len(segments[i].ids) for i in g) for g in groups], team.size)[team.rank]
    my_candidates = [i for g in groups[mine.start:mine.stop] for i in g]
    tracker = lockstep.Progress(progress, sum(len(segments[i].ids) for i in my_candidates))
    ratio = seg.lzma_ratio([segments[i].raw for i in candidates])
    coder = trimmed if trim else encode_group
    tokens = sum(len(segments[i].ids) for i in my_candidates)
    if adaptation and full_forward and tokens * engine.vocab_size * 8 <= REPLAY_BYTES:
        engine = _Replayed(engine)  # a short file's tables, kept for a second pass
    share = team.agree(_code_share, engine, two_level, rows_of, segments, my_candidates,
                       ratio, group_size, adaptation, tracker, observe, coder)
    if adaptation and sum(team.all_gather(ledger[0])) < ADAPTATION_BITS:
        if observe:
            observe(None, None)
        done = tracker.done  # progress goes on counting: the second pass is more work
        again = progress and (lambda d, t, bits: progress(done + d, done + t, bits))
        return encode(getattr(engine, "engine", engine), segments, candidates, group_size,
                      full_forward, Adaptation.NONE, team, again, observe, trim,
                      replay=getattr(engine, "kept", None))
    parts = team.gather(share)
    if parts is None:
        return None
    coded = _assemble(parts, engine, two_level, rows_of, segments, group_size, coder,
                      0 if trim else seg.MODEL_HEADER_BYTES)
    coded.adaptation = adaptation if coded.streams else Adaptation.NONE
    coded.trimmed = trim and bool(coded.streams)
    return coded


REPLAY_BYTES = 64 << 20  # a file's tables this small are kept for its second pass


class _Replayed:
    """An engine whose group_tables keep what they gave (a copy: adapting changes them in
    place), or give it again: the second pass of a short file, whose adaptation did not pay,
    codes the model's own tables without computing them twice."""

    def __init__(self, engine, kept: dict | None = None):
        self.engine, self.kept, self.replaying = engine, kept or {}, kept is not None

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def group_tables(self, segments: list[list[int]]):
        key = tuple(tuple(ids) for ids in segments)
        if self.replaying and key in self.kept:
            for pos, tables in self.kept[key]:
                yield pos, copied(tables)
            return
        kept = self.kept.setdefault(key, [])
        for pos, tables in self.engine.group_tables(segments):
            kept.append((pos, copied(tables)))
            yield pos, tables


def _code_share(engine, two_level, rows_of, segments, candidates, ratio, group_size,
                adaptation, tracker, observe, coder) -> _Share:
    """Rows of every candidate, in groups of group_size (an adapter's scope), and the
    stream of each group of model-coded segments whose rows are valid as they stand: with
    adaptation, only a group that was adapted together (a segment that went to LZMA
    regroups those after it; `_assemble` codes them again)."""
    share, pending = _Share([], []), []
    together = {tuple(g) for g in groups_of(candidates, group_size)} if adaptation else None
    rows_iter = rows_of(engine, two_level, [segments[i] for i in candidates], group_size,
                        tracker, observe)
    for i, rows in zip(candidates, rows_iter):
        gain = seg.model_saving(len(segments[i].raw), float(rows.xent_bits.sum()), ratio)
        share.segments.append((i, gain, rows.xent_bits))
        if gain > 0 or not engine.batch_invariant:  # a float group's layout is fixed
            pending.append((i, rows))
        if pending and (len(pending) == group_size or i == candidates[-1]):
            members = tuple(j for j, _ in pending)
            if together is None or members in together:
                share.groups.append((members, coder([r for _, r in pending])))
            pending = []
    return share


def _assemble(parts, engine, two_level, rows_of, segments, group_size, coder,
              naming_bytes: int) -> Coded:
    """The archive's groups (consecutive model-coded segments, group_size at a time) and
    their streams, each coded by a process or, straddling two shares, coded here."""
    coded = [(i, gain, bits) for part in parts for i, gain, bits in part.segments
             if gain > 0 or not engine.batch_invariant]
    if sum(gain for _, gain, _ in coded) < naming_bytes:  # (a compact archive: nothing)
        return Coded({}, [])  # naming the model would cost more than it saves
    known = {members: stream for part in parts for members, stream in part.groups}
    bits, streams = {i: b for i, _, b in coded}, []
    for group in groups_of([i for i, _, _ in coded], group_size):
        stream = known.get(tuple(group))
        if stream is None:
            rows = list(rows_of(engine, two_level, [segments[i] for i in group], group_size,
                                lockstep.Progress(None, 0), None))
            bits.update((i, r.xent_bits) for i, r in zip(group, rows))
            stream = coder(rows)
        streams.append(stream)
    return Coded(bits, streams)


def _rows_full(engine, two_level, segments, group_size, tracker, observe, adaptation, ledger):
    """Exact arithmetic: one full-sequence forward per segment, in chunks of positions;
    yields each segment's coder rows. With adaptation, each chunk's tables are adapted
    step by step in the order the decoder will see them."""
    for group in groups_of(segments, group_size):
        adapter = adapter_for(adaptation, len(group))
        parts = [[] for _ in group]
        for pos, tables in engine.group_tables([list(x.ids) for x in group]):
            if adapter:
                adapt_chunk(adapter, group, tables, pos)
            for i, freqs in tables.items():
                parts[i].append(two_level.split(freqs, np.asarray(group[i].ids[pos:pos + len(freqs)])))
                if observe:
                    observe(group[i].start, np.asarray(freqs))
                tracker.tick(len(freqs), float(parts[i][-1].xent_bits.sum()))
        ledger[0] += adapter.saved_bits if adapter else 0.0
        yield from _joined(parts)


def _joined(parts: list[list[CoderRows]]):
    """Each segment's rows in one piece, its pieces let go as it is joined: the group's rows
    are held once, not twice, at the end of a group."""
    while parts:
        yield CoderRows.concat(parts.pop(0))


def adapt_chunk(adapter, group, tables: dict, pos: int) -> None:
    """Adapt, in place, the tables of one chunk of positions of a group's segments."""
    for t in range(max(len(f) for f in tables.values())):
        active = [i for i, f in tables.items() if t < len(f)]
        adapter.adjust(across([tables[i] for i in active], t), active)
        adapter.learn([group[i].ids[pos + t] for i in active])


def _rows_stepped(engine, two_level, segments, group_size, tracker, observe, adaptation,
                  ledger):
    """The decoder's own KV-cached steps, group by group (the float engine's only way);
    yields each segment's coder rows."""
    for group in groups_of(segments, group_size):
        parts, adapter = [[] for _ in group], adapter_for(adaptation, len(group))

        def known(t, freqs, active, group=group, parts=parts, adapter=adapter):
            tokens = np.array([group[i].ids[t] for i in active])
            if adapter:
                adapter.adjust(freqs, active)
                adapter.learn(tokens)
            rows = two_level.split(freqs, tokens)
            for j, i in enumerate(active):
                parts[i].append(rows.take(j))
                if observe:
                    observe(group[i].start, np.asarray(freqs.take([j])))
            tracker.tick(0, float(rows.xent_bits.sum()))
            return tokens

        lockstep.run(engine, [len(x.ids) for x in group], known, tracker)
        ledger[0] += adapter.saved_bits if adapter else 0.0
        yield from _joined(parts)


# --- decoding ----------------------------------------------------------------------------------

def decode(engine, info, blocks, streams, tokenizer, machine, team, progress,
           trimmed_streams: bool = False) -> list[bytes] | None:
    """Each MODEL block's bytes, in order (None on processes other than 0). A block's
    raw_size UNKNOWN (a compact archive's) lets it spell any number of bytes."""
    groups = list(zip(groups_of(blocks, info.group_size), streams))
    mine = shares([sum(b.n_tokens for b in g) for g, _ in groups], team.size)[team.rank]
    my_groups = groups[mine.start:mine.stop]
    tracker = lockstep.Progress(progress, sum(b.n_tokens for g, _ in my_groups for b in g))
    raws = team.agree(_decode_groups, engine, TwoLevel(engine.vocab_size, info.bucket_size),
                      my_groups, info.adaptation, tokenizer, machine, tracker, trimmed_streams)
    parts = team.gather(raws)
    return None if parts is None else [raw for part in parts for raw in part]


def _decode_groups(engine, two_level, groups, adaptation, tokenizer, machine, tracker,
                   trimmed_streams: bool = False) -> list[bytes]:
    tuner = machine.tuner() if engine.batch_invariant and engine.full_forward else None
    out = []
    for wave in machine.waves(groups, engine) if groups else []:
        ids = _decode_wave(engine, two_level, wave, adaptation, tokenizer, tracker, tuner,
                           trimmed_streams)
        for block, block_ids in zip([b for group, _ in wave for b in group], ids):
            raw = tokenizer.decode(block_ids)
            if block.raw_size != UNKNOWN and len(raw) != block.raw_size:
                raise CorruptArchiveError("a block decodes to other bytes than it declares "
                                          "(archive damaged, or another model)")
            out.append(raw)
    return out


def _decode_wave(engine, two_level, wave, adaptation, tokenizer, tracker, tuner,
                 trimmed_streams: bool = False) -> list[list[int]]:
    """Token ids of every block of a wave of groups (in group, then block order): each
    group's stream decodes its active blocks, in block order, at every step, its adapter
    (if any) adapting their tables first. A block whose tokens spell more bytes than it
    declares stops the decoding at once."""
    blocks = [b for group, _ in wave for b in group]
    group_of = [g for g, (group, _) in enumerate(wave) for _ in group]
    first = [group_of.index(g) for g in range(len(wave))]  # each group's first block
    decoders = [StreamDecoder(stream, two_level, trimmed_streams) for _, stream in wave]
    adapters = [adapter_for(adaptation, len(group)) for group, _ in wave]
    ids: list[list[int]] = [[] for _ in blocks]
    token_bytes = tokenizer.byte_lengths()
    spelled = np.zeros(len(blocks), np.int64)
    declared = np.array([b.raw_size if b.raw_size != UNKNOWN else np.iinfo(np.int64).max
                         for b in blocks])

    def decoded(t, freqs, active):
        tokens = np.empty(len(active), np.int64)
        for g, decoder in enumerate(decoders):
            mine = sorted((j for j, i in enumerate(active) if group_of[i] == g),
                          key=lambda j: active[j])  # the encoder's order: block order
            if not mine:
                continue
            tables = freqs if mine == list(range(len(freqs))) else freqs.take(mine)
            if adapters[g]:
                adapters[g].adjust(tables, [active[j] - first[g] for j in mine])
            tokens[mine] = decoder.decode(tables)
            if adapters[g]:
                adapters[g].learn(tokens[mine])
        spelled[active] += token_bytes[tokens]
        if (spelled[active] > declared[active]).any():
            raise CorruptArchiveError("a block decodes to more bytes than it declares "
                                      "(archive damaged, or another model)")
        for i, token in zip(active, tokens.tolist()):
            ids[i].append(token)
        return tokens

    lockstep.run(engine, [b.n_tokens for b in blocks], decoded, tracker, tuner)
    return ids
