"""Reading what a run left in its directory, as the facility (root) reads it: never through a link the run planted.

A run owns its directory and may replace any file there with a symbolic link to the facility database or another
user's table; these readers open with ``O_NOFOLLOW``, accept only regular files, and read a bounded amount — the
tail of a log is read from the end, not by loading the whole file.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

#: Largest result.json / error.json / progress.json the facility reads from a run.
MAX_JSON_BYTES = 8 << 20


def _open(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def read_bytes(path: str | Path, limit: int = MAX_JSON_BYTES) -> bytes | None:
    """At most ``limit`` bytes of a regular file (None for a link, a device, a FIFO or no file)."""
    fd = _open(Path(path))
    if fd is None:
        return None
    try:
        with os.fdopen(fd, "rb") as fh:
            return fh.read(limit)
    except OSError:
        return None


def read_json(path: str | Path, limit: int = MAX_JSON_BYTES):
    """The JSON document in a run's file, or None when it is absent, not a regular file, too big or not JSON."""
    data = read_bytes(path, limit + 1)
    if data is None or len(data) > limit:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def tail_lines(path: str | Path, lines: int | None, block: int = 64 << 10, limit: int = 32 << 20) -> str:
    """The last ``lines`` lines (all, up to ``limit`` bytes, for None/0), reading backwards from the end."""
    fd = _open(Path(path))
    if fd is None:
        return ""
    with os.fdopen(fd, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        if not lines:
            fh.seek(max(0, size - limit))
            return fh.read().decode(errors="replace").rstrip("\n")
        pos, chunks, count = size, [], 0
        while pos > 0 and count <= lines and size - pos < limit:
            step = min(block, pos)
            pos -= step
            fh.seek(pos)
            chunk = fh.read(step)
            chunks.append(chunk)
            count += chunk.count(b"\n")
        text = b"".join(reversed(chunks)).decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


__all__ = ["MAX_JSON_BYTES", "read_bytes", "read_json", "tail_lines"]
