"""Atomic file writes for everything the project saves (checkpoints, ONNX files, TensorRT engines, flow
images, sidecars): the data goes to a temporary file beside the target, is fsynced, then os.replace'd onto
it, so a reader or a crash never sees a half-written file, and nothing is overwritten unless asked.

Written files get the permissions a plain ``open(path, "w")`` gives: a new file is created with mode 0o666
minus the umask (``tempfile.mkstemp`` would make every model 0600, unreadable to a node running as another
user), and a replaced file keeps the mode it had.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def _create_temporary(path: Path) -> Path:
    """Create an empty, uniquely named file beside ``path`` with the same suffix. The kernel applies the
    umask to mode 0o666 exactly as for ``open(..., "w")``; reading the umask here instead would need
    ``os.umask`` set-and-restore, which races with other threads creating files."""
    suffix = path.suffix or ".tmp"
    for _ in range(100):
        name = path.parent / f".{path.name}.{secrets.token_hex(6)}{suffix}"
        try:
            os.close(os.open(name, _CREATE_FLAGS, 0o666))
        except FileExistsError:
            continue
        return name
    raise FileExistsError(f"could not create a unique temporary file beside {path}")


@contextmanager
def atomic_path(
    path: str | os.PathLike,
    *,
    overwrite: bool = True,
    make_parents: bool = True,
    how_to_overwrite: str = "pass overwrite=True to replace it",
) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so writers that pick a format by extension
    work); when the block ends without an exception the file is fsynced and moved onto ``path``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; {how_to_overwrite}")
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.parent.is_dir():
        raise FileNotFoundError(f"output directory {path.parent} does not exist")
    tmp = _create_temporary(path)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        try:  # replacing: keep the target's permissions, as writing into it in place would
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        except FileNotFoundError:
            pass
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)
