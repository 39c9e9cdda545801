"""Atomic file writes for everything the project saves (checkpoints, ONNX files, TensorRT engines, flow
images, sidecars): the data goes to a temporary file beside the target, is fsynced, then os.replace'd onto
it, so a reader or a crash never sees a half-written file, and nothing is overwritten unless asked.

Files that belong together are replaced together: ``atomic_group`` holds back the renames of the writes in
its block and does them all at its end; ``replaced_folder`` builds a folder beside its target and swaps it
in whole. ``check_writable`` finds, before the work, the error writing a file would end with.

Written files get the permissions a plain ``open(path, "w")`` gives: a new file is created with mode 0o666
minus the umask (``tempfile.mkstemp`` would make every model 0600, unreadable to a node running as another
user), and a replaced file keeps the mode it had.

Leftovers of killed writers: a temporary file (or staging folder) is flock'ed by its writer for as long as
it lives. An exception -- including the ones the CLI entry turns SIGINT/SIGTERM into -- removes it; after a
SIGKILL or a power cut the lock is gone with the process, and the next write into the same folder removes
every unlocked leftover (once per folder and process). A lock, not a PID, decides: PIDs are reused and
differ between containers sharing a volume, a lock held by a live writer is seen by every process.
"""

from __future__ import annotations

import contextvars
import errno
import fcntl
import os
import re
import secrets
import shutil
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from mtl_perception.signals import signals_deferred

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
_TOKEN = re.compile(r"\.~[0-9a-f]{12}")  # marks every temporary name this module makes
_swept: set[Path] = set()
#: the writes of the innermost ``atomic_group`` block: (temporary, target, lock) waiting for their rename
_group: contextvars.ContextVar[list[tuple[Path, Path, int]] | None] = contextvars.ContextVar(
    "atomic_group", default=None
)


def _token() -> str:
    return f".~{secrets.token_hex(6)}"


def temporary_name_of(name: str) -> bool:
    """True for the names of this module's temporary files and staging folders (tools skip them)."""
    return name.startswith(".") and _TOKEN.search(name) is not None


def _lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def sweep_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files and staging folders in ``folder`` that no live writer holds (left by a
    killed run); returns what was removed. Folders already swept by this process are skipped."""
    folder = Path(folder)
    key = folder.resolve()
    if key in _swept:
        return []
    _swept.add(key)
    removed = []
    try:
        entries = [e for e in os.scandir(folder) if temporary_name_of(e.name)]
    except OSError:
        return removed
    for entry in entries:
        try:
            fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            continue
        try:
            if not _lock(fd):
                continue  # a live writer
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _create_locked(make, path: Path, suffix: str) -> tuple[Path, int]:
    """Create a uniquely named hidden entry beside ``path`` with ``make(name)`` and hold its lock. A
    sweeper may remove the entry between creation and locking: then its link count is 0, and we retry."""
    for _ in range(100):
        name = path.parent / f".{path.name}{_token()}{suffix}"
        try:
            make(name)
        except FileExistsError:
            continue
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink > 0:
            return name, fd
        os.close(fd)
    raise FileExistsError(f"could not create a unique temporary file beside {path}")


def _make_file(name: Path) -> None:
    # The kernel applies the umask to mode 0o666 exactly as for ``open(..., "w")``; reading the umask here
    # instead would need ``os.umask`` set-and-restore, which races with other threads creating files.
    os.close(os.open(name, _CREATE_FLAGS, 0o666))


def _check_folders_above(path: Path) -> None:
    """A file where a folder of ``path`` should be: say so (mkdir would report "file exists")."""
    for folder in path.parents:
        if folder.exists():
            if not folder.is_dir():
                raise NotADirectoryError(f"{folder} is a file, so {path} cannot be written below it")
            return


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
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; expected a file path")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; {how_to_overwrite}")
    _check_folders_above(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.parent.is_dir():
        raise FileNotFoundError(f"output directory {path.parent} does not exist")
    sweep_stale_temporaries(path.parent)
    tmp = lock = None
    group = _group.get()
    try:
        # SIGINT/SIGTERM held back while the file is made, so the name is known to the cleanup below
        # before a signal can end the run (a signal there once left the temporary behind).
        with signals_deferred():
            tmp, lock = _create_locked(_make_file, path, path.suffix or ".tmp")
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        try:  # replacing: keep the target's permissions, as writing into it in place would
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        except FileNotFoundError:
            pass
        if group is not None:  # renamed with the rest of its group
            group.append((tmp, path, lock))
            tmp = lock = None
        else:
            os.replace(tmp, path)
    except OSError as error:
        if error.errno is None or error.filename not in (None, str(tmp), tmp):
            raise
        # the user asked for ``path``; an error naming the hidden temporary, or no file at all (a write
        # that hit a full disk), would puzzle them
        raise type(error)(error.errno, f"{error.strerror} (writing it)", str(path)) from error
    finally:
        if tmp is not None:
            with suppress(FileNotFoundError):
                tmp.unlink()
            os.close(lock)


@contextmanager
def atomic_group() -> Iterator[None]:
    """Every ``atomic_path`` write made in the block (this thread) is renamed into place when the block
    ends, all together, with SIGINT/SIGTERM held back meanwhile; an exception in the block (a full disk, a
    signal) keeps every old file. Files that refer to each other -- a checkpoint and the records of it --
    are never left at different versions. Inside another group, the writes join the outer one."""
    if _group.get() is not None:
        yield
        return
    pending: list[tuple[Path, Path, int]] = []
    token = _group.set(pending)
    try:
        yield
        with signals_deferred():
            while pending:
                tmp, path, lock = pending[0]
                os.replace(tmp, path)
                pending.pop(0)
                os.close(lock)
    finally:
        _group.reset(token)
        for tmp, _, lock in pending:
            with suppress(FileNotFoundError):
                tmp.unlink()
            os.close(lock)


def check_writable(path: str | os.PathLike) -> None:
    """Raise the error that writing the file ``path`` (parents created as needed) would end with, before
    the work that produces it: a folder at ``path``, a file where a folder should be, no write permission or
    a read-only file system in the nearest existing folder."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; expected a file path")
    _check_folders_above(path)
    folder = next(p for p in path.parents if p.exists())
    if not os.access(folder, os.W_OK | os.X_OK):
        code = errno.EROFS if _read_only(folder) else errno.EACCES
        raise PermissionError(code, f"{os.strerror(code)}, so {path} cannot be written", str(folder))


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


@contextmanager
def staging_directory(beside: str | os.PathLike) -> Iterator[Path]:
    """A new hidden, locked folder beside ``beside`` (same file system, so its contents can be renamed into
    place); removed with whatever is left in it when the block ends, however it ends."""
    beside = Path(beside)
    beside.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temporaries(beside.parent)
    folder = lock = None
    try:
        with signals_deferred():  # as in atomic_path: no signal between mkdir and the cleanup knowing it
            folder, lock = _create_locked(lambda name: name.mkdir(), beside, ".staging")
        yield folder
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
            os.close(lock)


@contextmanager
def replaced_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a new, empty hidden folder beside ``target``; when the block succeeds it takes ``target``'s place
    in one step, with ``target``'s other entries (files the block did not write) carried over as hard
    links. A reader sees the old folder or the new one, never a mix of their files; an exception or a
    signal in the block leaves ``target`` as it was (the staging folder goes, as ``staging_directory``'s)."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target} is a file, not a folder")
    with staging_directory(target) as stage:
        new = stage / target.name
        new.mkdir()
        try:
            yield new
        except OSError as error:  # name the file the user asked for, not its staged copy
            if error.filename is None or not Path(error.filename).is_relative_to(new):
                raise
            where = target / Path(error.filename).relative_to(new)
            raise type(error)(error.errno, error.strerror, str(where)) from error
        if not target.exists():
            with signals_deferred():
                new.rename(target)
            return
        for entry in os.scandir(target):
            if not os.path.lexists(new / entry.name) and not temporary_name_of(entry.name):
                _carry(Path(entry.path), new / entry.name)
        with signals_deferred():
            if not _exchange(new, target):  # no atomic swap here: the old folder out, the new in
                target.rename(stage / f"replaced-{target.name}")
                new.rename(target)


def _carry(source: Path, destination: Path) -> None:
    """Hard links (the same files, a lock file keeps its lock), copies where the file system has none."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst, follow_symlinks=False)
        except OSError:
            shutil.copy2(src, dst, follow_symlinks=False)

    if source.is_dir() and not source.is_symlink():
        shutil.copytree(source, destination, symlinks=True, copy_function=link)
    else:
        link(str(source), str(destination))


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where it is not available."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:  # glibc < 2.28
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)
