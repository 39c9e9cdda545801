"""The seed's results table (TI's multi_task_learning.md): rows, mean ± std over seeds, Δm%, markdown + JSON.

Columns as TI's: Depth ARD %, Semantic mIoU %, Motion mIoU %, GMACs (at TI's 384x768, per input), plus
Δm %, time per training step and peak memory. TI's "Single task" row is one line made of three networks
(each column from its own single-task model); it is also the Δm baseline.

Δm% (Maninis et al. 2019; ``mtl_perception.metrics.delta_m``): K = 3 metrics, depth ARD (lower is better),
semantic mIoU and motion mIoU (higher is better); baseline B = the single-task networks of the same preset,
data and schedule, each metric's mean over the seeds; sign: the "drop" convention of Nash-MTL / CAGrad /
FAMO, so Δm > 0 is worse than single task and lower is better. It is computed per seed against the same B,
then reported as mean ± std over the seeds. std is the sample standard deviation (ddof 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mtl_perception.learning.weighting import METHODS
from mtl_perception.metrics import delta_m

TASKS = ("depth", "semantic", "motion")
HEADLINE = ("depth_ard", "semantic_miou", "motion_miou")
HIGHER_IS_BETTER = {"depth_ard": False, "semantic_miou": True, "motion_miou": True}
SINGLE_TASK_METRIC = {"depth": "depth_ard", "semantic": "semantic_miou", "motion": "motion_miou"}
RUN_FIELDS = ("time_per_step_s", "peak_memory_mb", "gmacs")


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    tasks: tuple[str, ...]
    method: str


SINGLE_ROWS = tuple(Row(f"single_{t}", f"Single task ({t})", (t,), "vanilla") for t in TASKS)
TI_ROWS = (
    Row("vanilla", "Vanilla MTL", TASKS, "vanilla"),
    Row("pseudo_grad_norm", "GradNorm-based MTL (pseudo_grad_norm)", TASKS, "pseudo_grad_norm"),
    Row("uncertainty", "Uncertainty MTL", TASKS, "uncertainty"),
)


BEYOND_TI = tuple(m for m in METHODS if m not in {r.method for r in TI_ROWS})


def beyond_row(method: str, label: str | None = None) -> Row:
    if method not in BEYOND_TI:
        why = "is already one of TI's rows" if method in {r.method for r in TI_ROWS} else "is unknown"
        raise ValueError(f"--beyond {method!r} {why}, not a method beyond TI; choose one of {BEYOND_TI}")
    return Row(method, label or f"{method} (beyond TI)", TASKS, method)


def table_rows(beyond: str) -> tuple[Row, ...]:
    """Single task x3, TI's three MTL rows, and one beyond-TI method."""
    return (*SINGLE_ROWS, *TI_ROWS, beyond_row(beyond))


def baseline_values(runs: Mapping[str, Sequence[Mapping]]) -> dict[str, float]:
    """The Δm baseline: each single-task row's metric, mean over its seeds."""
    baseline = {}
    for task, metric in SINGLE_TASK_METRIC.items():
        key = f"single_{task}"
        if key not in runs:
            raise ValueError(f"the Δm baseline needs the single-task row {key!r}")
        baseline[metric] = float(np.mean([r["metrics"][metric] for r in runs[key]]))
    return baseline


def pick_beyond(
    screening: Mapping[str, Mapping], baseline: Mapping[str, float]
) -> tuple[str, dict[str, float]]:
    """The beyond-TI method whose screening run (one seed each) has the lowest Δm against ``baseline``;
    a tie goes to the method listed first. Returns it and every method's Δm."""
    if not screening:
        raise ValueError("pick_beyond: no screening runs")
    scores = {m: delta_m(run["metrics"], baseline, HIGHER_IS_BETTER) for m, run in screening.items()}
    return min(scores, key=scores.__getitem__), scores  # min keeps the first of equal keys


def _stats(values: Sequence[float]) -> dict:
    values = [float(v) for v in values]
    if len(values) < 2:
        raise ValueError(f"mean ± std needs at least 2 seeds, got {len(values)} value(s)")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"non-finite value among the seeds: {values}")
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)), "values": values}


def _check_run(row: Row, run: Mapping) -> None:
    needed = [*RUN_FIELDS, "metrics", "seed"]
    missing = [k for k in needed if k not in run]
    missing += [
        f"metrics.{SINGLE_TASK_METRIC[t]}" for t in row.tasks if SINGLE_TASK_METRIC[t] not in run["metrics"]
    ]
    if missing:
        raise ValueError(f"run of row {row.key!r} (seed {run.get('seed')}) lacks {missing}")


def summarize(rows: Sequence[Row], runs: Mapping[str, Sequence[Mapping]]) -> dict:
    """``runs[row.key]`` = one dict per seed: {"seed", "metrics": evaluate() output, "time_per_step_s",
    "peak_memory_mb", "gmacs"}. Returns the JSON-ready table (rows in order, Δm definition, baseline)."""
    for row in rows:
        if not runs.get(row.key):
            raise ValueError(f"no runs for row {row.key!r}")
        for run in runs[row.key]:
            _check_run(row, run)
    baseline = baseline_values(runs)
    out_rows = []
    for row in rows:
        seeds = runs[row.key]
        entry = {"key": row.key, "label": row.label, "tasks": list(row.tasks), "method": row.method}
        entry["seeds"] = [int(r["seed"]) for r in seeds]
        for metric in HEADLINE:
            if all(metric in r["metrics"] for r in seeds):
                entry[metric] = _stats([r["metrics"][metric] for r in seeds])
        for field in RUN_FIELDS:
            entry[field] = _stats([r[field] for r in seeds])
        if len(row.tasks) == len(TASKS):
            entry["delta_m"] = _stats([delta_m(r["metrics"], baseline, HIGHER_IS_BETTER) for r in seeds])
        entry["metrics_per_seed"] = [dict(r["metrics"]) for r in seeds]
        out_rows.append(entry)
    return {
        "rows": out_rows,
        "delta_m_definition": {
            "formula": "100/K * sum_k (-1)^delta_k (M_k - B_k) / B_k, delta_k = 1 if higher is better",
            "K": len(HIGHER_IS_BETTER),
            "metrics": dict(HIGHER_IS_BETTER),
            "baseline": "single-task networks (same preset, data, schedule), mean over seeds",
            "baseline_values": baseline,
            "sign": "drop convention (Nash-MTL/CAGrad/FAMO): > 0 is worse than single task, lower is better",
        },
    }


def _pm(stats: Mapping, scale: float = 1.0, digits: int = 2) -> str:
    return f"{scale * stats['mean']:.{digits}f} ± {scale * stats['std']:.{digits}f}"


def format_markdown(table: Mapping) -> str:
    """The seed's table: one combined "Single task" line, then the multi-task rows."""
    rows = {r["key"]: r for r in table["rows"]}
    header = (
        "| Training modality | Depth ARD% | Semantic mIoU | Motion mIoU | GMACs | Δm% | time/step (ms) "
        "| peak memory (MB) |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    singles = [rows[f"single_{t}"] for t in TASKS]
    lines.append(
        "| Single task | "
        + " | ".join(_pm(r[SINGLE_TASK_METRIC[t]], 100) for r, t in zip(singles, TASKS, strict=True))
        + " | "
        + ", ".join(f"{r['gmacs']['mean']:.2f}" for r in singles)
        + " | 0 (baseline) | "
        + ", ".join(f"{1000 * r['time_per_step_s']['mean']:.0f}" for r in singles)
        + " | "
        + ", ".join(f"{r['peak_memory_mb']['mean']:.0f}" for r in singles)
        + " |"
    )
    for row in table["rows"]:
        if row["key"].startswith("single_"):
            continue
        cells = [row["label"], *(_pm(row[m], 100) for m in HEADLINE), f"{row['gmacs']['mean']:.2f}"]
        cells += [_pm(row["delta_m"]), _pm(row["time_per_step_s"], 1000, 0), _pm(row["peak_memory_mb"], 1, 0)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
