"""The node's statistics window and its periodic log line; plain Python (no rclpy), shared by two threads.

The image callback and the worker record into :class:`StatsWindow`; the diagnostics timer takes
:meth:`StatsWindow.snapshot` (totals since start, rates and means over the period since the previous
snapshot, which starts a new period). :class:`PeriodicSummary` turns snapshots into the one-line log
summary every ``summary_period`` seconds.
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


class StatsWindow:
    """Frame counters since start plus per-period samples; every method is thread-safe."""

    def __init__(self, start: float) -> None:
        self._lock = threading.Lock()
        self.received = self.processed = self.dropped = self.rejected = self.resets = 0
        self.last_error = ""
        self._partner_dt: deque[float] = deque(maxlen=50)
        self._new_period(start)

    def _new_period(self, now: float) -> None:
        self._period_start = now
        self._period_received = self._period_processed = 0
        self._latency_receive: list[float] = []
        self._latency_stamp: list[float] = []
        self._stages: dict[str, list[float]] = {}

    def count_received(self, replaced_unprocessed: bool) -> None:
        """A frame arrived; ``replaced_unprocessed``: it replaced one the worker never took (dropped)."""
        with self._lock:
            self.received += 1
            self._period_received += 1
            self.dropped += int(replaced_unprocessed)

    def count_rejected(self, error: str) -> None:
        with self._lock:
            self.rejected += 1
            self.last_error = error

    def count_processed(
        self,
        latency_receive_ms: float,
        latency_stamp_ms: float,
        timings: dict[str, float],
        reset: bool,
        partner_dt: float | None,
    ) -> None:
        with self._lock:
            self.processed += 1
            self._period_processed += 1
            self.resets += int(reset)
            self._latency_receive.append(latency_receive_ms)
            self._latency_stamp.append(latency_stamp_ms)
            for stage, value in timings.items():
                self._stages.setdefault(stage, []).append(value)
            if partner_dt is not None:
                self._partner_dt.append(partner_dt)

    def snapshot(self, now: float) -> tuple[dict[str, float | int | str], int]:
        """(diagnostic values, frames processed in the period) and start the next period at ``now``."""
        with self._lock:
            elapsed = max(now - self._period_start, 1e-9)
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
                "resets": self.resets,
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
            f"{values['frames_rejected']}, resets {values['resets']}"
        )
