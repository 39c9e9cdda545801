"""Signals and worker processes for the console tools: stdlib only, at the bottom of the package.

* :func:`signals_raise`: SIGINT and SIGTERM become exceptions in the main thread (KeyboardInterrupt,
  :class:`Terminated`), so every ``finally`` runs (atomic writers remove their temporaries, staging folders
  go away, worker processes are stopped).
* :func:`signals_deferred`: hold both back for a few renames that must all happen, or none.
* :class:`WorkerPool`: processes that end with their tool, whatever ends it.

``mtl_perception.cli`` (the tools' entry) and ``mtl_perception.atomic`` build on this module; it imports
nothing of the package.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager, suppress

EXIT_SIGINT = 128 + signal.SIGINT
EXIT_SIGTERM = 128 + signal.SIGTERM


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
        """``start_method`` "spawn" for jobs that use torch or OpenCV threads: a process forked from one
        whose thread pools are running can deadlock on a lock some thread held at the fork."""
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
