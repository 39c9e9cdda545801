"""Validation of a multi-task network on a split: the function train.py calls every ``--evaluate_every``
epochs and ``training/evaluate.py`` calls on a checkpoint or an ONNX file.

Resolution, as TI (ti_multitask.md §4.3): the network sees its input size (``--img_resize``), and the metrics
are computed at ``output_size`` (TI: 1024x2048, Cityscapes' own resolution): depth upsampled bilinearly,
argmax labels nearest. The ground truth is NOT resized to the network size first: ``EvalResize`` resizes
only the inputs, so the targets come at their own resolution and are nearest-resized to ``output_size``
only when that differs (a no-op for Cityscapes at 1024x2048). TI's ``AlignImages`` first resized the targets
to the flow image's size (768x384) and so effectively scored a downsampled ground truth; ours does not.
``output_size=None`` scores at the ground truth's own resolution.

A split may mix cameras (ground truth of several sizes): ``collate_by_size`` makes a loader batch of
sub-batches of one size each, which ``evaluate`` scores one after the other. Every metric is a sum over
pixels or a mean over images, so the numbers are those of scoring each size alone, at ``output_size`` or
at each image's own size.

Metric definitions are those of ``mtl_perception.metrics`` (one definition for training, evaluation and node
replay). ``depth_ard`` is TI's ARD 3-80 m averaged over images (TI's per-batch mean weighted by batch size,
with one image per batch, so it does not depend on the batch size or the number of processes); the other
depth metrics are sums over all valid pixels; mIoU comes from one confusion matrix per split.

Under ``torch.distributed`` each rank evaluates its shard (``ShardSampler``: no padding, so no image is
counted twice) with the unwrapped module (no collective per batch, so uneven shards cannot hang), and the
confusion matrices and depth sums are all-reduced once at the end: every rank returns the same numbers.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from mtl_perception.data.cityscapes import CITYSCAPES_LABELS, FIVE_CLASS_NAMES
from mtl_perception.learning.augment import resize
from mtl_perception.metrics import ConfusionMatrix, DepthARD, DepthErrors, iou_by_name
from mtl_perception.model.config import TASK_NAMES
from mtl_perception.pipeline import resize_for_network

MOTION_CLASS_NAMES = ("static", "moving")
#: the progress bar appears only on sets that take longer than this (evaluate.py on a long split)
PROGRESS_DELAY_S = 2.0


def semantic_class_names(num_classes: int) -> tuple[str, ...]:
    """TI's five classes, the 19 Cityscapes trainIds, or ``class<i>`` for any other class count."""
    if num_classes == len(FIVE_CLASS_NAMES):
        return FIVE_CLASS_NAMES
    train_ids = {
        lab.trainId: lab.name.replace(" ", "_") for lab in CITYSCAPES_LABELS if 0 <= lab.trainId < 255
    }
    if num_classes == 19 and sorted(train_ids) == list(range(19)):
        return tuple(train_ids[i] for i in range(19))
    return tuple(f"class{i}" for i in range(num_classes))


@dataclass
class EvalResize:
    """Validation transform: the network's inputs exactly as the node makes them; the targets kept at their
    own resolution.

    The image goes through the node's own resize (``pipeline.resize_for_network``: uint8, bilinear,
    antialiased when shrinking). A flow already at the network size (make_flow_dataset writes it there, as
    the node computes it) is fed untouched; a flow of another size is resized (area when shrinking, vectors
    scaled with the axes). Aligning it to the image first, as the augmentation does, would blur it by an up-
    and a down-sampling that the node never applies: that shifted a trained model's depth ARD by ~0.01."""

    size: tuple[int, int]

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        size = (int(self.size[0]), int(self.size[1]))
        out = dict(sample)
        image = torch.from_numpy(np.ascontiguousarray(sample["image"])).permute(2, 0, 1)[None]
        out["image"] = resize_for_network(image, size)[0].permute(1, 2, 0).numpy()
        flow = sample.get("flow")
        if flow is not None and flow.shape[:2] != size:
            out["flow"] = resize({"flow": flow}, size)["flow"]
        return out


def collate_by_size(samples: list[dict]) -> list[dict]:
    """A validation batch as a list of batches, one per ground-truth size in order of appearance (one
    batch when all samples agree): ``default_collate`` cannot stack maps of different sizes."""
    groups: dict[tuple, list[dict]] = {}
    for sample in samples:
        key = tuple(tuple(v.shape) for k, v in sorted(sample.items()) if isinstance(v, Tensor))
        groups.setdefault(key, []).append(sample)
    return [torch.utils.data.default_collate(group) for group in groups.values()]


class ShardSampler(torch.utils.data.Sampler[int]):
    """Indices rank, rank + world, ... of a dataset: every sample exactly once over all ranks (a
    ``DistributedSampler`` pads with repeats, which would count those images twice)."""

    def __init__(self, dataset_size: int, rank: int | None = None, world_size: int | None = None) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        self.rank = rank if rank is not None else (dist.get_rank() if distributed else 0)
        self.world_size = (
            world_size if world_size is not None else (dist.get_world_size() if distributed else 1)
        )
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside [0, {self.world_size})")
        self.indices = list(range(self.rank, dataset_size, self.world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _is_backend(model) -> bool:
    from mtl_perception.inference.backends import Backend  # deferred: onnxruntime is optional at import

    return isinstance(model, Backend)


def predict(model, image: Tensor, flow: Tensor | None) -> dict[str, Tensor]:
    """Depth (N,1,h,w) float32 metres and class ids (N,h,w) long at the network resolution, from a
    ``MultiTaskNet`` (argmax of its logits) or an inference ``Backend`` (its deployed outputs)."""
    if _is_backend(model):
        out = model.run(image, flow)
    else:
        out = model(image, flow)
        out = {t: v if t == "depth" else v.argmax(dim=1) for t, v in out.items()}
    return {t: v.float() if t == "depth" else v.long() for t, v in out.items()}


def _resize_prediction(task: str, value: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(value.shape[-2:]) == size:
        return value
    if task == "depth":
        return F.interpolate(value, size=size, mode="bilinear", align_corners=False)
    return F.interpolate(value[:, None].float(), size=size, mode="nearest")[:, 0].long()


def _resize_target(value: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest (TI's ``upsample_tensors`` for targets): only values present in the ground truth survive."""
    if tuple(value.shape[-2:]) == size:
        return value
    squeeze = value.dim() == 3
    resized = F.interpolate((value[:, None] if squeeze else value).double(), size=size, mode="nearest")
    resized = resized[:, 0] if squeeze else resized
    return resized.to(value.dtype)


class _Accumulators:
    def __init__(self, tasks: Sequence[str], num_semantic_classes: int) -> None:
        self.tasks = tuple(tasks)
        self.ard, self.depth = DepthARD(), DepthErrors()
        self.matrices = {}
        if "semantic" in tasks:
            self.matrices["semantic"] = ConfusionMatrix(num_semantic_classes)
        if "motion" in tasks:
            self.matrices["motion"] = ConfusionMatrix(len(MOTION_CLASS_NAMES))
        self.images = 0

    def update(self, pred: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> None:
        for task in self.tasks:
            target = batch[task]
            if task == "depth":
                for p, t in zip(pred["depth"], target, strict=True):
                    self.ard.update(p, t, batch_size=1)
                self.depth.update(pred["depth"], target)
            else:
                self.matrices[task].update(pred[task], target)

    def all_reduce(self) -> None:
        """Sum every accumulator over the ranks (NCCL reduces CUDA tensors, gloo CPU ones)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        if dist.get_backend() == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        else:
            device = torch.device("cpu")
        sums = torch.tensor(
            [self.ard.total, float(self.ard.weight), *self.depth.sums(), float(self.images)],
            dtype=torch.float64,
            device=device,
        )
        dist.all_reduce(sums)
        values = sums.tolist()
        self.ard.total, self.ard.weight = values[0], int(round(values[1]))
        self.depth.load_sums(values[2:6])
        self.images = int(round(values[6]))
        for matrix in self.matrices.values():
            counts = torch.from_numpy(matrix.matrix).to(device)
            dist.all_reduce(counts)
            matrix.matrix = counts.cpu().numpy()

    def results(self, class_names: Sequence[str]) -> dict[str, float]:
        out: dict[str, float] = {}
        if "depth" in self.tasks:
            depth = self.depth.compute()
            out.update(
                depth_ard=self.ard.compute(),
                depth_abs_rel=depth["abs_rel"],
                depth_rmse=depth["rmse"],
                depth_delta1=depth["delta1"],
            )
        for task, matrix in self.matrices.items():
            names = class_names if task == "semantic" else MOTION_CLASS_NAMES
            out[f"{task}_miou"] = matrix.miou()
            out[f"{task}_pixel_accuracy"] = matrix.pixel_accuracy()
            out.update(iou_by_name(matrix.iou(), names, prefix=f"{task}_iou_"))
        out["num_images"] = float(self.images)
        return out


def evaluate(
    model,
    loader: Iterable[Mapping[str, Tensor]],
    *,
    tasks: Sequence[str],
    device: str | torch.device,
    output_size: tuple[int, int] | None,
    num_semantic_classes: int,
    semantic_names: Sequence[str] | None = None,
    progress: str | None = None,
) -> dict[str, float]:
    """Metrics of ``model`` (a ``MultiTaskNet``, its DDP wrapper or an inference ``Backend``) on ``loader``
    (batches, or lists of batches from ``collate_by_size``). ``progress``: a tqdm bar with that label on
    stderr, shown once evaluating takes longer than ``PROGRESS_DELAY_S``; None: no bar.

    Keys: ``depth_ard``, ``depth_abs_rel``, ``depth_rmse`` (m), ``depth_delta1``, ``semantic_miou``,
    ``semantic_pixel_accuracy``, ``semantic_iou_<class>``..., ``motion_miou``, ``motion_pixel_accuracy``,
    ``motion_iou_static``, ``motion_iou_moving`` (fractions; only for ``tasks``) and ``num_images``.
    A module is evaluated in eval mode under ``torch.inference_mode`` and put back in the mode it was in.
    """
    tasks = tuple(t for t in TASK_NAMES if t in tasks)
    if not tasks:
        raise ValueError(f"evaluate: tasks must name at least one of {TASK_NAMES}")
    size = None if output_size is None else (int(output_size[0]), int(output_size[1]))
    if size is not None and min(size) <= 0:
        raise ValueError(f"evaluate: output_size must be positive (H, W), got {output_size}")
    names = (
        tuple(semantic_names) if semantic_names is not None else semantic_class_names(num_semantic_classes)
    )
    if len(names) != num_semantic_classes:
        raise ValueError(f"{len(names)} semantic class names for {num_semantic_classes} classes")
    backend = _is_backend(model)
    net = model if backend else getattr(model, "module", model)  # DDP: no collective per batch
    device = torch.device(model.device if backend else device)
    model_tasks = tuple(model.tasks) if backend else tuple(net.tasks)
    missing = [t for t in tasks if t not in model_tasks]
    if missing:
        raise ValueError(f"evaluate: the model has no {missing} output (its tasks: {model_tasks})")
    acc = _Accumulators(tasks, num_semantic_classes)
    was_training = None if backend else net.training
    if not backend:
        net.eval()
    bar = tqdm(
        total=len(loader) if hasattr(loader, "__len__") else None,
        desc=progress,
        unit="batch",
        disable=progress is None,
        delay=PROGRESS_DELAY_S,
        leave=False,
        dynamic_ncols=True,
        file=sys.stderr,
    )
    try:
        with torch.inference_mode(), bar:
            for group in loader:
                for batch in group if isinstance(group, list) else (group,):
                    _score_batch(net, batch, tasks=tasks, device=device, size=size, acc=acc)
                bar.update()
    finally:
        if was_training:
            net.train()
    acc.all_reduce()
    return acc.results(names)


def _score_batch(net, batch: Mapping[str, Tensor], *, tasks, device, size, acc: _Accumulators) -> None:
    missing = [k for k in ("image", *tasks) if k not in batch]
    if missing:
        raise ValueError(f"evaluate: batch has no {missing} (keys: {sorted(batch)})")
    image = batch["image"].to(device, non_blocking=True)
    flow = batch.get("flow")
    flow = None if flow is None else flow.to(device, non_blocking=True)
    pred = predict(net, image, flow)
    targets, scored = {}, {}
    for task in tasks:
        target = batch[task].to(device, non_blocking=True)
        target_size = size or tuple(target.shape[-2:])
        targets[task] = _resize_target(target, target_size)
        scored[task] = _resize_prediction(task, pred[task], target_size)
    acc.update(scored, targets)
    acc.images += int(image.shape[0])
