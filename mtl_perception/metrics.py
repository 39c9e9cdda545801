"""Evaluation metrics, defined once for training, offline evaluation and node-replay evaluation.

* Depth: absolute relative difference exactly as TI's ``AbsRelDiffRng3To80`` (edgeai-torchvision
  ``supervised_relative_error_rng3to80``): over pixels whose target is non-zero (and finite here, because
  our ground truth marks invalid depth with NaN, REP 118), clamp prediction and target to [-80, 80] m,
  error = |p - t| / |t| where t > 3 m and 0 elsewhere, mean over *all* valid pixels (so near pixels pull
  the mean down exactly as in TI's numbers), NaN with fewer than 2 valid pixels.
* Segmentation: a confusion matrix accumulated over many frames (TI's ``SegmentationMetricsCalc``);
  target labels outside [0, n) (e.g. 255 = ignore) are skipped; IoU_c = TP / (TP + FP + FN), NaN for a
  class absent from both prediction and target, mIoU = nanmean over classes (TI's evaluator excludes
  empty classes from the mean too).
* Depth, the standard companions (Eigen et al. 2014): AbsRel, RMSE and delta < 1.25 over pixels with a
  ground truth in (0, 80] m, the prediction clamped to [1e-3, 80] m. They are accumulated as SUMS over all
  valid pixels of the split (``DepthErrors``), not as per-batch means averaged over batches (MTAN, FAMO,
  LibMTL), so they depend neither on the batch size nor on how a split is sharded over processes.
* Multi-task summary: ``delta_m`` (Maninis et al. 2019, the drop convention of Nash-MTL/CAGrad/FAMO).

Inputs may be numpy arrays or torch tensors (any device); results are Python floats / numpy arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from mtl_perception.data.cityscapes import IGNORE_INDEX  # the one ignore label of the whole project


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    array = np.asarray(x)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def abs_rel_diff(pred, target, min_depth: float = 3.0, max_depth: float = 80.0) -> float:
    """Depth ARD (fraction, x100 for %) of one frame or batch, TI ``AbsRelDiffRng3To80`` semantics.

    A non-finite prediction at a valid pixel counts as 0 m (what a network output <= 0 becomes after
    clamping in TI's code), so a NaN-marked prediction is penalised instead of poisoning the mean.
    """
    pred = _as_tensor(pred).detach().to(torch.float64)
    target = _as_tensor(target).detach().to(device=pred.device, dtype=torch.float64)
    if pred.ndim == target.ndim + 1 and pred.shape[1] == 1:  # (N, 1, H, W) network depth vs (N, H, W) target
        pred = pred[:, 0]
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    valid = (target != 0) & torch.isfinite(target)
    if int(valid.sum()) < 2:
        return float("nan")
    p = torch.nan_to_num(pred[valid], nan=0.0, posinf=max_depth, neginf=-max_depth)
    p = p.clamp(-max_depth, max_depth)
    t = target[valid].clamp(-max_depth, max_depth)
    err = torch.where(t > min_depth, (p - t).abs() / t.abs(), torch.zeros_like(t))
    return float(err.mean())


class DepthARD:
    """Streaming ARD: per-call mean, averaged over calls weighted by batch size (TI's averaging).

    Calls whose frame has fewer than 2 valid pixels (NaN) are skipped.
    """

    def __init__(self, min_depth: float = 3.0, max_depth: float = 80.0) -> None:
        self.min_depth, self.max_depth = min_depth, max_depth
        self.reset()

    def reset(self) -> None:
        self.total = 0.0
        self.weight = 0

    def update(self, pred, target, batch_size: int = 1) -> float:
        value = abs_rel_diff(pred, target, self.min_depth, self.max_depth)
        if not np.isnan(value):
            self.total += value * batch_size
            self.weight += batch_size
        return value

    def compute(self) -> float:
        return self.total / self.weight if self.weight else float("nan")


class ConfusionMatrix:
    """Streaming confusion matrix (rows = target, columns = prediction) for semantic / motion mIoU."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred, target) -> None:
        """Add one frame (or batch) of class ids; target labels outside [0, n) are skipped."""
        pred = _as_tensor(pred).detach()
        target = _as_tensor(target).detach().to(pred.device)
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
        pred = pred.reshape(-1).to(torch.int64)
        target = target.reshape(-1).to(torch.int64)
        n = self.num_classes
        valid = (target >= 0) & (target < n) & (target != self.ignore_index)
        pred, target = pred[valid], target[valid]
        if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= n):
            low, high = int(pred.min()), int(pred.max())
            raise ValueError(f"predicted class ids must lie in [0, {n}), got [{low}, {high}]")
        counts = torch.bincount(target * n + pred, minlength=n * n)
        self.matrix += counts.reshape(n, n).cpu().numpy()

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for classes that appear in neither prediction nor target."""
        tp = np.diag(self.matrix).astype(np.float64)
        denom = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)

    def miou(self) -> float:
        """Mean IoU over classes present (fraction; x100 for TI's percentages); NaN when nothing counted."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")


class DepthErrors:
    """Streaming AbsRel, RMSE and delta < 1.25 as sums over every valid pixel (see the module docstring).

    Valid: finite ground truth in (0, max_depth]; a non-finite prediction counts as ``min_depth``.
    ``sums()`` / ``from_sums`` expose the four accumulators (float64) for a distributed all-reduce.
    """

    def __init__(self, min_depth: float = 1e-3, max_depth: float = 80.0) -> None:
        self.min_depth, self.max_depth = min_depth, max_depth
        self.reset()

    def reset(self) -> None:
        self.abs_rel = self.squared = self.delta1 = 0.0
        self.count = 0

    def update(self, pred, target) -> None:
        pred = _as_tensor(pred).detach().to(torch.float64)
        target = _as_tensor(target).detach().to(device=pred.device, dtype=torch.float64)
        if pred.ndim == target.ndim + 1 and pred.shape[1] == 1:
            pred = pred[:, 0]
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
        valid = torch.isfinite(target) & (target > 0) & (target <= self.max_depth)
        t = target[valid]
        p = torch.nan_to_num(pred[valid], nan=self.min_depth, posinf=self.max_depth, neginf=self.min_depth)
        p = p.clamp(self.min_depth, self.max_depth)
        self.abs_rel += float(((p - t).abs() / t).sum())
        self.squared += float(((p - t) ** 2).sum())
        self.delta1 += float((torch.maximum(p / t, t / p) < 1.25).sum())
        self.count += int(t.numel())

    def sums(self) -> list[float]:
        return [self.abs_rel, self.squared, self.delta1, float(self.count)]

    def load_sums(self, sums: Sequence[float]) -> None:
        self.abs_rel, self.squared, self.delta1 = (float(v) for v in sums[:3])
        self.count = int(round(float(sums[3])))

    def compute(self) -> dict[str, float]:
        """{"abs_rel", "rmse" (m), "delta1" (fraction)}; NaN without a valid pixel."""
        if not self.count:
            return {"abs_rel": float("nan"), "rmse": float("nan"), "delta1": float("nan")}
        return {
            "abs_rel": self.abs_rel / self.count,
            "rmse": float(np.sqrt(self.squared / self.count)),
            "delta1": self.delta1 / self.count,
        }


def iou_by_name(iou: Sequence[float], names: Sequence[str], prefix: str) -> dict[str, float]:
    """{f"{prefix}{name}": IoU} for per-class IoUs (e.g. ``ConfusionMatrix.iou()``), names in class order."""
    iou = list(iou)
    if len(iou) != len(names):
        raise ValueError(f"{len(iou)} IoU values but {len(names)} class names: {list(names)}")
    return {f"{prefix}{name}": float(value) for name, value in zip(names, iou, strict=True)}


def delta_m(
    metrics: Mapping[str, float], baselines: Mapping[str, float], higher_is_better: Mapping[str, bool]
) -> float:
    """Δm% = (100 / K) Σ_k (-1)^δ_k (M_k - B_k) / B_k over the K metrics named in ``higher_is_better``.

    δ_k = 1 when higher is better. Sign: the "drop" convention of Nash-MTL, CAGrad and FAMO, so Δm > 0
    means worse than the baselines on average and lower is better (Maninis et al. use the opposite sign).
    K counts metrics, not tasks. ``baselines`` are the single-task models' values of the same metrics.
    """
    if not higher_is_better:
        raise ValueError("delta_m needs at least one metric in higher_is_better")
    total = 0.0
    for name, higher in higher_is_better.items():
        for where, values in (("metrics", metrics), ("baselines", baselines)):
            if name not in values:
                raise ValueError(f"delta_m: {name!r} missing from the {where} (have {sorted(values)})")
        m, b = float(metrics[name]), float(baselines[name])
        if not (np.isfinite(m) and np.isfinite(b)) or b == 0:
            raise ValueError(f"delta_m: {name!r} needs finite values and a non-zero baseline, got {m}, {b}")
        sign = -1.0 if higher else 1.0
        total += sign * (m - b) / b
    return 100.0 * total / len(higher_is_better)
