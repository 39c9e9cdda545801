"""The one entry of every console script: argument checks, one line per error, signals, exit codes.

``@tool_main("prog")`` wraps a ``main(argv) -> int``:

* SIGINT and SIGTERM become exceptions in the main thread (KeyboardInterrupt, :class:`Terminated`), so every
  ``finally`` runs: atomic writers remove their temporary files, staging folders go away, worker processes
  are stopped. The tool then prints one line and exits 130 (SIGINT) or 143 (SIGTERM), as a shell reports a
  process killed by that signal.
* A bad input (ValueError, or an OSError about a file: missing, existing, a directory, no permission, disk
  full) is one line ``prog: error: ...`` and exit 2; anything else is a bug: one line naming the exception
  type, exit 1, and the traceback only with ``MTL_PERCEPTION_TRACEBACK=1``.

The argparse ``type=`` helpers below reject a bad value with a message argparse prefixes with the argument's
name (``argument --fps: expected a positive finite number, got 'nan'``). Training scripts may use all of
this: it lives in the runtime and imports nothing of the training code.
"""

from __future__ import annotations

import argparse
import functools
import math
import multiprocessing
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager, suppress

EXIT_FAILURE = 1  # an unexpected error (a bug)
EXIT_BAD_INPUT = 2  # argparse's code for usage errors; also bad files and unusable output locations
EXIT_SIGINT = 128 + signal.SIGINT
EXIT_SIGTERM = 128 + signal.SIGTERM
TRACEBACK_VARIABLE = "MTL_PERCEPTION_TRACEBACK"


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException, like KeyboardInterrupt, so ``except Exception`` never hides it."""


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _raise_terminated(signum, frame):
    raise Terminated


@contextmanager
def signals_raise() -> Iterator[None]:
    """SIGINT -> KeyboardInterrupt, SIGTERM -> Terminated while the block runs (main thread only: Python
    delivers signals there; elsewhere this does nothing). SIGINT is taken even where a shell started us
    with it ignored (a background job): the tools are meant to be stoppable."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, _raise_interrupt),
        signal.SIGTERM: signal.signal(signal.SIGTERM, _raise_terminated),
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back while the block runs (a few renames that must all happen, or none); a
    signal that arrived meanwhile is raised when the block ends. Done with Python handlers, not the signal
    mask: Python runs handlers in the main thread whichever thread the kernel picked (tqdm's monitor...)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    held = {signal.SIGINT, signal.SIGTERM}
    previous = {
        signum: signal.signal(signum, lambda signum, frame: pending.append(signum)) for signum in held
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if pending:
            signal.raise_signal(pending[0])


def error_line(error: BaseException) -> tuple[int, str]:
    """(exit code, one line) for an exception that ended a tool: ValueError and OSError (a bad file, an
    output that exists or cannot be written, a full disk) are the input's or the environment's fault."""
    if isinstance(error, OSError) and error.strerror and error.filename:
        # the OS's own errors: "[Errno 13] Permission denied: 'x'" -> "x: permission denied"
        where = f"{error.filename} -> {error.filename2}" if error.filename2 else str(error.filename)
        return EXIT_BAD_INPUT, f"{where}: {error.strerror[0].lower()}{error.strerror[1:]}"
    if isinstance(error, (ValueError, OSError)):
        return EXIT_BAD_INPUT, " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, MemoryError):
        return EXIT_FAILURE, "out of memory"
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return EXIT_FAILURE, (
        f"unexpected {type(error).__name__}: {first[:300]} (set {TRACEBACK_VARIABLE}=1 for the traceback)"
    )


def tool_main(prog: str) -> Callable[[Callable[[list[str] | None], int]], Callable[[list[str] | None], int]]:
    """Decorate a console script's ``main(argv) -> int`` (see the module doc)."""

    def decorate(body: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
        @functools.wraps(body)
        def main(argv: list[str] | None = None) -> int:
            try:
                with signals_raise():
                    return body(argv)
            except KeyboardInterrupt:
                print(f"{prog}: interrupted", file=sys.stderr)
                return EXIT_SIGINT
            except Terminated:
                print(f"{prog}: terminated", file=sys.stderr)
                return EXIT_SIGTERM
            except Exception as error:  # noqa: BLE001 -- this is the one place errors become a line
                code, line = error_line(error)
                print(f"{prog}: error: {line}", file=sys.stderr)
                if os.environ.get(TRACEBACK_VARIABLE):
                    traceback.print_exc()
                return code

        main.tool_prog = prog  # marks a main that goes through this entry (checked by the tests)
        return main

    return decorate


# ---- argparse types: each names what it expected and what it got --------------------------------------


def _number(text: str, kind, what: str, ok: Callable[[float], bool]):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not (math.isfinite(value) and ok(value)):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, "a positive integer", lambda v: v > 0)


def non_negative_int(text: str) -> int:
    return _number(text, int, "a non-negative integer", lambda v: v >= 0)


def positive_float(text: str) -> float:
    return _number(text, float, "a positive finite number", lambda v: v > 0)


def non_negative_float(text: str) -> float:
    return _number(text, float, "a finite number >= 0", lambda v: v >= 0)


def name_part(text: str) -> str:
    """A non-empty name that can be one part of a Cityscapes file name (no '_', '/', or whitespace)."""
    if not text or any(c in text for c in "_/\\") or any(c.isspace() for c in text) or text in (".", ".."):
        raise argparse.ArgumentTypeError(
            f"expected a non-empty name without '_', '/' or spaces, got {text!r}"
        )
    return text


def image_size(text: str) -> tuple[int, int]:
    """'HxW' -> (H, W), both positive."""
    parts = text.lower().split("x")
    try:
        height, width = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 256x320, got {text!r}") from None
    if height <= 0 or width <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive HxW, got {text!r}")
    return height, width


def torch_device(text: str) -> str:
    """'auto', 'cpu' or 'cuda[:N]' that this machine has (checked by the runtime's resolve_device)."""
    from mtl_perception.inference.backends import resolve_device

    try:
        resolve_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


# ---- worker processes that end with the tool ----------------------------------------------------------

_job_running = False


def _worker_terminated(signum, frame):
    if _job_running:  # unwind the job so its atomic writes clean up
        raise Terminated
    os._exit(EXIT_SIGTERM)  # idle in the pool's queue: nothing to clean, no traceback to print


def _init_worker(parent: int) -> None:
    """SIGINT is the parent's to handle (a terminal sends it to the whole group); SIGTERM unwinds the job;
    Linux also sends SIGTERM when the parent dies, even by SIGKILL, so no worker outlives its tool."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_terminated)
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(EXIT_SIGTERM)


def _run_job(job: Callable, kwargs: dict):
    global _job_running
    _job_running = True
    try:
        return job(**kwargs)
    except Terminated:
        # unwound (its temporaries are gone); reporting back to a parent that is stopping the pool, or is
        # dead, could block for ever
        os._exit(EXIT_SIGTERM)
    finally:
        _job_running = False


class WorkerPool:
    """Processes running jobs; leaving the ``with`` block by an exception stops them at once."""

    def __init__(self, workers: int, *, stop_timeout_s: float = 5.0, start_method: str | None = None) -> None:
        """``start_method`` "spawn" for jobs that use torch or OpenCV threads: a process forked from one whose
        thread pools are running can deadlock on a lock some thread held at the fork."""
        context = None if start_method is None else multiprocessing.get_context(start_method)
        self._pool = ProcessPoolExecutor(
            max_workers=workers, initializer=_init_worker, initargs=(os.getpid(),), mp_context=context
        )
        self._stop_timeout_s = stop_timeout_s

    def submit(self, job: Callable, **kwargs) -> Future:
        return self._pool.submit(_run_job, job, kwargs)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, kind, error, trace) -> None:
        if kind is None:
            self._pool.shutdown(wait=True)
            return
        # ProcessPoolExecutor.shutdown waits for running jobs; Python 3.14's terminate_workers() is what is
        # needed, so do what it does: SIGTERM each worker (its job unwinds), SIGKILL what is left
        processes = list((getattr(self._pool, "_processes", None) or {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            with suppress(ProcessLookupError, ValueError):
                process.terminate()
        for process in processes:
            process.join(self._stop_timeout_s)
            if process.is_alive():
                process.kill()
                process.join()
