"""The node's statistics window and its periodic log line; plain Python (no rclpy), shared by two threads.

The image callback and the worker record into :class:`StatsWindow`; the diagnostics timer takes
:meth:`StatsWindow.snapshot` (totals since start, rates and means over the period since the previous
snapshot, which starts a new period). :class:`PeriodicSummary` turns snapshots into the one-line log
summary every ``summary_period`` seconds. :class:`StampGaps` estimates the frames lost *before* the node
(in the transport or the camera driver) from gaps in the input stamps against the measured camera period.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

from mtl_perception.pipeline import STAGES as PIPELINE_STAGES

# every stage the node times, in order: conversion, the pipeline's own stages, publishing
STAGES = ("convert", *PIPELINE_STAGES, "publish")


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


class StampGaps:
    """Frames missing between consecutive input stamps, judged against the camera's measured period.

    The period is a low percentile (``PERIOD_PERCENTILE``) of the last ``window`` stamp differences, so it
    stays the camera's own period while most frames are being lost (the differences are then multiples of
    it). A difference above ``GAP_FACTOR`` periods counts ``round(diff / period) - 1`` lost frames; one
    longer than ``pause`` seconds is a paused or restarted camera, and a stamp that does not increase a
    looping bag: neither counts. Nothing is counted before ``min_samples`` differences have been seen.
    Not thread-safe on its own (StatsWindow holds the lock).
    """

    GAP_FACTOR = 1.5
    PERIOD_PERCENTILE = 10.0

    def __init__(self, window: int = 64, min_samples: int = 8, pause: float = 5.0) -> None:
        self._diffs: deque[float] = deque(maxlen=window)
        self._min_samples = min_samples
        self._pause = pause
        self._last: float | None = None

    @property
    def period(self) -> float | None:
        """The measured camera period in seconds (None until enough stamps were seen)."""
        if len(self._diffs) < self._min_samples:
            return None
        return float(np.percentile(self._diffs, self.PERIOD_PERCENTILE))

    def add(self, stamp: float) -> int:
        """Record the next received stamp (s); the number of frames judged lost just before it."""
        last, self._last = self._last, stamp
        if last is None or stamp <= last:
            return 0
        diff = stamp - last
        if diff > self._pause:
            return 0
        period = self.period
        self._diffs.append(diff)
        if period is None or period <= 0 or diff <= self.GAP_FACTOR * period:
            return 0
        return max(int(round(diff / period)) - 1, 0)


class StatsWindow:
    """Frame counters since start plus per-period samples; every method is thread-safe."""

    def __init__(self, start: float) -> None:
        self._lock = threading.Lock()
        self.received = self.processed = self.dropped = self.rejected = self.resets = self.lost = 0
        self.last_error = ""
        self.last_reset = ""  # why the flow history last restarted (after the first frame), with its stamp
        self._gaps = StampGaps()
        self._partner_dt: deque[float] = deque(maxlen=50)
        self._new_period(start)

    def _new_period(self, now: float) -> None:
        self._period_start = now
        self._period_received = self._period_processed = self._period_rejected = self._period_lost = 0
        self._latency_receive: list[float] = []
        self._latency_stamp: list[float] = []
        self._stages: dict[str, list[float]] = {}

    def count_received(self, replaced_unprocessed: bool, stamp: float | None = None) -> None:
        """A frame arrived; ``replaced_unprocessed``: it replaced one the worker never took (dropped).

        ``stamp`` (seconds, the header's) feeds the estimate of frames lost before the node.
        """
        with self._lock:
            self.received += 1
            self._period_received += 1
            self.dropped += int(replaced_unprocessed)
            if stamp is not None:
                lost = self._gaps.add(stamp)
                self.lost += lost
                self._period_lost += lost

    def count_rejected(self, error: str) -> None:
        with self._lock:
            self.rejected += 1
            self._period_rejected += 1
            self.last_error = error

    def count_processed(
        self,
        latency_receive_ms: float,
        latency_stamp_ms: float,
        timings: dict[str, float],
        reset: bool,
        partner_dt: float | None,
        reset_reason: str | None = None,
    ) -> None:
        with self._lock:
            self.processed += 1
            self._period_processed += 1
            self.resets += int(reset)
            if reset and reset_reason and reset_reason != "first frame":
                self.last_reset = reset_reason
            self._latency_receive.append(latency_receive_ms)
            self._latency_stamp.append(latency_stamp_ms)
            for stage, value in timings.items():
                self._stages.setdefault(stage, []).append(value)
            if partner_dt is not None:
                self._partner_dt.append(partner_dt)

    def snapshot(self, now: float) -> tuple[dict[str, float | int | str], int]:
        """(diagnostic values, frames processed in the period) and start the next period at ``now``.

        ``input_loss_recent`` is the fraction of the period's frames judged lost before the node, and
        ``frames_rejected_recent`` the period's rejected frames: the diagnostics level follows these, so
        one bad frame long ago does not keep it at WARN.
        """
        with self._lock:
            elapsed = max(now - self._period_start, 1e-9)
            period = self._gaps.period
            seen = self._period_received + self._period_lost
            values = {
                "input_rate_hz": self._period_received / elapsed,
                "output_rate_hz": self._period_processed / elapsed,
                "latency_receive_to_publish_ms": _mean(self._latency_receive),
                "latency_stamp_to_publish_ms": _mean(self._latency_stamp),
                "latency_stamp_to_publish_max_ms": max(self._latency_stamp, default=float("nan")),
                **{f"stage_{stage}_ms": _mean(self._stages.get(stage, [])) for stage in STAGES},
                "flow_partner_dt_ms": _mean(list(self._partner_dt)) * 1e3,
                "frames_received": self.received,
                "frames_processed": self.processed,
                "frames_dropped": self.dropped,
                "frames_rejected": self.rejected,
                "frames_rejected_recent": self._period_rejected,
                "frames_lost": self.lost,
                "input_loss_recent": self._period_lost / seen if seen else 0.0,
                "input_period_ms": period * 1e3 if period is not None else float("nan"),
                "resets": self.resets,
                "last_reset": self.last_reset,
                "last_error": self.last_error,
            }
            processed_in_period = self._period_processed
            self._new_period(now)
        return values, processed_in_period


class PeriodicSummary:
    """The one-line log summary, at most every ``period`` seconds (0 = never); rates since the last line."""

    def __init__(self, period: float, start: float) -> None:
        self.period = float(period)
        self._last = start
        self._counts = (0, 0)

    def line(self, values: dict, now: float) -> str | None:
        """The summary text when one is due at ``now`` (given the latest snapshot), else None."""
        if self.period <= 0 or now - self._last < self.period:
            return None
        span = now - self._last
        received, processed = values["frames_received"], values["frames_processed"]
        rate_in = (received - self._counts[0]) / span
        rate_out = (processed - self._counts[1]) / span
        self._last, self._counts = now, (received, processed)
        return (
            f"in {rate_in:.1f} Hz, out {rate_out:.1f} Hz, last-period latency "
            f"{values['latency_stamp_to_publish_ms']:.1f} ms (stamp->publish), network "
            f"{values['stage_network_ms']:.1f} ms, flow {values['stage_flow_ms']:.1f} ms; received "
            f"{received}, processed {processed}, dropped {values['frames_dropped']}, rejected "
            f"{values['frames_rejected']}, resets {values['resets']}, lost before the node "
            f"~{values.get('frames_lost', 0)} (input stamp gaps)"
        )
