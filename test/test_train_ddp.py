"""DistributedDataParallel on the CPU: torchrun with 2 gloo processes (batch 1 each) follows the loss curve
of one process with the same global batch (2).

What makes the two runs compute the same function (and what the test therefore fixes):
* the data: both see the same samples per step with the same augmentation (EpochShuffleSampler +
  SeededAugment: a function of seed, epoch and index only);
* BatchNorm: without SyncBN each process normalises with its own half batch (as TI's DataParallel did per
  GPU), and torch's SyncBatchNorm refuses CPU tensors, so the test freezes BN (--freeze_bn: running
  statistics, a fixed affine map), which makes the forward independent of how the batch is split;
* dropout: its masks come from each process's generator, so --dropout 0;
* the loss normalisation: each process divides by its own valid-pixel count and DDP averages the
  gradients, which equals the full-batch mean only when both halves have the same count. Motion labels
  have no ignored pixel except at rotation borders, so the test trains motion alone with
  --transform_rotation 0.
Remaining difference: float summation order (gradients all-reduced vs summed in one batch). Tolerance:
relative 1e-4 on every step's loss and on the final weights (observed here: 9e-8 on the losses, 2e-6 on
the weights, relative to each tensor's largest value).
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from train_fixtures import tiny_args, train_root

from mtl_perception_training import train

FLAGS = (
    "--tasks",
    "motion",
    "--transform_rotation",
    "0",
    "--dropout",
    "0",
    "--freeze_bn",
    "--warmup_epochs",
    "0",
    "--lr",
    "1e-3",
    "--epochs",
    "2",
    "--evaluate_every",
    "2",
    "--no-export_onnx",
    "--tensorboard_images",
    "0",
    "--device",
    "cpu",
)


def _loss_curve(output_dir) -> list[float]:
    events = EventAccumulator(str(output_dir / "tensorboard")).Reload()
    return [e.value for e in events.Scalars("loss/motion")]


def test_two_gloo_processes_follow_one_process(tmp_path, torch_one_thread):
    root = train_root()
    one, two = tmp_path / "one", tmp_path / "two"
    train.main(train.parse_args(tiny_args(root, one, *FLAGS)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        train.__file__,
        *tiny_args(root, two, *FLAGS),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    curve_one, curve_two = _loss_curve(one), _loss_curve(two)
    assert len(curve_one) == len(curve_two) == 4  # 2 epochs x 2 steps of the global batch
    assert len(set(curve_one)) == 4  # the curve moves: the comparison is not of constants
    torch.testing.assert_close(torch.tensor(curve_two), torch.tensor(curve_one), rtol=1e-4, atol=0)
    a = torch.load(one / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(two / "checkpoint.pt", weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-6, msg=lambda m, k=key: f"{k}: {m}")
