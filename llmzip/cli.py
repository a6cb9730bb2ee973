"""The llmzip command: parse, call one library function, print.

Behaves like gzip and zstd: inputs are kept, an existing output is never replaced without
-f, binary data is never written to a terminal, and output appears (atomically, via a
temporary file renamed into place) only after the whole job succeeded. Every LlmzipError
becomes one line on stderr and its exit code (1 error, 2 corrupt or mismatched archive),
in `_errors_to_exit_codes`, the only place that maps them. Ctrl-C and SIGTERM stop any
command with `llmzip: interrupted` and exit code 130 or 143, leaving no temporary file and
no partial output; nothing ever writes to an input.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import click

from . import __version__
from .errors import LlmzipError
from .files import written_whole

SUFFIX = ".llmz"


def _one_line(text: str) -> str:
    """Messages may quote file and model names: escape whatever would break the line or
    drive the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class _Fail(click.ClickException):
    """A one-line error with an exit code, printed as 'llmzip: message'."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None):
        click.echo(f"llmzip: {_one_line(self.format_message())}", err=True)


@contextlib.contextmanager
def _errors_to_exit_codes():
    """Library errors to one line and an exit code. Anything else is a bug in llmzip: it still
    gets one line (and exit 1), asking for a report, never a traceback."""
    try:
        yield
    except click.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `llmzip`: click prints help
            raise
        raise _Fail(_usage_line(exc), 1) from None
    except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
        raise
    except LlmzipError as exc:
        raise _Fail(str(exc), exc.exit_code) from None
    except OSError as exc:
        name = f"{exc.filename}: " if exc.filename else ""
        raise _Fail(f"{name}{exc.strerror or exc}", 1) from None
    except MemoryError:
        raise _Fail("out of memory (try a smaller --group-size)", 1) from None
    except KeyboardInterrupt:
        raise _Fail("interrupted", 128 + signal.SIGINT) from None
    except Exception as exc:
        raise _Fail(f"internal error: {type(exc).__name__}: {exc} (please report)", 1) from None


def _team_prefix() -> str:
    """'process 1 of 2: ' under a launcher that started several (which stops them all when
    one fails, and names the one that failed), else nothing."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return f"process {os.environ.get('RANK', '?')} of {size}: " if size > 1 else ""


def _usage_line(exc: click.UsageError) -> str:
    """click's usage error as one line; exit code 2 is kept for archives that are bad."""
    hint = f"; see '{exc.ctx.command_path} -h'" if exc.ctx is not None else ""
    return exc.format_message().rstrip(".") + hint


# --- interruption ----------------------------------------------------------------------------

class _Interrupted(BaseException):
    """SIGINT or SIGTERM. Not a KeyboardInterrupt, so that click does not turn it into
    'Aborted!'; it unwinds every `finally` to `_Llmzip.main`, which reports it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _importing(frame) -> bool:
    """Is this frame, or one that called it, running an import?"""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


class _Signals:
    """Turns SIGINT and SIGTERM into _Interrupted, except while output is being put in place
    (`held_back`), where the signal waits until the output is whole or removed.

    Every signal is also remembered until it is raised: Python runs a handler wherever the
    main thread is, and an exception raised inside a ctypes callback or a `__del__` is
    dropped (numba compiling on a first run is inside llvmlite's callbacks much of the time;
    CI once saw a Ctrl-C ignored that way). `checkpoint`, called on every progress report and
    before any output is written, raises a signal that was dropped; the drop itself prints
    nothing. A signal that lands inside an import waits for the next checkpoint too: torch
    half imported (the decoder imports it for its int8 matmul) aborted the process at exit
    (SIGABRT, not exit code 143; seen 1 time in ~40 under load)."""

    def __init__(self):
        self.holding = 0
        self.pending: int | None = None

    def handler(self, signum, frame):
        self.pending = self.pending or signum
        if not self.holding and not _importing(frame):
            raise _Interrupted(signum)  # `pending` stays set in case this one is dropped

    def raise_pending(self) -> None:
        if self.pending:
            signum, self.pending = self.pending, None
            raise _Interrupted(signum)

    def checkpoint(self) -> None:
        """Raise a signal that came and was dropped (outside `held_back`)."""
        if not self.holding:
            self.raise_pending()

    @contextlib.contextmanager
    def held_back(self):
        self.checkpoint()  # a dropped signal stops the command before its output is written
        self.holding += 1
        try:
            yield
        finally:
            self.holding -= 1
        if not self.holding:
            self.raise_pending()

    @contextlib.contextmanager
    def installed(self):
        """Handlers for the length of one command (only the main thread may set them)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self.holding, self.pending = 0, None
        previous = {s: signal.signal(s, self.handler) for s in (signal.SIGINT, signal.SIGTERM)}
        previous_hook = sys.unraisablehook

        def quiet_about_dropped_signals(unraisable):  # no traceback: it is raised again later
            if not isinstance(unraisable.exc_value, _Interrupted):
                previous_hook(unraisable)
        sys.unraisablehook = quiet_about_dropped_signals
        try:
            yield
        finally:
            sys.unraisablehook = previous_hook
            for signum, handler in previous.items():
                signal.signal(signum, handler)


_SIGNALS = _Signals()


class _Llmzip(click.Group):
    """The command group: every command runs with the signal handlers and error mapping, and
    usage errors are one line too."""

    def main(self, *args, **kwargs):
        with _SIGNALS.installed():
            try:
                return super().main(*args, **kwargs)
            except _Interrupted as exc:
                _Fail(_team_prefix() + "interrupted").show()
                sys.exit(128 + exc.signum)

    def parse_args(self, ctx, args):
        with _errors_to_exit_codes():
            return super().parse_args(ctx, args)

    def invoke(self, ctx):
        with _errors_to_exit_codes():
            return super().invoke(ctx)


# --- files -----------------------------------------------------------------------------------

def _read_input(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    path = Path(name)
    if path.is_dir():
        raise _Fail(f"{name}: is a directory")
    return path.read_bytes()


def _file_mode(source: str) -> int:
    """The input's permission bits (as gzip keeps them), else what umask allows."""
    if source != "-" and Path(source).is_file():
        return Path(source).stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _check_target(source: str, target: Path | None, force: bool) -> None:
    """Before any work: the output may not exist (unless -f) and may never be the input."""
    if target is None or not target.exists():
        return
    if source != "-" and Path(source).exists() and target.samefile(source):
        raise _Fail(f"{target}: output would overwrite its own input")
    if not force:
        raise _Fail(f"{target} already exists; use -f to overwrite")


def _write_atomically(path: Path, data: bytes, force: bool, mode: int) -> None:
    """Write to a temporary file beside `path`, then rename it over `path`.

    A signal meanwhile waits; if one came, the temporary file is removed instead of
    renamed. On any failure (a full disk) the temporary file is removed too, and the error
    names `path`: either the whole output appears or nothing does.
    """
    if path.exists() and not force:
        raise _Fail(f"{path} already exists; use -f to overwrite")
    with _SIGNALS.held_back():
        try:
            with written_whole(path) as f:
                f.write(data)
                os.chmod(f.fileno(), mode)
                _SIGNALS.raise_pending()
        except OSError as exc:
            if not exc.filename:
                raise OSError(exc.errno, exc.strerror, str(path)) from None
            raise


def _write_stdout(data: bytes) -> None:
    """All of `data` or an error naming standard output (a signal waits for the write)."""
    with _SIGNALS.held_back():
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except OSError as exc:
            _discard_stdout()
            raise OSError(exc.errno, exc.strerror, "standard output") from None


def _discard_stdout() -> None:
    """Point standard output at /dev/null after a failed write: Python would otherwise flush
    the bytes left in its buffer again at exit and print a second, multi-line error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _emit(data: bytes, source: str, target: Path | None, force: bool, binary: bool) -> None:
    if target is None:
        if binary and sys.stdout.isatty() and not force:
            raise _Fail("refusing to write compressed data to a terminal; use -o FILE or "
                        "redirect (or -f)")
        _write_stdout(data)
    else:
        _write_atomically(target, data, force, _file_mode(source))


def _targets(inputs, output, to_stdout, make_name):
    """(input name, output path or None for stdout) for each input."""
    if output and len(inputs) > 1:
        raise _Fail("-o takes a single input file")
    for name in inputs:
        if to_stdout or (name == "-" and not output):
            yield name, None
        elif output:
            yield name, Path(output)
        else:
            yield name, make_name(name)


def _archive_name(name: str) -> Path:
    return Path(name + SUFFIX)


def _original_name(name: str) -> Path:
    if not name.endswith(SUFFIX):
        raise _Fail(f"{name}: unknown suffix (expected {SUFFIX}); use -o or -c")
    return Path(name[:-len(SUFFIX)])


# --- progress --------------------------------------------------------------------------------

class _ProgressBar:
    """tqdm on stderr while a terminal watches: tokens/s and the running bits per byte."""

    def __init__(self, label: str, enabled: bool, bytes_per_token: float = 0.0):
        self.label, self.enabled, self.bytes_per_token = label, enabled, bytes_per_token
        self.bar = None

    def __call__(self, done: int, total: int, bits: float) -> None:
        _SIGNALS.checkpoint()
        if not self.enabled or total == 0:
            return
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=self.label, unit="tok", file=sys.stderr,
                            leave=False, dynamic_ncols=True)
        self.bar.update(done - self.bar.n)
        if bits and done:
            self.bar.set_postfix_str(f"{bits / (done * self.bytes_per_token or 1):.3f} bpb",
                                     refresh=False)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _show_progress(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


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


_device = click.option("--device", default="cpu", show_default=True,
                       help="Where the matrix products run: cpu, cuda, cuda:N or auto "
                       "(archives are the same bytes on any device).")
_recursive = click.option("-r", "--recursive", is_flag=True,
                          help="Take the files in directories, recursively (as gzip -r).")


class _Team:
    """The processes of this run (`accelerate launch` starts several; see docs/DISTRIBUTED.md):
    a codec for the files they share, one for the files this process codes alone."""

    def __init__(self, make_codec):
        from .distributed import Team, join
        self.team = join()
        self.shared, self.alone = make_codec(self.team), make_codec(Team())

    def jobs(self, names, one_stream: bool):
        """This process's jobs, in order; after the last, it waits for the team to finish."""
        from .jobs import plan
        yield from [j for j in plan(names, self.team.size, one_stream) if j.mine(self.team.rank)]
        self.team.close()

    def codec(self, job):
        from .jobs import SHARED
        return self.shared if job.owner == SHARED else self.alone

    def writer(self, job) -> bool:
        return job.writer(self.team.rank)

    def check_target(self, job, target, force) -> None:
        """Before any work; for a shared file every process learns the writer's verdict."""
        from .jobs import SHARED
        def check():
            if self.writer(job):
                _check_target(job.name, target, force)
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
    from .codec import Codec
    from .jobs import expand
    run = _Team(lambda team: Codec(model, team, arithmetic=arithmetic, threads=threads,
                                   segment_tokens=segment_tokens, group_size=group_size,
                                   adapt=adapt, copies=copies, device=device))
    names = expand(files, recursive, lambda p: not p.name.endswith(SUFFIX))
    targets = dict(_targets(names, output, to_stdout, _archive_name))
    for job in run.jobs(names, one_stream=to_stdout or bool(output)):
        run.check_target(job, targets[job.name], force)
        data = _read_input(job.name)
        bar = _ProgressBar("compress", _show_progress(quiet) and run.writer(job), 3.6)
        try:
            archive, stats = run.codec(job).compress_with_stats(data, progress=bar)
        finally:
            bar.close()
        if run.writer(job):
            _emit(archive, job.name, targets[job.name], force, binary=True)
            if not quiet:
                click.echo(_compress_summary(job.name, stats, verbose), err=True)


def _compress_summary(name: str, s, verbose: bool) -> str:
    if not s.original_bytes:  # bits per byte of nothing is no number
        return f"{name}: empty input -> {s.archive_bytes:,} bytes (the header alone)"
    line = f"{name}: {s.original_bytes:,} -> {s.archive_bytes:,} bytes ({s.bpb:.3f} bits/byte"
    if s.n_tokens:
        line += (f"; model cross-entropy {s.xent_bpb:.3f} bits/byte, coder overhead "
                 f"{s.overhead_pct:+.2f}%) in {_duration(s.elapsed_s)}"
                 + (f" ({_duration(s.load_s)} loading the model)" if s.load_s >= 1 else "")
                 + f", {s.tok_per_s:.0f} tok/s")
    else:
        line += ")"
    if verbose:
        parts = ", ".join(f"{k} {v:,} B" for k, v in s.blocks.items())
        line += f"\n  model {s.model or '-'} ({s.arithmetic or '-'}), {s.n_tokens:,} tokens; " \
                f"blocks: {parts or 'none'}"
    return line


def _decompress_one(name: str, codec, show: bool) -> tuple[bytes | None, float]:
    blob = _read_input(name)
    bar = _ProgressBar("decompress", show)
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
    from .codec import Codec
    return _Team(lambda team: Codec(model, team, threads=threads, decode_batch=batch,
                                    decode_memory_mb=memory, device=device))


def _archives(files, recursive) -> list[str]:
    from .jobs import expand
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
    targets = dict(_targets(names, output, to_stdout, _original_name))
    for job in run.jobs(names, one_stream=to_stdout or bool(output)):
        run.check_target(job, targets[job.name], force)
        data, elapsed = _decompress_one(job.name, run.codec(job),
                                        _show_progress(quiet) and run.writer(job))
        if run.writer(job):
            _emit(data, job.name, targets[job.name], force, binary=False)
            if not quiet:
                click.echo(f"{job.name}: {len(data):,} bytes restored in {_duration(elapsed)}, "
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
                                        _show_progress(quiet) and run.writer(job))
        if run.writer(job) and not quiet:
            click.echo(f"{job.name}: OK ({len(data):,} bytes, {_duration(elapsed)})", err=True)


@main.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file.")
def info(files, as_json):
    """Show an archive's header: sizes, bits per byte, model, settings and declared work."""
    from .container import describe, split_members
    for name in files:
        try:
            members = [describe(member) for member in split_members(_read_input(name))]
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
    from .models import cache_root, list_models
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
    from . import bench as measurements
    from .models import DEFAULT_MODEL
    for name in files:
        if not Path(name).is_file():
            raise _Fail(f"{name}: no such file")
    bar = _BenchProgress(_show_progress(quiet))
    rows = measurements.run(files, models or (DEFAULT_MODEL,), max_bytes=max_bytes,
                            codec_settings={"threads": threads}, on_row=bar.row, progress=bar)
    bar.close()
    click.echo(measurements.render(rows, fmt))
    if plot:
        measurements.plot(rows, plot)
    if not all(r.roundtrip_ok for r in rows):
        raise _Fail("a round trip failed (see the roundtrip_ok column)", 1)


class _BenchProgress:
    """A bar per llmzip phase and a line per finished row, on stderr."""

    def __init__(self, enabled: bool):
        self.enabled, self.bar, self.phase = enabled, None, None

    def __call__(self, phase: str, done: int, total: int, bits: float) -> None:
        _SIGNALS.checkpoint()
        if not self.enabled:
            return
        if phase != self.phase:
            self.close()
            self.bar, self.phase = _ProgressBar(phase, True, bytes_per_token=3.6), phase
        self.bar(done, total, bits)

    def row(self, r) -> None:
        self.close()
        if self.enabled:
            click.echo(f"  {r.file}: {r.compressor}: {r.bpb:.3f} bits/byte "
                       f"({r.compress_s:.1f} s + {r.decompress_s:.1f} s)", err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.phase = None, None


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
    from .codec import Codec
    from .explain import explain as explain_page
    target = Path(output or file + ".html")
    _check_target(file, target, force)
    data = _read_input(file)[:max_bytes]
    bar = _ProgressBar("explain", _show_progress(quiet), bytes_per_token=3.6)
    try:
        page, stats = explain_page(Codec(model, threads=threads), data, Path(file).name,
                                   progress=bar)
    finally:
        bar.close()
    _write_atomically(target, page.encode("utf-8"), force, _file_mode("-"))
    if not quiet:
        click.echo(f"{target}: {stats.n_tokens:,} tokens, cross-entropy {stats.xent_bpb:.3f} "
                   f"bits/byte, archive {stats.bpb:.3f} bits/byte", err=True)
