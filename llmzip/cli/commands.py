"""The llmzip command: parse, call one library function, print.

Behaves like gzip and zstd: inputs are kept, an existing output is never replaced without
-f, binary data is never written to a terminal, and output appears (atomically, via a
temporary file renamed into place) only after the whole job succeeded. Every LlmzipError
becomes one line on stderr and its exit code (1 error, 2 corrupt or mismatched archive),
in `errors_to_exit_codes`, the only place that maps them. Ctrl-C and SIGTERM stop any
command with `llmzip: interrupted` and exit code 130 or 143, leaving no temporary file and
no partial output; nothing ever writes to an input.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from llmzip import __version__
from llmzip.cli.failures import (
    SIGNALS,
    Fail,
    Interrupted,
    errors_to_exit_codes,
    team_prefix,
)
from llmzip.cli.habits import gzip_style, standard_input
from llmzip.cli.outputs import (
    SUFFIX,
    archive_name,
    check_target,
    emit,
    file_mode,
    original_name,
    output_paths,
    read_input,
    write_atomically,
)
from llmzip.cli.progress import BenchProgress, Phases, ProgressBar, duration, show_progress
from llmzip.errors import LlmzipError

# --- interruption ----------------------------------------------------------------------------


class _Llmzip(click.Group):
    """The command group: every command runs with the signal handlers and error mapping, and
    usage errors are one line too."""

    def main(self, *args, **kwargs):
        with SIGNALS.installed():
            try:
                return super().main(*args, **kwargs)
            except Interrupted as exc:
                Fail(team_prefix() + "interrupted").show()
                sys.exit(128 + exc.signum)

    def parse_args(self, ctx, args):
        with errors_to_exit_codes():
            return super().parse_args(ctx, gzip_style(args, self.commands))

    def invoke(self, ctx):
        with errors_to_exit_codes():
            return super().invoke(ctx)


# --- files -----------------------------------------------------------------------------------


# --- progress --------------------------------------------------------------------------------


# --- commands --------------------------------------------------------------------------------

_common = [
    click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output file."),
    click.option("-c", "--stdout", "to_stdout", is_flag=True, help="Write to standard output."),
    click.option("-f", "--force", is_flag=True, help="Overwrite existing files."),
    click.option("--threads", type=click.IntRange(1), help="Threads (default: all cores)."),
    click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors."),
    click.option("-v", "--verbose", is_flag=True, help="Print details."),
]


def _with_common(func):
    for option in reversed(_common):
        func = option(func)
    return func


@click.group(cls=_Llmzip, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="llmzip")
def main():
    """Lossless compression with a language model and a range coder.

    gzip's and xz's habits work too: `llmzip FILE` compresses, -d decompresses, -t tests,
    -l lists, -c writes to standard output, -k keeps (the default), --rm removes inputs,
    -1 .. -9 set the level, and short flags join (-dc)."""


_device = click.option("--device", default="auto", show_default=True,
                       help="Which backend and device run the exact engine: cpu (numba), "
                       "cuda, cuda:N, auto (a GPU where torch sees one) or torch:cpu; "
                       "archives are the same bytes on any.")
_recursive = click.option("-r", "--recursive", is_flag=True,
                          help="Take the files in directories, recursively (as gzip -r).")


LEVELS = {1: 256, 2: 512, 3: 1024, 4: 1536, 5: 2048, 6: 4096, 7: 6144, 8: 8192, 9: 16384}
# level -> the longest segment, in tokens (docs/CLI.md says what each costs and buys)


def _levels(func):
    """-1 .. -9, as gzip's; 6 is the default."""
    for n in reversed(LEVELS):
        func = click.option(f"-{n}", "level", flag_value=n,
                            help=f"Segments of up to {LEVELS[n]:,} tokens." if n in (1, 6, 9)
                            else None, hidden=n not in (1, 6, 9))(func)
    return func


_keep_options = [
    click.option("-k", "--keep", is_flag=True, help="Keep the input files (the default)."),
    click.option("--rm", "remove", is_flag=True,
                 help="Remove each input once its output is written and verified."),
]


def _with_keep(func):
    for option in reversed(_keep_options):
        func = option(func)
    return func


def _removing(remove: bool, to_stdout: bool, names: list[str]) -> bool:
    """--rm applies to files written to files, as gzip's: never to standard input or -c."""
    if remove and (to_stdout or "-" in names):
        raise click.UsageError("--rm removes inputs only when each one's output is a file")
    return remove


def _remove_verified(name: str, target: Path, data: bytes, codec, log) -> None:
    """Remove an input after its archive, read back from the disk, decodes to its bytes."""
    if codec.decompress(target.read_bytes()) != data:
        raise Fail(f"{target}: does not decode to {name}; {name} is kept")
    Path(name).unlink()
    log.say(f"{name}: removed (its archive decodes to it)")


class _Team:
    """The processes of this command (`accelerate launch` starts several; see docs/DISTRIBUTED.md):
    a codec for the files they share, one for the files this process codes alone."""

    def __init__(self, make_codec):
        from llmzip.parallel.distributed import Team, join
        self.team = join()
        self.shared, self.alone = make_codec(self.team), make_codec(Team())

    def jobs(self, names, one_stream: bool):
        """This process's jobs, in order; after the last, it waits for the team to finish."""
        yield from self.planned(names, one_stream)
        self.team.close()

    def planned(self, names, one_stream: bool) -> list:
        from llmzip.parallel.jobs import plan
        return [j for j in plan(names, self.team.size, one_stream) if j.mine(self.team.rank)]

    def check_targets(self, names, one_stream: bool, targets: dict, force: bool,
                      needed=lambda name: 1) -> None:
        """Every output this process will write, checked before the first file's work."""
        for job in self.planned(names, one_stream):
            target = targets[job.name]
            self.check_target(job, target, force, needed(job.name) if target else 0)

    def codec(self, job):
        from llmzip.parallel.jobs import SHARED
        return self.shared if job.owner == SHARED else self.alone

    def writer(self, job) -> bool:
        return job.writer(self.team.rank)

    def check_target(self, job, target, force, needed_bytes: int = 1) -> None:
        """Before any work; for a shared file every process learns the writer's verdict."""
        from llmzip.parallel.jobs import SHARED
        def check():
            if self.writer(job):
                check_target(job.name, target, force, needed_bytes)
        self.team.agree(check) if job.owner == SHARED else check()


@main.command()
@click.argument("files", nargs=-1)
@_with_common
@_with_keep
@_recursive
@_device
@click.option("-m", "--model", default=None, help="Preset, .gguf file, model directory or "
              "cached Hugging Face id (default: smollm2-135m).")
@click.option("--arithmetic", type=click.Choice(["exact", "float"]), default=None,
              help="exact: decodes on any machine (default where supported); float: only "
              "with the same torch, CPU and threads.")
@click.option("--segment-tokens", type=click.IntRange(16, 16384), default=None,
              help="Longest context; longer compresses better, decodes slower (default 4096, "
              "level 6).")
@_levels
@click.option("--group-size", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Segments decoded side by side (decoder memory with the default model: "
              "~13 MB per segment per 1,000 tokens).")
@click.option("--adapt", type=click.Choice(["counts", "none"]), default="counts",
              show_default=True, help="counts: mix in what followed each recent context in "
              "the file so far (learns names and repeats); none: the model alone.")
@click.option("--compact/--no-compact", default=True, show_default=True,
              help="A preset model's one-segment archive in the compact form (7 or 8 bytes of "
              "framing; format version 5, which llmzip before it cannot read).")
@click.option("--copies/--no-copies", default=True, show_default=True,
              help="Take long repeats out as copies of earlier bytes: 256 bytes or more from 16 KB "
              "back, or 4 KB or more (such an archive is format version 4, which llmzip "
              "before copies cannot read).")
@click.option("--layout", type=click.Choice(["auto", "runs", "none"]), default="auto",
              show_default=True, help="Text inside binary input (a tar, an mbox, a binary's long "
              "strings): cut out for the model, the rest to one LZMA block. auto: a tar by its "
              "members, anything else by its text runs; runs: text runs in any file; none: "
              "code the file as it comes (format version 6, which llmzip before layouts "
              "cannot read).")
def compress(files, output, to_stdout, force, threads, quiet, verbose, recursive, device, model,
             arithmetic, segment_tokens, level, group_size, adapt, compact, copies, layout,
             keep, remove):
    """Compress FILES to FILE.llmz (- reads standard input); `llmzip FILE` does too.

    With no FILES, standard input goes to standard output (`tar c DIR | llmzip >
    DIR.tar.llmz`). With -c, the archives go to standard output back to back, as gzip's
    members do: that stream decompresses to the files' contents, in order. Levels -1 to -9 set the longest
    segment (see --segment-tokens): lower levels decode faster, higher ones compress more."""
    from llmzip.codec.codec import PREFETCH_MESSAGES, Codec
    from llmzip.parallel.jobs import expand
    if segment_tokens and level:
        raise click.UsageError("give a level or --segment-tokens, not both")
    log = Phases(verbose and not quiet)
    names = expand(standard_input(files), recursive, lambda p: not p.name.endswith(SUFFIX))
    one_stream = to_stdout or bool(output)
    compact = compact and not (one_stream and len(names) > 1)  # it can only be a last member
    run = _Team(lambda team: Codec(model, team, log=log, arithmetic=arithmetic,
                                   threads=threads, group_size=group_size, adapt=adapt,
                                   segment_tokens=segment_tokens or LEVELS[level or 6],
                                   compact=compact, copies=copies, layout=layout,
                                   device=device))
    targets = dict(output_paths(names, output, to_stdout, archive_name))
    remove = _removing(remove, to_stdout, names)
    run.check_targets(names, one_stream, targets, force)
    small = _small_files(names) if run.team.size == 1 else []
    for job in run.jobs(names, one_stream):
        if small and job.name == small[0]:  # the next small files' forwards, stacked
            batch, small = small[:PREFETCH_MESSAGES], small[PREFETCH_MESSAGES:]
            run.alone.prefetch([read_input(n) for n in batch])
        data = read_input(job.name)
        log.start(job.name, "compressing", len(data))
        bar = ProgressBar("compress", show_progress(quiet) and run.writer(job), 3.6)
        try:
            archive, stats = run.codec(job).compress_with_stats(data, progress=bar)
        finally:
            bar.close()
        if run.writer(job):
            emit(archive, job.name, targets[job.name], force, binary=True)
            log.end(job.name, "compressed", len(data), stats.elapsed_s)
            if not quiet:
                click.echo(_compress_summary(job.name, stats, verbose), err=True)
            if remove:
                _remove_verified(job.name, targets[job.name], data, run.codec(job), log)


def _compress_summary(name: str, s, verbose: bool) -> str:
    if not s.original_bytes:  # bits per byte of nothing is no number
        return f"{name}: empty input -> {s.archive_bytes:,} bytes (the header alone)"
    line = f"{name}: {s.original_bytes:,} -> {s.archive_bytes:,} bytes ({s.bpb:.3f} bits/byte"
    if s.n_tokens:
        line += (f"; model cross-entropy {s.xent_bpb:.3f} bits/byte, coder overhead "
                 f"{s.overhead_pct:+.2f}%, framing {s.framing_bytes:,} bytes) in "
                 f"{duration(s.elapsed_s)}"
                 + (f" ({duration(s.load_s)} loading the model)" if s.load_s >= 1 else "")
                 + f", {s.tok_per_s:.0f} tok/s")
    else:
        line += f"; framing {s.framing_bytes:,} bytes)"
    if verbose:
        parts = ", ".join(f"{k} {v:,} B" for k, v in s.blocks.items())
        line += f"\n  model {s.model or '-'} ({s.arithmetic or '-'}), {s.n_tokens:,} tokens; " \
                f"blocks: {parts or 'none'}"
    return line


def _declared_size(name: str) -> int:
    """The original size an archive's header declares (members added), read before any
    work to check that its output fits; a damaged header declares nothing (decoding then
    says what is wrong with it)."""
    from llmzip.container import describe, split_members
    if name == "-":  # standard input is read once, to decode it
        return 0
    try:
        return sum(describe(m)["original_bytes"] or 0  # a compact archive's is not stored
                   for m in split_members(read_input(name)))
    except LlmzipError:
        return 0


def _decompress_one(name: str, codec, show: bool) -> tuple[bytes | None, float]:
    blob = read_input(name)
    bar = ProgressBar("decompress", show)
    started = time.perf_counter()
    try:
        data = codec.decompress(blob, progress=bar)
    except LlmzipError as exc:
        raise type(exc)(f"{name}: {exc}") from None
    finally:
        bar.close()
    return data, time.perf_counter() - started


_decoding = [
    click.option("-m", "--model", default=None, help="Use this model instead of the one the "
                 "archive names (it must have the same fingerprint)."),
    click.option("--batch", type=click.IntRange(1), default=None,
                 help="Exact archives: at most this many segments decoded side by side "
                 "(fewer: less memory; any value decodes the same)."),
    click.option("--memory", type=click.IntRange(1), default=None, metavar="MB",
                 help="Most memory for the decoder's key/value caches (default 768)."),
    _recursive, _device]


def _with_decoding(func):
    for option in reversed(_decoding):
        func = option(func)
    return func


def _decoders(model, threads, batch, memory, device, log=None) -> _Team:
    from llmzip.codec.codec import Codec
    return _Team(lambda team: Codec(model, team, log=log, threads=threads, decode_batch=batch,
                                    decode_memory_mb=memory, device=device))


def _archives(files, recursive) -> list[str]:
    from llmzip.parallel.jobs import expand
    return expand(files, recursive, lambda p: p.name.endswith(SUFFIX))


@main.command()
@click.argument("files", nargs=-1)
@_with_common
@_with_keep
@_with_decoding
def decompress(files, output, to_stdout, force, threads, quiet, verbose, keep, remove, model,
               batch, memory, recursive, device):
    """Decompress FILE.llmz to FILE, checking its checksum; `llmzip -d` does too.

    With no FILES, standard input goes to standard output (`llmzip -d < x.llmz`)."""
    log = Phases(verbose and not quiet)
    run = _decoders(model, threads, batch, memory, device, log)
    names = _archives(standard_input(files), recursive)
    targets = dict(output_paths(names, output, to_stdout, original_name))
    remove = _removing(remove, to_stdout, names)
    one_stream = to_stdout or bool(output)
    run.check_targets(names, one_stream, targets, force, _declared_size)
    ready = _side_by_side(run, names, log)
    for job in run.jobs(names, one_stream):
        log.start(job.name, "decompressing", Path(job.name).stat().st_size
                  if job.name != "-" else 0)
        data, elapsed = ready.pop(job.name, None) or _decompress_one(
            job.name, run.codec(job), show_progress(quiet) and run.writer(job))
        if run.writer(job):
            emit(data, job.name, targets[job.name], force, binary=False)
            log.end(job.name, "restored", len(data), elapsed)
            if not quiet:
                click.echo(f"{job.name}: {len(data):,} bytes restored in {duration(elapsed)}, "
                           "checksum OK", err=True)
            if remove:  # the checksum of what was written has been verified by decoding
                Path(job.name).unlink()
                log.say(f"{job.name}: removed (its checksum verified)")


def _side_by_side(run, names: list[str], log) -> dict:
    """Many small compact archives (a process alone): decoded together, a row each in the
    decoder's steps, so that a hundred short messages take about as long as the longest.
    name -> (original, seconds, the batch's time shared out by size)."""
    from llmzip.container import is_compact
    if run.team.size > 1 or len(names) < 2:
        return {}
    small = _small_files(names)
    blobs = {n: read_input(n) for n in small}
    compact = [n for n in small if is_compact(blobs[n])]
    if len(compact) < 2:
        return {}
    log.say(f"decoding {len(compact)} compact archives side by side")
    started = time.perf_counter()
    try:
        originals = run.alone.decompress_many([blobs[n] for n in compact])
    except LlmzipError:
        return {}  # each is decoded on its own, and names its own failure
    share = (time.perf_counter() - started) / len(compact)
    return {n: (data, share) for n, data in zip(compact, originals)}


SIDE_BY_SIDE_BYTES = 4096  # archives this small are decoded together where they are compact


def _small_files(names: list[str]) -> list[str]:
    """Inputs short enough for their forwards to run stacked, in order, where there are
    several."""
    small = [n for n in names if n != "-" and Path(n).stat().st_size <= SIDE_BY_SIDE_BYTES]
    return small if len(small) > 1 else []


@main.command(name="test")
@click.argument("files", nargs=-1)
@click.option("--threads", type=click.IntRange(1), help="Threads (default: all cores).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.option("-v", "--verbose", is_flag=True, help="Print each phase.")
@_with_decoding
def test_command(files, threads, quiet, verbose, model, batch, memory, recursive, device):
    """Decode FILES (or standard input) and verify them without writing anything; `llmzip
    -t` does too."""
    run = _decoders(model, threads, batch, memory, device, Phases(verbose and not quiet))
    for job in run.jobs(_archives(standard_input(files), recursive), one_stream=False):
        data, elapsed = _decompress_one(job.name, run.codec(job),
                                        show_progress(quiet) and run.writer(job))
        if run.writer(job) and not quiet:
            click.echo(f"{job.name}: OK ({len(data):,} bytes, {duration(elapsed)})", err=True)


@main.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file.")
@click.option("-l", "--list", "as_list", is_flag=True,
              help="One line per archive, as gzip -l (`llmzip -l` does too).")
def info(files, as_json, as_list):
    """Show an archive's header: sizes, bits per byte, model, settings and declared work."""
    from llmzip.container import describe, split_members
    if as_list:
        return _list(files)
    for name in files:
        try:
            members = [describe(member) for member in split_members(read_input(name))]
        except LlmzipError as exc:
            raise type(exc)(f"{name}: {exc}") from None
        for number, facts in enumerate(members, 1):
            label = name if len(members) == 1 else f"{name} (member {number} of {len(members)})"
            facts = {"file": name, **({"member": number} if len(members) > 1 else {}), **facts}
            click.echo(json.dumps(facts) if as_json else _format_info(label, facts))


def _list(files) -> None:
    """gzip -l's table: compressed and original sizes, bits per byte, model, name."""
    from llmzip.container import describe, split_members
    click.echo(f"{'compressed':>12} {'original':>12} {'bits/byte':>9}  {'model':<14} name")
    totals = [0, 0]
    for name in files:
        try:
            members = [describe(m) for m in split_members(read_input(name))]
        except LlmzipError as exc:
            raise type(exc)(f"{name}: {exc}") from None
        packed = sum(f["archive_bytes"] for f in members)
        known = all(f["original_bytes"] is not None for f in members)  # compact: not stored
        original = sum(f["original_bytes"] for f in members) if known else None
        models = ",".join(sorted({_model_name(f["model"]) for f in members if f["model"]})) \
            or "-"
        size, bpb = (f"{original:,}", f"{8 * packed / original if original else 0.0:.3f}") \
            if known else ("?", "?")
        click.echo(f"{packed:>12,} {size:>12} {bpb:>9}  {models:<14} "
                   f"{original_name(name) if name.endswith(SUFFIX) else name}")
        totals = [totals[0] + packed, totals[1] + (original or 0)]
    if len(files) > 1:
        bpb = 8 * totals[0] / totals[1] if totals[1] else 0.0
        click.echo(f"{totals[0]:>12,} {totals[1]:>12,} {bpb:>9.3f}  {'':<14} (totals)")


def _model_name(m: dict) -> str:
    from llmzip.models.presets import archive_model_name
    return archive_model_name(m)


def _format_info(label: str, f: dict) -> str:
    if f.get("compact"):
        return "\n".join([
            f"{label}: compact llmzip archive, format version {f['format_version']}",
            "  original   known once decoded, checksum " + f["checksum"],
            f"  archive    {f['archive_bytes']:,} bytes, framing "
            f"{f['archive_bytes'] - sum(f['stream_bytes']):,}",
            f"  model      {_model_name(f['model'])}, exact-v3 arithmetic, adaptation "
            f"{f['model']['adaptation']}",
            f"  decoding   {f['model_tokens']:,} tokens through the model, in 1 stream"])
    lines = [f"{label}: llmzip archive, format version {f['format_version']}",
             f"  original   {f['original_bytes']:,} bytes, checksum {f['checksum']}",
             f"  archive    {f['archive_bytes']:,} bytes ({f['bpb']:.3f} bits/byte)"]
    m = f.get("model")
    if m:
        lines.append(f"  model      {m['name']} (fingerprint {m['fingerprint'][:16]}), "
                     f"{m['arithmetic']} arithmetic")
        lines.append(f"  settings   segments of <= {m['segment_tokens']} tokens, groups of "
                     f"{m['group_size']}, buckets of {m['bucket_size']}, adaptation "
                     f"{m['adaptation']}"
                     + (f", {m['threads']} threads, {m['runtime']}" if m['threads'] else ""))
        n_streams = len(f["stream_bytes"])
        lines.append(f"  decoding   {f['model_tokens']:,} tokens through the model for "
                     f"{f['model_bytes']:,} bytes, in {n_streams} stream"
                     + ("s" if n_streams != 1 else ""))
    lay = f.get("layout")
    if lay:
        cut = (f"{lay['tar_members']:,} members, {lay['text_runs']:,} of them text"
               if lay["kind"] == "tar" else f"{lay['text_runs']:,} text runs")
        lines.append(f"  layout     {lay['kind']}: {cut}; text stream {lay['text_bytes']:,} bytes, "
                     f"binary stream {lay['binary_bytes']:,} bytes "
                     f"({lay['binary_method']} {lay['binary_payload_bytes']:,} B)")
    if f["copies"]:
        lines.append(f"  copies     {f['copies']:,} of earlier bytes, {f['copied_bytes']:,} bytes")
    for b in f["blocks"]:
        extra = f"{b['tokens']:,} tokens" if b["method"] == "model" else f"{b['payload_bytes']:,} B"
        lines.append(f"  block      {b['method']:<7} {b['bytes']:>10,} bytes  {extra}")
    return "\n".join(lines)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
def models(as_json):
    """List the model presets and what is installed and cached."""
    from llmzip.cache import cache_root
    from llmzip.models.presets import list_models
    rows = list_models()
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    for r in rows:
        state = "installed" if r["installed"] else f"not installed ({r['install']})"
        default = " [default]" if r["default"] else ""
        click.echo(f"{r['name']}{default}: {r['description']}; {state}"
                   + (f", {r['size_bytes'] / 1e6:.0f} MB" if r["installed"] else ""))
        for path in r["cached"]:
            click.echo(f"    converted: {path}")
    click.echo(f"cache: {cache_root()}")


@main.command()
@click.argument("files", nargs=-1, required=True)
@click.option("-m", "--model", "models", multiple=True, help="Model to measure (repeatable; "
              "default: smollm2-135m).")
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "json"]), default="md",
              show_default=True, help="Table format on standard output.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Also draw a PNG chart here.")
@click.option("--max-bytes", type=click.IntRange(1), help="Measure only each file's first N bytes.")
@click.option("--threads", type=click.IntRange(1), help="Threads (default: all cores).")
@click.option("-q", "--quiet", is_flag=True, help="No progress on standard error.")
def bench(files, models, fmt, plot, max_bytes, threads, quiet):
    """Compare llmzip with gzip, bzip2, xz, zstd and brotli on FILES (real round trips)."""
    from llmzip.models.presets import DEFAULT_MODEL
    from llmzip.tools import bench as measurements
    from llmzip.tools.baselines import missing
    for name in files:
        if not Path(name).is_file():
            raise Fail(f"{name}: no such file")
    if missing() and not quiet:
        click.echo(f"llmzip: note: {missing()}", err=True)
    bar = BenchProgress(show_progress(quiet))
    rows = measurements.run(files, models or (DEFAULT_MODEL,), max_bytes=max_bytes,
                            codec_settings={"threads": threads}, on_row=bar.row, progress=bar)
    bar.close()
    click.echo(measurements.render(rows, fmt))
    if plot:
        measurements.plot(rows, plot)
    if not all(r.roundtrip_ok for r in rows):
        raise Fail("a round trip failed (see the roundtrip_ok column)", 1)


@main.command()
@click.argument("file")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="HTML page to write (default: FILE.html).")
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing page.")
@click.option("-m", "--model", default=None, help="Model (default: smollm2-135m).")
@click.option("--max-bytes", type=click.IntRange(1), help="Explain only the first N bytes.")
@click.option("--threads", type=click.IntRange(1), help="Threads (default: all cores).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def explain(file, output, force, model, max_bytes, threads, quiet):
    """Write an HTML page showing what every token of FILE cost."""
    from llmzip.codec.codec import Codec
    from llmzip.tools.explain import explain as explain_page
    target = Path(output or file + ".html")
    check_target(file, target, force)
    data = read_input(file)[:max_bytes]
    bar = ProgressBar("explain", show_progress(quiet), bytes_per_token=3.6)
    try:
        page, stats = explain_page(Codec(model, threads=threads), data, Path(file).name,
                                   progress=bar)
    finally:
        bar.close()
    write_atomically(target, page.encode("utf-8"), force, file_mode("-"))
    if not quiet:
        click.echo(f"{target}: {stats.n_tokens:,} tokens, cross-entropy {stats.xent_bpb:.3f} "
                   f"bits/byte, archive {stats.bpb:.3f} bits/byte", err=True)
