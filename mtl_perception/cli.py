"""The one entry of every console script: argument checks, one line per error, signals, exit codes.

``@tool_main("prog")`` wraps a ``main(argv) -> int``:

* SIGINT and SIGTERM become exceptions in the main thread (``mtl_perception.signals``), so every ``finally``
  runs: atomic writers remove their temporary files, staging folders go away, worker processes are stopped.
  The tool then prints one line and exits 130 (SIGINT) or 143 (SIGTERM), as a shell reports a process
  killed by that signal.
* A bad input (ValueError, or an OSError about a file: missing, existing, a directory, no permission, disk
  full) is one line ``prog: error: ...`` and exit 2; anything else is a bug: one line naming the exception
  type, exit 1, and the traceback only with ``MTL_PERCEPTION_TRACEBACK=1``.
* An error raised in a DataLoader worker or a spawned process arrives re-raised with the remote traceback as
  its message; the line is the original error's (its type decides the exit code as above).

The argparse ``type=`` helpers below reject a bad value with a message argparse prefixes with the argument's
name (``argument --fps: expected a positive finite number, got 'nan'``). Training scripts may use all of
this: it is at the bottom of the package and imports nothing above it (only ``mtl_perception.signals``).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import traceback
from collections.abc import Callable

from mtl_perception.signals import EXIT_SIGINT, EXIT_SIGTERM, Terminated, signals_raise

EXIT_FAILURE = 1  # an unexpected error (a bug)
EXIT_BAD_INPUT = 2  # argparse's code for usage errors; also bad files and unusable output locations
TRACEBACK_VARIABLE = "MTL_PERCEPTION_TRACEBACK"


_REMOTE_TRACEBACK = "Traceback (most recent call last)"


def _remote_error(error: BaseException) -> tuple[type | None, str, str] | None:
    """(type or None, type name, message) of the original error when ``error`` re-raises one from another
    process: torch's DataLoader workers and ``torch.multiprocessing.spawn`` put the remote traceback into the
    message, whose last line is ``[module.]Type: message``. The type is looked up among the modules already
    imported (the remote process ran this program's code), never imported here."""
    text = str(error)
    if _REMOTE_TRACEBACK not in text:
        return None
    last = [line for line in text.splitlines() if line.strip()][-1].strip()
    name, sep, message = last.partition(": ")
    if not sep or not all(part.isidentifier() for part in name.split(".")):
        return None, type(error).__name__, last
    module, _, qualname = name.rpartition(".")
    kind = sys.modules.get(module or "builtins")
    for part in qualname.split("."):
        kind = getattr(kind, part, None)
    if not (isinstance(kind, type) and issubclass(kind, BaseException)):
        # a DataLoader re-raises the worker's error as its own type where it can
        kind = type(error) if type(error).__qualname__ == qualname else None
    return kind, qualname, message


def error_line(error: BaseException) -> tuple[int, str]:
    """(exit code, one line) for an exception that ended a tool: ValueError and OSError (a bad file, an
    output that exists or cannot be written, a full disk) are the input's or the environment's fault."""
    remote = _remote_error(error)
    if remote is not None:
        kind, name, message = remote
        message = " ".join(message.split())
        if kind is not None and issubclass(kind, (ValueError, OSError)):
            return EXIT_BAD_INPUT, message or name
        if kind is not None and issubclass(kind, MemoryError):
            return EXIT_FAILURE, "out of memory"
        return (
            EXIT_FAILURE,
            f"unexpected {name}: {message[:300]} (set {TRACEBACK_VARIABLE}=1 for the traceback)",
        )
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


def tool_main(
    prog: str, *, name: str | None = None
) -> Callable[[Callable[[list[str] | None], int]], Callable[[list[str] | None], int]]:
    """Decorate a console script's ``main(argv) -> int`` (see the module doc). ``prog``: the console script;
    ``name``: what its lines start with, when the tool is known by another name (its argparse ``prog``)."""
    shown = name or prog

    def decorate(body: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
        @functools.wraps(body)
        def main(argv: list[str] | None = None) -> int:
            try:
                with signals_raise():
                    return body(argv)
            except KeyboardInterrupt:
                print(f"{shown}: interrupted", file=sys.stderr)
                return EXIT_SIGINT
            except Terminated:
                print(f"{shown}: terminated", file=sys.stderr)
                return EXIT_SIGTERM
            except Exception as error:  # noqa: BLE001 -- this is the one place errors become a line
                code, line = error_line(error)
                print(f"{shown}: error: {line}", file=sys.stderr)
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
