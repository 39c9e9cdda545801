"""Per-task training losses, as TI's edgeai-torchvision multi-task recipe (reference ti_multitask.md §4).

* depth: ``F.smooth_l1_loss`` (beta 1) averaged over the valid pixels of the batch (target > 0 and finite;
  TI tests target != 0, the same on its data where depth is clipped to [1, 255] m), plus TI's scale loss:
  Charbonnier ``((x*beta)^2 + eps^2)^alpha - (eps^2)^alpha`` (alpha 0.45, eps 1e-3, beta 1) of
  mean(pred_valid) - mean(target_valid) over the batch; the two summed with weight 1 each.
* semantic, motion: cross entropy with ``ignore_index`` 255, the summed (optionally class-weighted) NLL
  divided by the number of VALID pixels. TI divided by the count of pixels with target >= 0, which includes
  the 255-ignore pixels, so its loss (and its gradient) shrank with every ignored pixel: a frame half
  ignored trained at half strength. Fixed here; ``segmentation_loss(..., ti_count_bug=True)`` keeps TI's
  denominator for comparison (tests).
* class weights, when given, weight the NLL at every step. TI applied them in only 20 % of the forward
  calls, drawn at random (``np.random.random() < 0.2``); ``class_weight_probability=0.2`` reproduces that
  (drawn from torch's global CPU generator, so a seeded run and ``--resume`` replay the same draws).

A batch without a single valid pixel (all depth invalid, all labels ignored) gives a loss of exactly 0 with
a zero (finite) gradient, never NaN: every reduction is a masked sum over a count clamped to >= 1, which
also keeps the step free of host synchronisation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mtl_perception.metrics import IGNORE_INDEX
from mtl_perception.model.config import TASK_NAMES

CHARBONNIER_ALPHA, CHARBONNIER_EPS, CHARBONNIER_BETA = 0.45, 1e-3, 1.0
SEGMENTATION_TASKS = ("semantic", "motion")


def charbonnier(
    x: Tensor, alpha: float = CHARBONNIER_ALPHA, eps: float = CHARBONNIER_EPS, beta: float = CHARBONNIER_BETA
) -> Tensor:
    """TI's ``loss_utils`` Charbonnier penalty, zero at x = 0."""
    return ((x * beta) ** 2 + eps**2) ** alpha - (eps**2) ** alpha


def _check_shapes(task: str, pred: Tensor, target: Tensor, expected: str) -> None:
    if pred.dim() != 4 or pred.shape[0] != target.shape[0] or pred.shape[-2:] != target.shape[-2:]:
        raise ValueError(
            f"{task}: prediction {tuple(pred.shape)} and target {tuple(target.shape)} do not match "
            f"(expected {expected}; targets must be at the output resolution)"
        )


def depth_loss(pred: Tensor, target: Tensor) -> Tensor:
    """SmoothL1 over valid pixels + Charbonnier scale loss; pred and target (N, 1, H, W) metres, 0 invalid."""
    _check_shapes("depth", pred, target, "(N, 1, H, W) prediction and target")
    if target.dim() == 3:
        target = target[:, None]
    target = target.to(pred.dtype)
    valid = torch.isfinite(target) & (target > 0)
    mask = valid.to(pred.dtype)
    count = mask.sum().clamp_min(1.0)
    safe_target = torch.where(valid, target, torch.zeros_like(target))  # NaN * 0 would still be NaN
    safe_pred = torch.where(valid, pred, torch.zeros_like(pred))
    supervised = (F.smooth_l1_loss(safe_pred, safe_target, reduction="none", beta=1.0) * mask).sum() / count
    scale = charbonnier((safe_pred * mask).sum() / count - (safe_target * mask).sum() / count)
    return supervised + scale


def segmentation_loss(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    *,
    ti_count_bug: bool = False,
) -> Tensor:
    """Cross entropy: sum of (class-weighted) NLL over valid pixels / number of valid pixels.

    logits (N, C, H, W), target (N, H, W) long with ``ignore_index`` for pixels without a label. With class
    weights this is TI's normalisation (weighted sum / pixel count), not ``F.cross_entropy``'s ``mean``
    (weighted sum / sum of the targets' weights). ``ti_count_bug=True`` divides by TI's count instead (every
    pixel with target >= 0, the ignored ones included); only for comparison.
    """
    _check_shapes("segmentation", logits, target, "(N, C, H, W) logits and (N, H, W) labels")
    if target.dim() != 3:
        raise ValueError(f"segmentation: labels must be (N, H, W), got {tuple(target.shape)}")
    num_classes = logits.shape[1]
    target = target.long()
    out_of_range = ((target < 0) | (target >= num_classes)) & (target != ignore_index)
    if bool(out_of_range.any()):
        bad = torch.unique(target[out_of_range])[:5].tolist()
        raise ValueError(
            f"segmentation: labels {bad} outside [0, {num_classes}) and not the ignore index {ignore_index}"
        )
    if weight is not None:
        weight = weight.to(device=logits.device, dtype=logits.dtype)
        if weight.shape != (num_classes,):
            raise ValueError(f"class weights have shape {tuple(weight.shape)}, expected ({num_classes},)")
    total = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index, reduction="sum")
    counted = (target >= 0) if ti_count_bug else (target != ignore_index)
    return total / counted.sum().clamp_min(1).to(total.dtype)


class MultiTaskCriterion:
    """``criterion(outputs, batch) -> {task: scalar loss}`` for the tasks it was built with."""

    def __init__(
        self,
        tasks: Sequence[str],
        class_weights: Mapping[str, Tensor] | None = None,
        class_weight_probability: float = 0.0,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        tasks = tuple(tasks)
        if not tasks or any(t not in TASK_NAMES for t in tasks) or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks must be a non-empty subset of {TASK_NAMES} without repeats, got {tasks}")
        class_weights = dict(class_weights or {})
        for task, w in class_weights.items():
            if task not in SEGMENTATION_TASKS or task not in tasks:
                raise ValueError(
                    f"class weights given for {task!r}; only the segmentation tasks trained here take them: "
                    f"{[t for t in tasks if t in SEGMENTATION_TASKS]}"
                )
            w = torch.as_tensor(w, dtype=torch.float32)
            if w.dim() != 1 or not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
                raise ValueError(
                    f"class weights for {task!r} must be a 1-D finite non-negative vector, got {w}"
                )
            class_weights[task] = w
        if not 0.0 <= class_weight_probability <= 1.0:
            raise ValueError(f"class_weight_probability must be in [0, 1], got {class_weight_probability}")
        self.tasks, self.class_weights = tasks, class_weights
        self.class_weight_probability = float(class_weight_probability)
        self.ignore_index = ignore_index

    def _weights_this_step(self) -> bool:
        """0: every step (this project's default); p in (0, 1]: TI's random draw, with probability p."""
        if not self.class_weights or self.class_weight_probability == 0.0:
            return True
        return bool(torch.rand(()) < self.class_weight_probability)

    def __call__(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        missing = [t for t in self.tasks if t not in outputs or t not in batch]
        if missing:
            raise ValueError(
                f"criterion: tasks {missing} need both a network output and a target; outputs have "
                f"{sorted(outputs)}, the batch has {sorted(k for k in batch if k in TASK_NAMES)}"
            )
        weighted = self._weights_this_step()
        losses = {}
        for task in self.tasks:
            # In float32 under autocast too: a float16 sum over a batch of depths in metres overflows (65504),
            # and bfloat16 would round the depth targets to 8 bits of mantissa (0.2 m at 50 m).
            pred = outputs[task].float()
            target = batch[task].to(pred.device, non_blocking=True)
            if task == "depth":
                losses[task] = depth_loss(pred, target)
            else:
                weight = self.class_weights.get(task) if weighted else None
                losses[task] = segmentation_loss(pred, target, weight, self.ignore_index)
        return losses


def build_criterion(
    *,
    tasks: Sequence[str],
    class_weights: Mapping[str, Tensor] | None = None,
    class_weight_probability: float = 0.0,
) -> MultiTaskCriterion:
    """The per-task losses of ``tasks``. ``class_weights`` maps "semantic"/"motion" to a (C,) vector (e.g.
    TI's ``TI_CLASS_WEIGHTS``); ``class_weight_probability`` 0 applies them every step, 0.2 is TI's scheme."""
    return MultiTaskCriterion(tasks, class_weights, class_weight_probability)


#: TI's class weights (cityscapes_plus.py): five-class semantic and the two motion classes.
TI_CLASS_WEIGHTS: dict[str, tuple[float, ...]] = {
    "semantic": (0.22567085, 1.89944273, 5.24032014, 1.0, 0.13516443),
    "motion": (0.05, 0.95),
}
