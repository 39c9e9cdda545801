"""What a training run reports, on rank 0 only: ``metrics.json`` (one dict per epoch, rewritten atomically
after each epoch) and TensorBoard events under ``<output_dir>/tensorboard`` (losses and weights per step,
the epoch's metrics, a few validation predictions as images)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from mtl_perception.atomic import atomic_write_bytes
from mtl_perception.data.cityscapes import semantic_palette
from mtl_perception.demo import depth_to_color
from mtl_perception.pipeline import colorize

METRICS_FILE = "metrics.json"
TENSORBOARD_DIR = "tensorboard"
MOTION_PALETTE = np.array([(0, 0, 0), (255, 64, 0)], dtype=np.uint8)


def read_metrics(output_dir: Path) -> list[dict]:
    path = Path(output_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return json.loads(path.read_text())


class RunLog:
    def __init__(self, output_dir: Path, *, history: list[dict], purge_step: int | None, semantic_mode: str):
        from torch.utils.tensorboard import SummaryWriter

        self.output_dir = Path(output_dir)
        self.history = list(history)
        # purge_step: after a resume, TensorBoard hides the events the interrupted run wrote past the
        # checkpoint, so the curves do not show the same steps twice.
        self.writer = SummaryWriter(str(self.output_dir / TENSORBOARD_DIR), purge_step=purge_step)
        self.palette = semantic_palette(semantic_mode)

    def step(self, global_step: int, losses: dict[str, float], weights: dict[str, float], lr: float) -> None:
        for task, value in losses.items():
            self.writer.add_scalar(f"loss/{task}", value, global_step)
        for task, value in weights.items():
            self.writer.add_scalar(f"weight/{task}", value, global_step)
        self.writer.add_scalar("lr", lr, global_step)

    def epoch(self, record: dict, global_step: int) -> None:
        """Append the epoch's record to metrics.json (atomically) and its numbers to TensorBoard."""
        self.history.append(record)
        atomic_write_bytes(
            self.output_dir / METRICS_FILE, json.dumps(self.history, indent=2, allow_nan=True).encode()
        )
        for key, value in record.items():
            if key.startswith("val/") and isinstance(value, float) and math.isfinite(value):
                self.writer.add_scalar(key, value, global_step)
        for key in ("time_per_step_s", "samples_per_s", "peak_memory_mb"):
            if key in record:
                self.writer.add_scalar(f"speed/{key}", record[key], global_step)
        self.writer.flush()

    def predictions(self, batch: dict, outputs: dict[str, torch.Tensor], global_step: int, limit: int) -> None:
        """Input, then prediction beside ground truth for each task, for the first ``limit`` samples."""
        for i in range(min(limit, batch["image"].shape[0])):
            panels = [batch["image"][i].permute(1, 2, 0).clamp(0, 255).byte().cpu().numpy()]
            for task, output in outputs.items():
                prediction, target = output[i].float().cpu(), batch[task][i].cpu()
                if task == "depth":
                    target = torch.where(target > 0, target.float(), torch.nan)
                    pair = [depth_to_color(prediction[0].numpy()), depth_to_color(target[0].numpy())]
                else:
                    palette = self.palette if task == "semantic" else MOTION_PALETTE
                    ids = prediction.argmax(0).numpy().astype(np.uint8)
                    pair = [colorize(ids, palette), colorize(target.numpy().astype(np.uint8), palette)]
                panels.append(np.concatenate(pair, axis=1))
            height = panels[0].shape[0]
            for task, panel in zip(["image", *outputs], panels, strict=True):
                if panel.shape[0] != height:  # ground truth at --output_size: show at the input size
                    continue
                self.writer.add_image(f"val/{task}/{i}", panel, global_step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()
