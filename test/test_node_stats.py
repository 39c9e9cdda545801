"""The node's statistics window and periodic summary (plain Python; the ROS side is in test_node_process)."""

import math
import threading

import numpy as np
import pytest

from mtl_perception.ros.node_stats import STAGES, PeriodicSummary, StampGaps, StatsWindow


def test_snapshot_reports_the_period_and_starts_the_next():
    stats = StatsWindow(start=100.0)
    for replaced in (False, True, False):
        stats.count_received(replaced_unprocessed=replaced)
    stats.count_processed(
        latency_receive_ms=10.0,
        latency_stamp_ms=20.0,
        timings={"network": 4.0, "flow": 2.0},
        reset=True,
        partner_dt=None,
    )
    stats.count_processed(
        latency_receive_ms=30.0, latency_stamp_ms=60.0, timings={"network": 6.0}, reset=False, partner_dt=0.1
    )
    stats.count_rejected("bad encoding")
    values, processed = stats.snapshot(now=102.0)
    assert processed == 2
    assert values["input_rate_hz"] == pytest.approx(1.5) and values["output_rate_hz"] == pytest.approx(1.0)
    assert values["latency_receive_to_publish_ms"] == pytest.approx(20.0)
    assert values["latency_stamp_to_publish_ms"] == pytest.approx(40.0)
    assert values["latency_stamp_to_publish_max_ms"] == pytest.approx(60.0)
    assert values["stage_network_ms"] == pytest.approx(5.0) and values["stage_flow_ms"] == pytest.approx(2.0)
    assert math.isnan(values["stage_convert_ms"])
    assert {f"stage_{s}_ms" for s in STAGES} <= set(values)
    assert values["flow_partner_dt_ms"] == pytest.approx(100.0)
    assert (values["frames_received"], values["frames_processed"], values["frames_dropped"]) == (3, 2, 1)
    assert (values["frames_rejected"], values["resets"], values["last_error"]) == (1, 1, "bad encoding")

    # next period: totals kept, per-period samples and rates start again
    values, processed = stats.snapshot(now=104.0)
    assert processed == 0 and values["input_rate_hz"] == 0.0
    assert math.isnan(values["latency_stamp_to_publish_ms"]) and math.isnan(values["stage_network_ms"])
    assert values["frames_received"] == 3 and values["resets"] == 1
    assert values["flow_partner_dt_ms"] == pytest.approx(100.0)  # a running window over frames


def test_counts_from_two_threads_are_not_lost():
    stats = StatsWindow(start=0.0)

    def receive():
        for _ in range(5000):
            stats.count_received(replaced_unprocessed=False)

    threads = [threading.Thread(target=receive) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stats.snapshot(now=1.0)[0]["frames_received"] == 20000


def test_summary_line_every_period_with_rates_since_the_last_line():
    summary = PeriodicSummary(period=10.0, start=0.0)
    values = {
        "frames_received": 50,
        "frames_processed": 40,
        "frames_dropped": 10,
        "frames_rejected": 0,
        "resets": 1,
        "latency_stamp_to_publish_ms": 12.0,
        "stage_network_ms": 5.0,
        "stage_flow_ms": 3.0,
    }
    assert summary.line(values, now=9.0) is None
    line = summary.line(values, now=10.0)
    assert line.startswith("in 5.0 Hz, out 4.0 Hz") and "dropped 10" in line and "resets 1" in line
    assert summary.line(values, now=15.0) is None
    later = {**values, "frames_received": 150, "frames_processed": 90}
    assert summary.line(later, now=20.0).startswith("in 10.0 Hz, out 5.0 Hz")
    assert PeriodicSummary(period=0.0, start=0.0).line(values, now=1e9) is None


def test_stamp_gaps_count_missing_frames_against_the_measured_period():
    gaps = StampGaps(min_samples=8)
    stamps = [i * 0.1 for i in range(10)] + [1.3, 1.4, 1.5]  # 1.0, 1.1, 1.2 never arrived
    lost = [gaps.add(s) for s in stamps]
    assert sum(lost) == 3 and lost[10] == 3
    assert gaps.period == pytest.approx(0.1)
    assert gaps.add(1.5) == 0 and gaps.add(0.2) == 0  # a repeated or earlier stamp: a looping bag
    assert gaps.add(60.0) == 0  # a pause, not loss
    early = StampGaps(min_samples=8)
    assert [early.add(s) for s in (0.0, 0.1, 0.5)] == [0, 0, 0]  # period not known yet


def test_stamp_gaps_keep_the_period_while_most_frames_are_lost():
    """70 % loss: the differences are mostly multiples of the period; the low percentile stays at it."""
    rng = np.random.default_rng(0)
    sent = np.arange(400) * 0.25
    kept = sent[rng.random(400) > 0.7]
    gaps = StampGaps()
    lost = sum(gaps.add(float(s)) for s in kept)
    assert gaps.period == pytest.approx(0.25)
    expected = int(round((kept[-1] - kept[0]) / 0.25)) + 1 - len(kept)
    assert lost >= 0.9 * expected  # only the frames lost before the period was known are missed


def test_snapshot_reports_recent_loss_and_rejections_per_period():
    stats = StatsWindow(start=0.0)
    for i in list(range(10)) + [13]:
        stats.count_received(replaced_unprocessed=False, stamp=i * 0.1)
    stats.count_rejected("bad")
    values, _ = stats.snapshot(now=1.0)
    assert values["frames_lost"] == 3 and values["input_loss_recent"] == pytest.approx(3 / 14)  # 10-12
    assert values["frames_rejected_recent"] == 1 and values["input_period_ms"] == pytest.approx(100.0)
    values, _ = stats.snapshot(now=2.0)
    assert values["frames_rejected_recent"] == 0 and values["input_loss_recent"] == 0.0
    assert values["frames_rejected"] == 1 and values["last_error"] == "bad"  # totals are kept
