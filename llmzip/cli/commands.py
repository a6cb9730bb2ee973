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
from llmzip.cli.progress import BenchProgress, ProgressBar, duration, show_progress
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
            return super().parse_args(ctx, args)

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
@click.version_option(__version__, prog_name="llmzip")
def main():
    """Lossless compression with a language model and a range coder."""


_device = click.option("--device", default="auto", show_default=True,
                       help="Which backend and device run the exact engine: cpu (numba), "
                       "cuda, cuda:N, auto (a GPU where torch sees one) or torch:cpu; "
                       "archives are the same bytes on any.")
_recursive = click.option("-r", "--recursive", is_flag=True,
                          help="Take the files in directories, recursively (as gzip -r).")


class _Team:
    """The processes of this command (`accelerate launch` starts several; see docs/DISTRIBUTED.md):
    a codec for the files they share, one for the files this process codes alone."""

    def __init__(self, make_codec):
        from llmzip.parallel.distributed import Team, join
        self.team = join()
        self.shared, self.alone = make_codec(self.team), make_codec(Team())

    def jobs(self, names, one_stream: bool):
        """This process's jobs, in order; after the last, it waits for the team to finish."""
        from llmzip.parallel.jobs import plan
        yield from [j for j in plan(names, self.team.size, one_stream) if j.mine(self.team.rank)]
        self.team.close()

    def codec(self, job):
        from llmzip.parallel.jobs import SHARED
        return self.shared if job.owner == SHARED else self.alone

    def writer(self, job) -> bool:
        return job.writer(self.team.rank)

    def check_target(self, job, target, force) -> None:
        """Before any work; for a shared file every process learns the writer's verdict."""
        from llmzip.parallel.jobs import SHARED
        def check():
            if self.writer(job):
                check_target(job.name, target, force)
        self.team.agree(check) if job.owner == SHARED else check()


@main.command()
@click.argument("files", nargs=-1, required=True)
@_with_common
@_recursive
@_device
@click.option("-m", "--model", default=None, help="Preset, .gguf file, model directory or "
              "cached Hugging Face id (default: smollm2-135m).")
@click.option("--arithmetic", type=click.Choice(["exact", "float"]), default=None,
              help="exact: decodes on any machine (default where supported); float: only "
              "with the same torch, CPU and threads.")
@click.option("--segment-tokens", type=click.IntRange(16, 8192), default=4096, show_default=True,
              help="Longest context; longer compresses better, decodes slower.")
@click.option("--group-size", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Segments decoded side by side (decoder memory with the default model: "
              "~13 MB per segment per 1,000 tokens).")
@click.option("--adapt", type=click.Choice(["counts", "none"]), default="counts",
              show_default=True, help="counts: mix in what followed each recent context in "
              "the file so far (learns names and repeats); none: the model alone.")
@click.option("--copies/--no-copies", default=True, show_default=True,
              help="Take long repeats out as copies of earlier bytes: 256 bytes or more from 16 KB "
              "back, or 4 KB or more (such an archive is format version 4, which llmzip "
              "before copies cannot read).")
def compress(files, output, to_stdout, force, threads, quiet, verbose, recursive, device, model,
             arithmetic, segment_tokens, group_size, adapt, copies):
    """Compress FILES to FILE.llmz (- reads standard input).

    With -c, the archives go to standard output back to back, as gzip's members do: that
    stream decompresses to the files' contents, in order."""
    from llmzip.codec.codec import Codec
    from llmzip.parallel.jobs import expand
    run = _Team(lambda team: Codec(model, team, arithmetic=arithmetic, threads=threads,
                                   segment_tokens=segment_tokens, group_size=group_size,
                                   adapt=adapt, copies=copies, device=device))
    names = expand(files, recursive, lambda p: not p.name.endswith(SUFFIX))
    targets = dict(output_paths(names, output, to_stdout, archive_name))
    for job in run.jobs(names, one_stream=to_stdout or bool(output)):
        run.check_target(job, targets[job.name], force)
        data = read_input(job.name)
        bar = ProgressBar("compress", show_progress(quiet) and run.writer(job), 3.6)
        try:
            archive, stats = run.codec(job).compress_with_stats(data, progress=bar)
        finally:
            bar.close()
        if run.writer(job):
            emit(archive, job.name, targets[job.name], force, binary=True)
            if not quiet:
                click.echo(_compress_summary(job.name, stats, verbose), err=True)


def _compress_summary(name: str, s, verbose: bool) -> str:
    if not s.original_bytes:  # bits per byte of nothing is no number
        return f"{name}: empty input -> {s.archive_bytes:,} bytes (the header alone)"
    line = f"{name}: {s.original_bytes:,} -> {s.archive_bytes:,} bytes ({s.bpb:.3f} bits/byte"
    if s.n_tokens:
        line += (f"; model cross-entropy {s.xent_bpb:.3f} bits/byte, coder overhead "
                 f"{s.overhead_pct:+.2f}%) in {duration(s.elapsed_s)}"
                 + (f" ({duration(s.load_s)} loading the model)" if s.load_s >= 1 else "")
                 + f", {s.tok_per_s:.0f} tok/s")
    else:
        line += ")"
    if verbose:
        parts = ", ".join(f"{k} {v:,} B" for k, v in s.blocks.items())
        line += f"\n  model {s.model or '-'} ({s.arithmetic or '-'}), {s.n_tokens:,} tokens; " \
                f"blocks: {parts or 'none'}"
    return line


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


def _decoders(model, threads, batch, memory, device) -> _Team:
    from llmzip.codec.codec import Codec
    return _Team(lambda team: Codec(model, team, threads=threads, decode_batch=batch,
                                    decode_memory_mb=memory, device=device))


def _archives(files, recursive) -> list[str]:
    from llmzip.parallel.jobs import expand
    return expand(files, recursive, lambda p: p.name.endswith(SUFFIX))


@main.command()
@click.argument("files", nargs=-1, required=True)
@_with_common
@_with_decoding
def decompress(files, output, to_stdout, force, threads, quiet, verbose, model, batch, memory,
               recursive, device):
    """Decompress FILE.llmz to FILE, checking its checksum."""
    run = _decoders(model, threads, batch, memory, device)
    names = _archives(files, recursive)
    targets = dict(output_paths(names, output, to_stdout, original_name))
    for job in run.jobs(names, one_stream=to_stdout or bool(output)):
        run.check_target(job, targets[job.name], force)
        data, elapsed = _decompress_one(job.name, run.codec(job),
                                        show_progress(quiet) and run.writer(job))
        if run.writer(job):
            emit(data, job.name, targets[job.name], force, binary=False)
            if not quiet:
                click.echo(f"{job.name}: {len(data):,} bytes restored in {duration(elapsed)}, "
                           "checksum OK", err=True)


@main.command(name="test")
@click.argument("files", nargs=-1, required=True)
@click.option("--threads", type=click.IntRange(1), help="Threads (default: all cores).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@_with_decoding
def test_command(files, threads, quiet, model, batch, memory, recursive, device):
    """Decode FILES and verify them without writing anything."""
    run = _decoders(model, threads, batch, memory, device)
    for job in run.jobs(_archives(files, recursive), one_stream=False):
        data, elapsed = _decompress_one(job.name, run.codec(job),
                                        show_progress(quiet) and run.writer(job))
        if run.writer(job) and not quiet:
            click.echo(f"{job.name}: OK ({len(data):,} bytes, {duration(elapsed)})", err=True)


@main.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file.")
def info(files, as_json):
    """Show an archive's header: sizes, bits per byte, model, settings and declared work."""
    from llmzip.container import describe, split_members
    for name in files:
        try:
            members = [describe(member) for member in split_members(read_input(name))]
        except LlmzipError as exc:
            raise type(exc)(f"{name}: {exc}") from None
        for number, facts in enumerate(members, 1):
            label = name if len(members) == 1 else f"{name} (member {number} of {len(members)})"
            facts = {"file": name, **({"member": number} if len(members) > 1 else {}), **facts}
            click.echo(json.dumps(facts) if as_json else _format_info(label, facts))


def _format_info(label: str, f: dict) -> str:
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
