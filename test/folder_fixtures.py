"""Folders in the states that real runs meet: held by another process's lock, on a full disk, read-only.

A full or read-only disk is a small tmpfs mounted for the test (needs root, as in the project's containers);
without the privilege the full disk falls back to RLIMIT_FSIZE (the kernel then ends a write with EFBIG,
"file too large", instead of ENOSPC: the same error path through the code)."""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HOLD = """
import sys, time
from mtl_perception.folder_lock import folder_lock
with folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


@contextmanager
def held_by_another_process(folder: Path) -> Iterator[subprocess.Popen]:
    """Another process holding ``folder``'s run lock for the block (killed afterwards)."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "held"
        yield process
    finally:
        process.kill()
        process.wait(10)


def digests(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` (hidden ones included) by content, but the lock file: it names whoever
    held the folder last."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def _mount(folder: Path, options: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    return done.returncode == 0


class SmallDisk:
    """A folder on a small file system; ``words``: how a write that does not fit fails."""

    def __init__(self, folder: Path, mounted: bool, rlimit_mb: int) -> None:
        self.folder, self.mounted, self.rlimit_mb = folder, mounted, rlimit_mb
        self.words = "no space left on device" if mounted else "file too large"

    @contextmanager
    def full(self) -> Iterator[None]:
        """While the block runs the disk is small: a tmpfs is so all along; otherwise no file of this
        process may exceed ``rlimit_mb``."""
        if self.mounted:
            yield
            return
        limits = resource.getrlimit(resource.RLIMIT_FSIZE)
        handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.rlimit_mb << 20, limits[1]))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, limits)
            signal.signal(signal.SIGXFSZ, handler)


@contextmanager
def small_disk(folder: Path, size_mb: int, rlimit_mb: int) -> Iterator[SmallDisk]:
    """``folder`` on a ``size_mb`` tmpfs for the block, or (without mount privileges) a plain folder whose
    ``full()`` limits file sizes to ``rlimit_mb``."""
    mounted = _mount(folder, f"size={size_mb}m")
    try:
        yield SmallDisk(folder, mounted, rlimit_mb)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=True)


@contextmanager
def read_only_folder(folder: Path) -> Iterator[bool]:
    """``folder`` on a read-only file system for the block; yields False (nothing mounted) without root."""
    mounted = _mount(folder, "ro,size=1m")
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=True)
