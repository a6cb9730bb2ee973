"""Files that appear whole or not at all: the user's outputs and the cache's small files alike.

A file is written beside its destination under a temporary name and renamed over it, so a
reader (another run, or the user) sees the old file or the new one, never a part; if
writing fails or is interrupted, the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

__all__ = ["written_whole", "read_json"]


@contextlib.contextmanager
def written_whole(path: Path, text: bool = False):
    """Yields a file open for writing; on leaving the block it replaces `path`, or, if the
    block raised, it is removed and the exception goes on."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w" if text else "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> dict:
    """A small JSON file's object; {} when it is absent or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
