"""What a training run reports, on rank 0 only: ``metrics.json`` (one dict per epoch, rewritten atomically
after each epoch), TensorBoard events under ``<output_dir>/tensorboard`` (losses and weights per step,
the epoch's metrics, a few validation predictions as images), one line per epoch and a summary at the end."""

from __future__ import annotations

import json
import math
import resource
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from mtl_perception.atomic import atomic_write_bytes
from mtl_perception.colormap import colorize
from mtl_perception.data.cityscapes import semantic_palette
from mtl_perception.demo_figures import depth_to_color
from mtl_perception.learning.finite import LossWatch
from mtl_perception.learning.output_dir import BEST, CHECKPOINT, METRICS, ONNX, TENSORBOARD

MOTION_PALETTE = np.array([(0, 0, 0), (255, 64, 0)], dtype=np.uint8)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: the CUDA caching allocator's peak on a GPU, the process's peak RSS on the CPU.

    The RSS peak is the kernel's high-water mark of this address space (``VmHWM``), not ``getrusage``'s
    ``ru_maxrss``: Linux carries ``ru_maxrss`` over fork and exec, so a train.py started by a large parent
    (make_table, which evaluates in-process) would report the parent's peak as its own."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass  # not Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; bytes on macOS


#: the headline metric of each task in the epoch lines: (key, label, format)
HEADLINE = (("depth_ard", "depth ARD", ".4f"), ("semantic_miou", "semantic mIoU", ".4f"))
HEADLINE += (("motion_miou", "motion mIoU", ".4f"),)


def _metrics_text(record: dict) -> str:
    return ", ".join(
        f"{label} {record[f'val/{key}']:{fmt}}" for key, label, fmt in HEADLINE if f"val/{key}" in record
    )


def epoch_line(record: dict, *, epochs: int, tasks, best: dict | None) -> str:
    """One line per epoch: the mean losses, the validation metrics (when validated), the speed, the best."""
    losses = " ".join(f"{t} {record[f'loss/{t}']:.4g}" for t in tasks)
    parts = [f"epoch {record['epoch']}/{epochs}: loss {losses}"]
    if any(k.startswith("val/") for k in record):
        parts.append(f"val {_metrics_text(record)}")
    parts.append(f"{record['time_per_step_s']:.3g} s/step")
    if best is not None:
        parts.append(f"best {best['metric']} {best['value']:.4f} (epoch {best['epoch']})")
    return "; ".join(parts)


def summary_line(best: dict | None, *, history: list[dict], output_dir: Path) -> str:
    """The end of training: the best epoch and its metrics, and where the files are."""
    files = [n for n in (BEST, CHECKPOINT, ONNX, METRICS) if (Path(output_dir) / n).is_file()]
    where = f"files in {output_dir}: {', '.join(files)}, {TENSORBOARD}/"
    if best is None:
        return f"trained {len(history)} epochs; no validation score was finite, so no best.pt; {where}"
    record = next((r for r in history if r.get("epoch") == best["epoch"]), {})
    return (
        f"trained {len(history)} epochs; best epoch {best['epoch']} by {best['metric']} {best['value']:.4f} "
        f"({_metrics_text(record)}); {where}"
    )


class RunLog:
    def __init__(
        self,
        output_dir: Path,
        *,
        history: list[dict],
        resumed_at: int,
        semantic_mode: str,
        loss_warn_factor: float = 0.0,
    ):
        from torch.utils.tensorboard import SummaryWriter

        self.output_dir = Path(output_dir)
        self.history = list(history)
        # Resumed at global step S (the checkpoint's): TensorBoard hides what the interrupted run wrote past
        # S -- steps >= purge_step -- so no step shows twice; S itself holds the checkpoint's own last step
        # and validation point, and stays.
        purge_step = resumed_at + 1 if resumed_at else None
        self.writer = SummaryWriter(str(self.output_dir / TENSORBOARD), purge_step=purge_step)
        self.palette = semantic_palette(semantic_mode)
        self.loss_watch = LossWatch(loss_warn_factor)

    def step(
        self, global_step: int, losses: dict[str, float], weights: dict[str, float], lr: float, *, where: str
    ) -> None:
        """One step's numbers to TensorBoard; a warning on stderr (once) when a loss explodes."""
        warning = self.loss_watch.update(losses)
        if warning:
            tqdm.write(f"train.py: warning: {where}: {warning}", file=sys.stderr)
        for task, value in losses.items():
            self.writer.add_scalar(f"loss/{task}", value, global_step)
        for task, value in weights.items():
            self.writer.add_scalar(f"weight/{task}", value, global_step)
        self.writer.add_scalar("lr", lr, global_step)

    def epoch(self, record: dict, global_step: int) -> None:
        """Append the epoch's record to metrics.json (atomically) and its numbers to TensorBoard."""
        self.history.append(record)
        atomic_write_bytes(
            self.output_dir / METRICS, json.dumps(self.history, indent=2, allow_nan=True).encode()
        )
        for key, value in record.items():
            if key.startswith("val/") and isinstance(value, float) and math.isfinite(value):
                self.writer.add_scalar(key, value, global_step)
        for key in ("time_per_step_s", "samples_per_s", "peak_memory_mb"):
            if key in record:
                self.writer.add_scalar(f"speed/{key}", record[key], global_step)
        self.writer.flush()

    def predictions(self, model, dataset, device: torch.device, global_step: int, limit: int) -> None:
        """Input, then prediction beside ground truth for each task, for the first ``limit`` validation
        samples (the ground truth nearest-resized to the network's size)."""
        count = min(limit, len(dataset))
        was_training = model.training
        model.eval()
        for i in range(count):  # one at a time: the samples' ground truth may differ in size (cameras)
            batch = torch.utils.data.default_collate([dataset[i]])
            with torch.inference_mode():
                flow = batch.get("flow")
                outputs = model(batch["image"].to(device), None if flow is None else flow.to(device))
            panels = [batch["image"][0].permute(1, 2, 0).clamp(0, 255).byte().cpu().numpy()]
            for task, output in outputs.items():
                prediction, target = output[0].float().cpu(), batch[task][0].cpu()
                size = tuple(prediction.shape[-2:])
                if tuple(target.shape[-2:]) != size:
                    squeeze = target.dim() == 2
                    target = F.interpolate(
                        (target[None, None] if squeeze else target[None]).float(), size=size
                    )
                    target = target[0, 0] if squeeze else target[0]
                if task == "depth":
                    target = torch.where(target > 0, target.float(), torch.nan)
                    pair = [depth_to_color(prediction[0].numpy()), depth_to_color(target[0].numpy())]
                else:
                    palette = self.palette if task == "semantic" else MOTION_PALETTE
                    ids = prediction.argmax(0).numpy().astype(np.uint8)
                    pair = [colorize(ids, palette), colorize(target.numpy().astype(np.uint8), palette)]
                panels.append(np.concatenate(pair, axis=1))
            for task, panel in zip(["image", *outputs], panels, strict=True):
                self.writer.add_image(f"val/{task}/{i}", panel, global_step, dataformats="HWC")
        model.train(was_training)

    def close(self) -> None:
        self.writer.close()
