"""The user's cache directory, and its entries: built under a lock, written aside, renamed in.

Converted models (`models.gguf`), integer weights (`engine.exact.weights`) and the exact
arithmetic's tables (`engine.exact.tables`) live here; concurrent runs never see half an
entry, and each kind checks its own entries' digests on load.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["cache_root", "locked", "new_entry"]


def cache_root() -> Path:
    """$LLMZIP_CACHE, else $XDG_CACHE_HOME/llmzip, else ~/.cache/llmzip."""
    if os.environ.get("LLMZIP_CACHE"):
        return Path(os.environ["LLMZIP_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "llmzip"


@contextlib.contextmanager
def locked(target: Path):
    """An exclusive lock on target's entry, held across processes while it is (re)built."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def new_entry(target: Path):
    """A fresh temporary directory that becomes target (replacing it) if the block succeeds."""
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield work
        shutil.rmtree(target, ignore_errors=True)
        os.replace(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
