"""The per-split report of ``make_motion_labels`` (``OUT/motion_labels_SPLIT.json``), its one summary line
and one warning line per kind of problem (never one per frame)."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from .frame import DECISIONS, REASONS, Settings
from .inputs import PROBLEM_KINDS
from .tool import RunResult

_WHAT = {
    "image": "annotated frame (leftImg8bit)",
    "partner": "flow partner frame (leftImg8bit_sequence)",
    "disparity": "disparity",
    "camera": "camera calibration",
    "vehicle": "vehicle odometry (vehicle_sequence)",
    "timestamp": "timestamp (timestamp_sequence)",
    "labels": "label map (gtFine labelIds)",
    "instances": "instance map (gtFine instanceIds)",
}


def report_path(out: Path, split: str) -> Path:
    return Path(out) / f"motion_labels_{split}.json"


def _quantiles(values: list[float]) -> dict | None:
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return None
    q = np.percentile(values, [5, 25, 50, 75, 95])
    return {"count": len(values), **{f"p{p}": float(v) for p, v in zip((5, 25, 50, 75, 95), q, strict=True)}}


def build_report(result: RunResult, *, root: Path, out: Path, split: str, settings: Settings) -> dict:
    instances = [i for d in result.decisions for i in d.instances]
    by_class: dict[str, Counter] = defaultdict(Counter)
    for i in instances:
        by_class[i.label][i.decision] += 1
    pixels = sum(d.pixels for d in result.decisions)
    moving = sum(d.moving_pixels for d in result.decisions)
    undecided = sum(d.undecided_pixels for d in result.decisions)
    mismatched = [d.frame for d in result.decisions if not d.background_ok]
    frames = len(result.decisions) + len(result.skipped)
    return {
        "split": split,
        "root": str(root),
        "out": str(out),
        "settings": settings.to_json(),
        "flow": result.flow,
        "frames": {
            "annotated": frames,
            "labelled": len(result.decisions),
            "labelled_this_run": result.labelled_now,
            "already_done": result.already_done,
            "skipped": len(result.skipped),
            "seconds_this_run": round(result.elapsed_s, 3),
            "frames_per_s_this_run": result.labelled_now / result.elapsed_s if result.elapsed_s > 0 else None,
        },
        "skipped": {
            kind: [
                {"frame": p.path.name, "path": str(p.path), "reason": p.reason}
                for p in result.skipped
                if p.kind == kind
            ]
            for kind in PROBLEM_KINDS
            if any(p.kind == kind for p in result.skipped)
        },
        "instances": {
            "total": len(instances),
            **{d: sum(i.decision == d for i in instances) for d in DECISIONS},
            "by_reason": {
                f"{d}/{r}": sum(i.decision == d and i.reason == r for i in instances)
                for d in DECISIONS
                for r in REASONS[d]
            },
            "by_class": {
                label: {d: counts[d] for d in DECISIONS} for label, counts in sorted(by_class.items())
            },
        },
        "pixels": {
            "total": pixels,
            "moving": moving,
            "undecided": undecided,
            "moving_share": moving / pixels if pixels else None,
            "undecided_share": undecided / pixels if pixels else None,
            "group_pixels": sum(d.group_pixels for d in result.decisions),
        },
        "residual_speed_m_s": {
            d: _quantiles([i.residual_speed for i in instances if i.decision == d]) for d in DECISIONS
        },
        "background": {
            "residual_px": _quantiles([d.background_residual_px for d in result.decisions]),
            "mismatch_frames": mismatched,
            "max_background_px": settings.max_background_px,
        },
    }


def summary_line(report: dict, path: Path) -> str:
    f, i, p = report["frames"], report["instances"], report["pixels"]
    share = (lambda x: f"{100 * x:.1f} %") if p["total"] else (lambda x: "n/a")
    return (
        f"make_motion_labels: {report['split']}: {f['labelled']} of {f['annotated']} frames labelled "
        f"({f['labelled_this_run']} this run, {f['already_done']} before), {f['skipped']} skipped; "
        f"{i['total']} objects: {i['moving']} moving, {i['static']} static, {i['undecided']} undecided; "
        f"moving {share(p['moving_share'] or 0)} of the pixels, "
        f"undecided {share(p['undecided_share'] or 0)}; report {path}"
    )


def warning_lines(report: dict, path: Path) -> list[str]:
    lines = []
    for kind, problems in report["skipped"].items():
        first = problems[0]
        lines.append(
            f"make_motion_labels: warning: {len(problems)} frame(s) skipped, their {_WHAT[kind]} is missing "
            f"or unreadable, e.g. {first['path']} ({first['reason']}); all are listed in {path}"
        )
    mismatched = report["background"]["mismatch_frames"]
    if mismatched:
        lines.append(
            f"make_motion_labels: warning: in {len(mismatched)} frame(s) the static world moves against "
            f"the odometry (median residual above {report['background']['max_background_px']} px of the "
            f"flow grid: timestamps, odometry, calibration or disparity are off), e.g. {mismatched[0]}; "
            f"their objects are left undecided; see {path}"
        )
    return lines
