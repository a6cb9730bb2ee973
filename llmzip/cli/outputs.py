"""Where results go: files that appear whole or not at all, standard output, and names.

An existing output is never replaced without -f, an input is never written, binary data
never goes to a terminal, and a file appears (a temporary file renamed into place) only
once its whole job has succeeded.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from llmzip.cli.failures import SIGNALS, Fail
from llmzip.files import written_whole

SUFFIX = ".llmz"


def read_input(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    path = Path(name)
    if path.is_dir():
        raise Fail(f"{name}: is a directory")
    return path.read_bytes()


def file_mode(source: str) -> int:
    """The input's permission bits (as gzip keeps them), else what umask allows."""
    if source != "-" and Path(source).is_file():
        return Path(source).stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def check_target(source: str, target: Path | None, force: bool, needed_bytes: int = 1) -> None:
    """Before any work, so that a run never does minutes of coding to fail at the end: the
    output may not exist (unless -f), be the input, a directory or a device (but the null
    device), and its directory must take a new file and, where the file system says,
    needed_bytes. Every error names the path the user gave."""
    if target is None or str(target) == os.devnull:
        return
    if target.exists():
        if target.is_dir():
            raise Fail(f"{target}: is a directory")
        if not target.is_file():
            raise Fail(f"{target}: not a regular file (to write to a device, use -c)")
        if source != "-" and Path(source).exists() and target.samefile(source):
            raise Fail(f"{target}: output would overwrite its own input")
        if not force:
            raise Fail(f"{target} already exists; use -f to overwrite")
    directory = target.parent
    if not directory.is_dir():
        raise Fail(f"{target}: no such directory: {directory}")
    _probe(target)
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    if needed_bytes > free:
        raise Fail(f"{target}: needs {needed_bytes:,} bytes, and its file system has "
                   f"{free:,} free")


def _probe(target: Path) -> None:
    """Create and remove an empty file beside target: the one check that finds every
    reason a directory refuses files (permissions, an immutable flag, a read-only mount)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".probe", dir=target.parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise Fail(f"{target}: cannot be written ({exc.strerror})") from None


def write_atomically(path: Path, data: bytes, force: bool, mode: int) -> None:
    """Write to a temporary file beside `path`, then rename it over `path`.

    A signal meanwhile waits; if one came, the temporary file is removed instead of
    renamed. On any failure (a full disk) the temporary file is removed too, and the error
    names `path`: either the whole output appears or nothing does.
    """
    if str(path) == os.devnull:  # read, coded, checked and discarded, as zstd -o /dev/null
        return
    if path.exists() and not force:
        raise Fail(f"{path} already exists; use -f to overwrite")
    with SIGNALS.held_back():
        try:
            with written_whole(path) as f:
                f.write(data)
                os.chmod(f.fileno(), mode)
                SIGNALS.raise_pending()
        except OSError as exc:
            if not exc.filename:
                raise OSError(exc.errno, exc.strerror, str(path)) from None
            raise


def write_stdout(data: bytes) -> None:
    """All of `data` or an error naming standard output (a signal waits for the write)."""
    with SIGNALS.held_back():
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except OSError as exc:
            discard_stdout()
            raise OSError(exc.errno, exc.strerror, "standard output") from None


def discard_stdout() -> None:
    """Point standard output at /dev/null after a failed write: Python would otherwise flush
    the bytes left in its buffer again at exit and print a second, multi-line error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def emit(data: bytes, source: str, target: Path | None, force: bool, binary: bool) -> None:
    if target is None:
        if binary and sys.stdout.isatty() and not force:
            raise Fail("refusing to write compressed data to a terminal; use -o FILE or "
                        "redirect (or -f)")
        write_stdout(data)
    else:
        write_atomically(target, data, force, file_mode(source))


def output_paths(inputs, output, to_stdout, make_name):
    """(input name, output path or None for stdout) for each input."""
    if output and len(inputs) > 1:
        raise Fail("-o takes a single input file")
    for name in inputs:
        if to_stdout or (name == "-" and not output):
            yield name, None
        elif output:
            yield name, Path(output)
        else:
            yield name, make_name(name)


def archive_name(name: str) -> Path:
    return Path(name + SUFFIX)


def original_name(name: str) -> Path:
    if not name.endswith(SUFFIX):
        raise Fail(f"{name}: unknown suffix (expected {SUFFIX}); use -o or -c")
    return Path(name[:-len(SUFFIX)])
