"""The per-frame host<->device traffic of the pipeline, kept to one sync per frame on a GPU.

One asynchronous upload through a reused pinned buffer, stage timing with CUDA events, and one download
that also carries the frame's finiteness check (NaN/Inf counted on the device). Whatever the node does
per frame beyond these is device work that the host never waits for.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch


class NonFiniteOutputError(ValueError):
    """The network produced NaN/Inf; the frame is rejected rather than published."""


class StageTimer:
    """Milliseconds per named stage, without host syncs on a GPU.

    CPU: wall clock. CUDA: a pair of timing events per stage on the current stream, the GPU time between
    them; :meth:`finish` reads them once the frame's single download has drained the stream (a timer that
    called ``torch.cuda.synchronize()`` per stage would add one host sync per stage and per frame).
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.times: dict[str, float] = {}
        self._events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        if self.cuda:
            stream = torch.cuda.current_stream(self.device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            try:
                yield
            finally:
                end.record(stream)
                self._events.append((stage, start, end))
            return
        start_time = time.perf_counter()
        try:
            yield
        finally:
            self._add(stage, (time.perf_counter() - start_time) * 1e3)

    def finish(self) -> dict[str, float]:
        """Read the CUDA events into :attr:`times` and return it.

        Call it after the frame's download: every event was recorded before that copy on the same stream,
        so all are complete and reading them waits for nothing.
        """
        for stage, start, end in self._events:
            self._add(stage, start.elapsed_time(end))
        self._events.clear()
        return self.times

    def _add(self, stage: str, milliseconds: float) -> None:
        self.times[stage] = self.times.get(stage, 0.0) + milliseconds


class HostStaging:
    """One pinned host buffer, reused frame after frame, for the camera frame's host->device copy."""

    def __init__(self) -> None:
        self._buffer: torch.Tensor | None = None
        self._copied: torch.cuda.Event | None = None

    def to_device(self, image: torch.Tensor, device: torch.device) -> torch.Tensor:
        if self._buffer is None or self._buffer.shape != image.shape:
            self._buffer = torch.empty(image.shape, dtype=torch.uint8, pin_memory=True)
        elif self._copied is not None and not self._copied.query():
            # The last copy out of the buffer must be done before it is overwritten. Every processed frame
            # ends in a download that drained the stream, so only a frame that failed midway waits here.
            self._copied.synchronize()
        self._buffer.copy_(image)
        on_device = self._buffer.to(device, non_blocking=True)
        self._copied = torch.cuda.Event()
        self._copied.record(torch.cuda.current_stream(device))
        return on_device


CHECKED_OUTPUTS = {"depth": "network depth output", "flow": "flow"}  # float outputs that must be finite


def download_checked(arrays: dict[str, torch.Tensor]) -> dict[str, np.ndarray | None]:
    """Device outputs -> host arrays with one device->host copy, their non-finite counts riding along.

    The NaN/Inf counts of the float outputs are computed on the device and packed with the outputs, so
    the frame's finiteness check costs no sync of its own. Raises NonFiniteOutputError; depth <= 0
    becomes NaN (REP 118: invalid).
    """
    checked = [key for key in CHECKED_OUTPUTS if key in arrays]
    counts = {}
    if checked:
        counts["nonfinite"] = torch.stack([(~torch.isfinite(arrays[key])).sum() for key in checked])
    host = _download({**arrays, **counts})
    for key, bad in zip(checked, host.pop("nonfinite", ()), strict=True):
        if bad:
            what = CHECKED_OUTPUTS[key]
            raise NonFiniteOutputError(f"{what} has {int(bad)} non-finite values; frame rejected")
    depth = host.get("depth")
    if depth is not None:
        depth[depth <= 0] = np.nan
    return {key: host.get(key) for key in ("depth", "semantic", "motion", "flow", "image")}


def _download(arrays: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Device tensors -> writable host numpy arrays with a single device->host transfer.

    On a GPU the outputs are packed into one byte buffer first (one copy, one synchronisation); on the CPU
    they are handed over without any copy.
    """
    if not arrays:
        return {}
    first = next(iter(arrays.values()))
    if first.device.type == "cpu":
        return {key: value.contiguous().numpy() for key, value in arrays.items()}
    parts, layout = [], []
    for key, value in arrays.items():
        value = value.contiguous()
        parts.append(value.reshape(-1).view(torch.uint8))
        layout.append((key, value.dtype, tuple(value.shape), value.numel() * value.element_size()))
    packed = torch.cat(parts).cpu().numpy()
    host, offset = {}, 0
    for key, dtype, shape, nbytes in layout:
        np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
        host[key] = packed[offset : offset + nbytes].view(np_dtype).reshape(shape)
        offset += nbytes
    return host


def count_host_syncs(step: Callable[[], object]) -> list[str]:
    """Where ``step()`` made the host wait for the GPU: one ``file:line`` per sync (CUDA only).

    torch's sync debug mode reports the syncs made through its copies and stream waits (``.cpu()``,
    ``.item()``, ``Stream.synchronize()``, ...) but not ``torch.cuda.synchronize()`` or
    ``Event.synchronize()``; those two are counted by wrapping them for the duration of the call.
    """
    device_sync, event_sync = torch.cuda.synchronize, torch.cuda.Event.synchronize
    sites: list[str] = []

    def caller() -> str:
        frame = sys._getframe(2)
        return f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}"

    def counted_device_sync(*args, **kwargs):
        sites.append(caller())
        return device_sync(*args, **kwargs)

    def counted_event_sync(event):
        sites.append(caller())
        return event_sync(event)

    device_sync()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.synchronize, torch.cuda.Event.synchronize = counted_device_sync, counted_event_sync
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
            torch.cuda.synchronize, torch.cuda.Event.synchronize = device_sync, event_sync
    reported = [w for w in caught if "called a synchronizing CUDA operation" in str(w.message)]
    return sites + [f"{Path(w.filename).name}:{w.lineno}" for w in reported]
