"""train.py never loses or poisons a run: a non-finite state is never saved, one run per folder, a failed
start does not block the rerun, a full disk leaves files that agree, flags are refused before any work, and
the run can be watched (validation lines, a summary, TensorBoard whole across resumes)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from folder_fixtures import digests, held_by_another_process, small_disk
from train_fixtures import SPLIT, copy_of_root, tiny_args, train_root

from mtl_perception.atomic import temporary_name_of
from mtl_perception.learning import evaluation
from mtl_perception_training import train

pytestmark = pytest.mark.usefixtures("torch_one_thread")
QUIET = ("--no-export_onnx", "--tensorboard_images", "0")


def _error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("train.py: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _all_finite(state: dict) -> bool:
    tensors = []

    def walk(value, name):
        if isinstance(value, torch.Tensor):
            tensors.append((name, value))
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{name}.{k}")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{name}.{i}")

    walk({k: state[k] for k in ("model", "optimizer", "weighting", "state_dict") if k in state}, "")
    assert tensors
    return all(bool(torch.isfinite(t).all()) for _, t in tensors if t.is_floating_point())


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("guards") / "run"
    train.main(train.parse_args(tiny_args(train_root(), out, *QUIET)))
    return out


# ---- 1. a non-finite model never reaches the disk ---------------------------------------------------------


def test_a_nan_weighting_state_stops_the_run_before_anything_is_saved(tmp_path, monkeypatch, capsys):
    """Regression: pseudo_grad_norm's weights went NaN (``--alpha nan``), the run exited 0 and saved
    checkpoint.pt and best.pt with NaN weights while metrics.json logged weight 1.0. Here the weights are
    made NaN after step 3 (epoch 2 step 1): the run stops there naming them; the epoch-1 files stay."""
    real = train.build_weighting

    def poisoned(*args, **kwargs):
        weighting = real(*args, **kwargs)
        backward, calls = weighting.backward, []

        def spoiled(*a, **k):
            used = backward(*a, **k)
            calls.append(1)
            if len(calls) == 3:
                weighting.weights.fill_(float("nan"))
            return used

        weighting.backward = spoiled
        return weighting

    monkeypatch.setattr(train, "build_weighting", poisoned)
    out = tmp_path / "out"
    argv = tiny_args(train_root(), out, "--multi_task_type", "pseudo_grad_norm", "--epochs", "3", *QUIET)
    assert train.cli(argv) == 2
    line = _error(capsys.readouterr().err)
    assert (
        "non-finite weighting weights (3 of 3 values NaN or Inf) after epoch 2 step 1 (global step 3)" in line
    )
    assert f"the last finite checkpoint is kept: {out / 'checkpoint.pt'}" in line
    checkpoint = _state(out / "checkpoint.pt")
    assert checkpoint["epoch"] == 1 and _all_finite(checkpoint)
    assert _all_finite(_state(out / "best.pt"))
    records = json.loads((out / "metrics.json").read_text())
    assert [r["epoch"] for r in records] == [1]
    assert [records[0][f"weight/{t}"] for t in ("depth", "semantic", "motion")] == pytest.approx(
        checkpoint["weighting"]["weights"].tolist(), rel=1e-3
    )


def test_a_diverging_run_is_warned_about_once_and_stops_at_the_first_inf_statistic(tmp_path, capsys):
    """Regression: --lr 1e8 exited 0 with losses ~1e17, Inf BatchNorm running_var in checkpoint.pt and no
    word. The losses' explosion is warned about once; the Inf statistic (a buffer, which the training loss
    never sees) stops the run, naming it."""
    out = tmp_path / "out"
    argv = tiny_args(train_root(), out, "--lr", "1e8", "--warmup_epochs", "0", "--epochs", "3", *QUIET)
    assert train.cli(argv) == 2
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "times its running median" in line]
    assert len(warnings) == 1 and "--loss_warn_factor 100" in warnings[0], err
    assert "running_var" in _error(err) and "model buffer" in _error(err)
    if (out / "checkpoint.pt").exists():  # what was saved is finite
        assert _all_finite(_state(out / "checkpoint.pt")) and _all_finite(_state(out / "best.pt"))


# ---- 2. one run per folder; a failed start never blocks the rerun ----------------------------------------


@pytest.mark.parametrize("mode", ["new", "overwrite", "resume"])
def test_a_folder_in_use_is_refused_naming_the_holder(finished_run, tmp_path, capsys, mode):
    """Regression: a second train.py into the same --output_dir (also with --overwrite or --resume) ran and
    clobbered the first one's files. The lock is the OS's (another process holds it here)."""
    folder = tmp_path / "new" if mode == "new" else finished_run
    extra = {"new": (), "overwrite": ("--overwrite",), "resume": ("--resume", str(folder / "checkpoint.pt"))}
    before = digests(finished_run)
    with held_by_another_process(folder) as holder:
        assert train.cli(tiny_args(train_root(), folder, "--epochs", "2", *QUIET, *extra[mode])) == 2
        line = _error(capsys.readouterr().err)
        assert f"--output_dir {folder} is in use by another run (PID {holder.pid} on " in line
    assert digests(finished_run) == before
    if mode == "new":
        assert sorted(p.name for p in folder.iterdir()) == [".lock"]


def test_the_lock_goes_with_its_process_even_when_killed(tmp_path):
    from mtl_perception.folder_lock import FolderInUse, folder_lock  # noqa: I001 (new in this change)

    with held_by_another_process(tmp_path) as holder:
        with pytest.raises(FolderInUse, match=f"PID {holder.pid}"), folder_lock(tmp_path):
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        with folder_lock(tmp_path) as lock:  # the kernel released it; this process now holds it
            assert lock.read_text().split()[0] == str(os.getpid())


def test_make_table_refuses_a_folder_in_use(tmp_path, capsys):
    from mtl_perception_training import make_table

    with held_by_another_process(tmp_path) as holder:
        assert make_table.main(["--out", str(tmp_path), "--quick"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(
        f"mtl_make_table: error: --out {tmp_path} is in use by another run (PID {holder.pid} "
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]


def test_a_failed_first_epoch_does_not_block_the_rerun(tmp_path, capsys):
    """Regression: a run that failed in its first epoch left tensorboard/; the rerun was refused and told to
    --resume a checkpoint that did not exist. The same command now starts afresh (the stale events go)."""
    root = copy_of_root(tmp_path)
    image = sorted((root / "leftImg8bit" / SPLIT).rglob("*.png"))[0]
    good = image.read_bytes()
    image.write_bytes(good[:100])
    out = tmp_path / "out"
    argv = tiny_args(root, out, *QUIET)
    assert train.cli(argv) == 2
    assert f"unreadable or truncated image: {image}" in _error(capsys.readouterr().err)
    stale = sorted((out / "tensorboard").iterdir())
    assert stale and not (out / "checkpoint.pt").exists()
    image.write_bytes(good)
    assert train.cli(argv) == 0
    assert (out / "checkpoint.pt").is_file() and not set(stale) & set((out / "tensorboard").iterdir())


def test_resuming_a_finished_run_says_there_is_nothing_to_do(finished_run, capsys):
    """Regression: --resume with --epochs <= the epochs done exited 0 silently (and rewrote files)."""
    before = digests(finished_run)
    argv = tiny_args(train_root(), finished_run, "--resume", str(finished_run / "checkpoint.pt"), *QUIET)
    assert train.cli(argv) == 0
    err = capsys.readouterr().err
    assert "the run has trained 1 epochs, --epochs 1: nothing to do (pass a larger --epochs" in err
    assert digests(finished_run) == before


# ---- 3. a full disk leaves files that agree ----------------------------------------------------------------


def test_a_full_disk_is_one_line_and_the_files_agree(tmp_path, capsys):
    """Regression: on a full disk train.py said "unexpected RuntimeError: [enforce fail at
    inline_container.cc:672]" and left metrics.json at epoch 2 beside checkpoint.pt at epoch 1. An epoch's
    best.pt, metrics.json and checkpoint.pt now replace the last ones together or not at all."""
    disk = tmp_path / "disk"
    # tmpfs: epoch 1's files (16 MB) fit, epoch 2's new copies beside them do not; RLIMIT: 8 MB per file
    with small_disk(disk, size_mb=24, rlimit_mb=8) as small, small.full():
        out = disk / "run"
        argv = tiny_args(train_root(), out, "--epochs", "3", "--lr", "1e-3", "--warmup_epochs", "0", *QUIET)
        assert train.cli(argv) == 2
        line = _error(capsys.readouterr().err)
        assert f"{small.words} (writing it)" in line and "enforce fail" not in line
        assert not [p for p in out.iterdir() if temporary_name_of(p.name)]
        epochs = (
            [r["epoch"] for r in json.loads((out / "metrics.json").read_text())]
            if (out / "metrics.json").exists()
            else []
        )
        if (out / "checkpoint.pt").exists():
            checkpoint = _state(out / "checkpoint.pt")
            assert epochs == list(range(1, checkpoint["epoch"] + 1)) and checkpoint["history"] == json.loads(
                (out / "metrics.json").read_text()
            )
            assert _state(out / "best.pt")["extra"]["epoch"] == checkpoint["best"]["epoch"]
        else:
            assert epochs == [] and not (out / "best.pt").exists()


# ---- 5. flags checked before any work ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, named",
    [
        (("--tensorboard_images", "-1"), "--tensorboard_images -1: must be >= 0"),
        (("--prefetch_factor", "0", "--workers", "1"), "--prefetch_factor 0: must be >= 1"),
        (("--epoch_size", "-1"), "--epoch_size -1: must be >= 0"),
        (("--seed", "-1"), "--seed -1: must be in 0 .. 4294967295"),
        (("--workers", "-1"), "--workers -1: must be >= 0"),
        (("--dropout", "2"), "--dropout 2.0: must be in [0, 1)"),
        (("--lr", "0"), "--lr 0.0: must be > 0"),
        (("--gamma", "nan"), "--gamma nan: must be > 0"),
        (("--milestones", "-5"), "--milestones -5: epochs must be >= 1"),
        (("--transform_rotation", "nan"), "--transform_rotation nan: degrees in [0, 180]"),
        (("--weight_decay", "-1"), "--weight_decay -1.0: must be >= 0"),
        (("--class_weight_probability", "2"), "--class_weight_probability 2.0: in [0, 1]"),
        (("--loss_warn_factor", "0.5"), "--loss_warn_factor 0.5: 0 (off) or > 1"),
        (("--alpha", "0.5"), "--alpha 0.5: not an option of --multi_task_type vanilla (its options: none)"),
        (("--multi_task_type", "pseudo_grad_norm", "--alpha", "nan"), "--alpha nan: must be a finite number"),
        (("--multi_task_type", "dwa", "--alpha", "1"), "--alpha 1.0: not an option of --multi_task_type dwa"),
        (("--device", "cuda:7"), "--device cuda:7: GPU 7 not found"),
    ],
)
def test_a_bad_flag_is_refused_before_any_work(tmp_path, capsys, flags, named):
    """Regression: each of these crashed after an epoch, gave torch's own text or a traceback, or trained in
    silence (--lr 0, --gamma nan, --milestones -5, --transform_rotation nan, --alpha with vanilla)."""
    out = tmp_path / "out"
    assert train.cli(tiny_args(train_root(), out, *flags)) == 2
    assert named in _error(capsys.readouterr().err)
    assert not out.exists()


# ---- 6. a run you can watch --------------------------------------------------------------------------------


def test_resumes_keep_tensorboard_whole_and_every_epoch_is_reported(tmp_path, monkeypatch, capsys):
    """Regression: every --resume purged the checkpoint's own step from TensorBoard (its last loss and its
    validation point). Three runs (1 epoch, then --resume to 2 and to 3) now read back as one: every step
    once, a validation point per epoch. Also: a validation bar, one line per epoch and a summary; an
    --epoch_size beyond the split is said to be capped; --dropout 0.2 resumes a run started without it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setattr(evaluation, "PROGRESS_DELAY_S", 0.0, raising=False)
    out = tmp_path / "out"
    common = (*QUIET, "--epoch_size", "100")
    assert train.cli(tiny_args(train_root(), out, *common)) == 0
    captured = capsys.readouterr()
    assert "--epoch_size 100: split 'train' has 2 batches of --batch_size 2; epochs are capped at 2" in (
        captured.err
    )
    assert "validate 1/1" in captured.err  # the validation progress bar
    lines = captured.out.strip().splitlines()
    assert lines[0].startswith("epoch 1/1: loss depth ") and "val depth ARD " in lines[0]
    assert "motion mIoU" in lines[0] and "best val/motion_miou" in lines[0]
    assert lines[-1].startswith("trained 1 epochs; best epoch 1 by val/motion_miou ")
    assert f"files in {out}: best.pt, checkpoint.pt, metrics.json, tensorboard/" in lines[-1]
    for epochs, dropout in (("2", ("--dropout", "0.2")), ("3", ())):
        argv = tiny_args(train_root(), out, *common, *dropout, "--epochs", epochs)
        assert train.cli([*argv, "--resume", str(out / "checkpoint.pt")]) == 0, capsys.readouterr().err
        assert capsys.readouterr().out.startswith(f"epoch {epochs}/{epochs}: loss")
    events = EventAccumulator(str(out / "tensorboard")).Reload()
    for tag in ("loss/depth", "weight/motion", "lr"):
        assert [e.step for e in events.Scalars(tag)] == [1, 2, 3, 4, 5, 6], tag
    for tag in ("val/motion_miou", "val/depth_ard", "speed/time_per_step_s"):
        assert [e.step for e in events.Scalars(tag)] == [2, 4, 6], tag
    records = json.loads((out / "metrics.json").read_text())
    assert [e.value for e in events.Scalars("val/depth_ard")] == pytest.approx(
        [r["val/depth_ard"] for r in records], rel=1e-6
    )
    assert all(math.isfinite(r["loss/depth"]) for r in records)


# ---- 4. data that real datasets have -----------------------------------------------------------------------


def _with_another_camera(root: Path) -> Path:
    """Add a city of three 96x192 samples (another camera) to the split, with its flow."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    generate = [str(bin_dir / "make_synthetic_cityscapes"), "--out", str(root), "--split", SPLIT, "--city"]
    generate += ["other", "--sequences", "3", "--frames", "3", "--height", "96", "--width", "192"]
    generate += ["--annotate", "all", "--flow-gap", "2", "--seed", "9"]
    subprocess.run(generate, check=True, capture_output=True, env=env)
    flow = [str(bin_dir / "make_flow_dataset"), "--root", str(root), "--split", SPLIT, "--device", "cpu"]
    subprocess.run([*flow, "--height", "64", "--width", "128"], check=True, capture_output=True, env=env)
    return root


def test_a_split_mixing_image_sizes_trains_and_evaluates(tmp_path, capsys):
    """Regression: a split mixing cameras (128x256 and 96x192 here) crashed in the first validation ("stack
    expects each tensor to be equal size"), with no checkpoint; evaluate.py said only "Caught RuntimeError in
    DataLoader worker process 0". Batches of mixed sizes are now scored per size: the numbers equal a
    batch-of-one evaluation, with or without --output_size."""
    from mtl_perception_training import evaluate as evaluate_cli

    root = _with_another_camera(copy_of_root(tmp_path))
    out = tmp_path / "out"
    argv = tiny_args(root, out, "--no-export_onnx", "--tensorboard_images", "5", "--batch_size", "3")
    assert train.cli(argv) == 0, capsys.readouterr().err
    assert math.isfinite(json.loads((out / "metrics.json").read_text())[0]["val/motion_miou"])
    for size in (["--output_size", "128", "256"], []):
        scores = {}
        for batch, workers in (("4", "1"), ("1", "0")):
            result = tmp_path / f"eval{batch}.json"
            argv = ["--checkpoint", str(out / "best.pt"), "--data_path", str(root), "--split", SPLIT, *size]
            argv += ["--batch_size", batch, "--workers", workers, "--device", "cpu", "--json", str(result)]
            assert evaluate_cli.main(argv) == 0, capsys.readouterr().err
            scores[batch] = json.loads(result.read_text())
        assert scores["4"]["num_images"] == 7
        for key, value in scores["1"].items():
            if key != "setup" and value is not None:
                assert scores["4"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
