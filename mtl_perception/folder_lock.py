"""One writer per output folder: an OS lock that a second process meets at once and the kernel releases when
the holder ends, however it ends (SIGKILL and power cuts included, so no stale lock ever blocks a rerun).

``folder_lock(folder, flag="--output_dir")`` holds ``flock`` on ``folder/.lock`` for the ``with`` block (the
tools hold it for their whole run). The file keeps the holder's PID and host, so the refusal says who has
the folder; the file itself stays (deleting it would let a third process lock a new file while a second
still waits on the old one). Processes forked by the holder share the lock (it belongs to the open file,
which they inherit); processes it executes do not get the descriptor. Stdlib only, at the bottom of the
package beside ``atomic`` and ``cli``.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".lock"


class FolderInUse(OSError):
    """Another live process holds the folder's lock (an OSError without errno: one line, exit 2)."""


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
    except OSError:
        text = []
    if len(text) >= 2 and text[0].isdigit():
        return f"PID {text[0]} on {text[1]}" + (f" ({text[2]})" if len(text) > 2 else "")
    return "a process that is starting"  # locked, its PID not written yet


@contextmanager
def folder_lock(folder: str | os.PathLike, *, flag: str = "--output_dir") -> Iterator[Path]:
    """Create ``folder`` if needed and hold its lock for the block; :class:`FolderInUse` naming the folder
    (as ``flag``) and the holder's PID when another process holds it. Yields the lock file's path."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{flag} {folder} is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderInUse(
                f"{flag} {folder} is in use by another run ({_holder(fd)} holds {path}); wait for it to end "
                "or choose another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {Path(sys.argv[0]).name}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock
