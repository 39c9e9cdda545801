"""The results table: aggregation (mean ± sample std, Δm per seed against the single-task mean) on hand
numbers, the seed's markdown layout, and (when train.py is present) make_table --quick end to end."""

import json
import math
import re

import numpy as np
import pytest

from mtl_perception.learning.results_table import (
    BEYOND_TI,
    HIGHER_IS_BETTER,
    beyond_row,
    format_markdown,
    pick_beyond,
    summarize,
    table_rows,
)

ROWS = table_rows("famo")


def _run(seed, **metrics):
    return {
        "seed": seed,
        "metrics": metrics,
        "time_per_step_s": 0.5 + seed,
        "peak_memory_mb": 900.0,
        "gmacs": 1.5,
    }


def _runs():
    runs = {
        "single_depth": [_run(0, depth_ard=0.10), _run(1, depth_ard=0.12)],
        "single_semantic": [_run(0, semantic_miou=0.80), _run(1, semantic_miou=0.80)],
        "single_motion": [_run(0, motion_miou=0.60), _run(1, motion_miou=0.50)],
    }
    for i, row in enumerate(ROWS[3:]):
        runs[row.key] = [
            _run(0, depth_ard=0.11 + i / 100, semantic_miou=0.76, motion_miou=0.55),
            _run(1, depth_ard=0.11, semantic_miou=0.84, motion_miou=0.66),
        ]
    return runs


def test_rows_are_the_seeds_plus_one_beyond_ti():
    assert [r.key for r in ROWS] == [
        "single_depth",
        "single_semantic",
        "single_motion",
        "vanilla",
        "pseudo_grad_norm",
        "uncertainty",
        "famo",
    ]
    assert ROWS[0].tasks == ("depth",) and ROWS[3].tasks == ("depth", "semantic", "motion")
    with pytest.raises(ValueError, match="already one of TI's rows"):
        table_rows("uncertainty")


def test_beyond_best_picks_the_lowest_delta_m_of_the_screening():
    """Baseline ARD 0.11, sem 0.80, motion 0.55 (the single-task means of _runs)."""
    assert set(BEYOND_TI) >= {"famo", "dwa", "aligned_mtl", "nash_mtl", "upgrad", "grad_norm"}
    assert not set(BEYOND_TI) & {"vanilla", "pseudo_grad_norm", "uncertainty"}
    baseline = {"depth_ard": 0.11, "semantic_miou": 0.80, "motion_miou": 0.55}
    screening = {
        "famo": _run(0, depth_ard=0.121, semantic_miou=0.80, motion_miou=0.55),  # Δm +10/3
        "upgrad": _run(0, depth_ard=0.11, semantic_miou=0.84, motion_miou=0.55),  # Δm -5/3
        "dwa": _run(0, depth_ard=0.11, semantic_miou=0.84, motion_miou=0.55),  # the same Δm, listed later
    }
    chosen, scores = pick_beyond(screening, baseline)
    assert scores == pytest.approx({"famo": 10 / 3, "upgrad": -5 / 3, "dwa": -5 / 3})
    assert chosen == "upgrad"
    with pytest.raises(ValueError, match="not a method beyond TI"):
        beyond_row("pseudo_grad_norm")


def test_summary_statistics_and_delta_m():
    table = summarize(ROWS, _runs())
    rows = {r["key"]: r for r in table["rows"]}
    vanilla = rows["vanilla"]
    assert vanilla["depth_ard"]["mean"] == pytest.approx(0.11)
    assert vanilla["semantic_miou"]["std"] == pytest.approx(np.std([0.76, 0.84], ddof=1))
    assert vanilla["time_per_step_s"]["mean"] == pytest.approx(1.0)
    # baseline = single-task means: ARD 0.11, sem 0.80, motion 0.55. Seed 0: (0 + 5 + 0) / 3 = 5/3;
    # seed 1: (0 - 5 - 20) / 3 = -25/3.
    assert vanilla["delta_m"]["values"] == pytest.approx([5 / 3, -25 / 3])
    assert vanilla["delta_m"]["mean"] == pytest.approx(-10 / 3)
    assert "delta_m" not in rows["single_depth"]
    definition = table["delta_m_definition"]
    assert definition["K"] == 3 and definition["metrics"] == HIGHER_IS_BETTER
    assert definition["baseline_values"] == pytest.approx(
        {"depth_ard": 0.11, "semantic_miou": 0.80, "motion_miou": 0.55}
    )


def test_summary_rejects_missing_or_single_seed():
    runs = _runs()
    runs["vanilla"] = runs["vanilla"][:1]
    with pytest.raises(ValueError, match="at least 2 seeds"):
        summarize(ROWS, runs)
    runs = _runs()
    del runs["uncertainty"][0]["peak_memory_mb"]
    with pytest.raises(ValueError, match=r"'uncertainty' \(seed 0\) lacks \['peak_memory_mb'\]"):
        summarize(ROWS, runs)
    runs = _runs()
    runs["famo"][1]["metrics"]["motion_miou"] = float("nan")
    with pytest.raises(ValueError, match="non-zero baseline|non-finite"):
        summarize(ROWS, runs)


def test_markdown_has_the_seeds_columns():
    text = format_markdown(summarize(ROWS, _runs()))
    lines = text.splitlines()
    assert lines[0].startswith(
        "| Training modality | Depth ARD% | Semantic mIoU | Motion mIoU | GMACs | Δm% |"
    )
    assert lines[2].startswith(
        "| Single task | 11.00 ± 1.41 | 80.00 ± 0.00 | 55.00 ± 7.07 | 1.50, 1.50, 1.50 |"
    )
    labels = [line.split("|")[1].strip() for line in lines[2:]]
    assert labels == [
        "Single task",
        "Vanilla MTL",
        "GradNorm-based MTL (pseudo_grad_norm)",
        "Uncertainty MTL",
        "famo (beyond TI)",
    ]
    assert "| -3.33 ± 7.07 |" in lines[3]


def test_a_cached_run_is_reused_only_with_the_same_train_flags(tmp_path):
    """make_table keeps each run's result.json; a rerun in the same --out with another --epochs (or a method
    option) must not pass the old numbers off as the new setting's."""
    pytest.importorskip("mtl_perception_training.train")
    from mtl_perception_training.make_table import parse_args, run_one, train_argv

    args = parse_args(["--out", str(tmp_path / "table"), "--quick"])
    row, data = ROWS[3], tmp_path / "data"  # vanilla
    out = args.out / "runs" / row.key / "seed0"
    out.mkdir(parents=True)
    saved = {"seed": 0, "metrics": {"depth_ard": 0.5}, "train_argv": train_argv(args, row, 0, data, out)}
    (out / "result.json").write_text(json.dumps(saved))
    assert run_one(args, row, 0, data) == saved  # same flags: reused, nothing trained
    moved = parse_args(["--out", str(tmp_path / "moved"), "--quick"])
    args.out.rename(moved.out)  # --output_dir is not compared: a moved --out keeps its runs
    assert run_one(moved, row, 0, data) == saved
    moved.out.rename(args.out)
    longer = parse_args(["--out", str(args.out), "--quick", "--epochs", "3"])
    with pytest.raises(ValueError, match=r"trained with other flags: --epochs 1 \(now: 3\)"):
        run_one(longer, row, 0, data)
    (out / "result.json").write_text(json.dumps({k: v for k, v in saved.items() if k != "train_argv"}))
    with pytest.raises(ValueError, match="does not record the flags it was trained with"):
        run_one(args, row, 0, data)
    assert json.loads((out / "result.json").read_text())["metrics"] == {"depth_ard": 0.5}  # kept


@pytest.mark.timeout(600)
def test_make_table_ti_setting_trains_tis_network_on_the_given_root(tmp_path):
    """The command a user runs on Cityscapes (--preset ti --data_path ROOT), shrunk to one short run: the
    row trains TI's network (5.481 GMACs at 384x768 with 5 semantic classes, docs/benchmarks.md; TI's 5.71
    is its 19-class head with the ericsun block) on that root, and nothing is generated."""
    pytest.importorskip("mtl_perception_training.train")
    from train_fixtures import SPLIT, train_root

    from mtl_perception_training.make_table import parse_args, run_one

    root = train_root()
    args = parse_args(
        [
            "--out", str(tmp_path / "table"), "--preset", "ti", "--data_path", str(root), "--split", SPLIT,
            "--img_resize", "64", "128", "--output_size", "128", "256", "--epochs", "1", "--batch_size", "2",
            "--warmup_epochs", "0", "--milestones", "--workers", "0",
        ]
    )  # fmt: skip
    assert (args.lr, tuple(args.seeds), args.jobs) == (1e-4, (0, 1, 2), 1)  # TI's recipe, one run at a time
    result = run_one(args, ROWS[3], 0, root)  # vanilla, seed 0
    argv = result["train_argv"]
    assert argv[argv.index("--preset") + 1] == "ti" and argv[argv.index("--data_path") + 1] == str(root)
    assert result["gmacs"] == pytest.approx(5.481, abs=0.001)
    assert all(math.isfinite(result["metrics"][k]) for k in ("depth_ard", "semantic_miou", "motion_miou"))
    assert not (tmp_path / "table" / "data").exists()


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 12 + 9 + 1 train.py processes, two at a time: about 80 s on 2 quiet cores
def test_make_table_quick_end_to_end(tmp_path):
    """Every row and seed is a real train.py run followed by an evaluation: every cell is a finite number;
    ``--beyond best`` screens every beyond-TI method on seed 0 and keeps the lowest Δm for the last row."""
    pytest.importorskip("mtl_perception_training.train")
    from mtl_perception_training.make_table import main

    out = tmp_path / "table"
    assert main(["--out", str(out), "--quick", "--beyond", "best"]) == 0
    table = json.loads((out / "table.json").read_text())
    screening = table["beyond_screening"]
    assert screening["seed"] == 0 and set(screening["delta_m"]) == set(BEYOND_TI)
    chosen = screening["chosen"]
    assert screening["delta_m"][chosen] == min(screening["delta_m"].values())
    assert [r["key"] for r in table["rows"]] == [r.key for r in table_rows(chosen)]
    last = table["rows"][-1]
    assert last["delta_m"]["values"][0] == pytest.approx(screening["delta_m"][chosen])
    assert last["label"] == f"{chosen} (beyond TI; lowest Δm of {len(BEYOND_TI)} on seed 0)"
    for method in BEYOND_TI:  # the screening runs are real runs, kept for a later --beyond METHOD
        assert (out / "runs" / method / "seed0" / "result.json").is_file()
    for row in table["rows"]:
        assert row["seeds"] == [0, 1]
        for key in ("depth_ard", "semantic_miou", "motion_miou", "delta_m"):
            if key in row:
                assert all(math.isfinite(v) for v in row[key]["values"]), (row["key"], key)
        for key in ("time_per_step_s", "peak_memory_mb", "gmacs"):
            assert all(v > 0 for v in row[key]["values"]), (row["key"], key)
        for seed in row["seeds"]:
            result = json.loads((out / "runs" / row["key"] / f"seed{seed}" / "result.json").read_text())
            assert (out / "runs" / row["key"] / f"seed{seed}" / "metrics.json").is_file()
            assert result["metrics"]["num_images"] == 2
    markdown = (out / "table.md").read_text()
    numbers = re.findall(r"-?\d+(?:\.\d+)? ± \d+(?:\.\d+)?", markdown)
    assert (
        len(numbers) == 3 + 4 * 6
    )  # single-task line: 3 metrics; each MTL line: 3 metrics, Δm, time, memory
    assert "nan" not in markdown.lower()
