"""Metrics against independent oracles: torchmetrics confusion matrix / Jaccard, and a literal numpy ARD."""

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassJaccardIndex

from mtl_perception.metrics import ConfusionMatrix, DepthARD, abs_rel_diff

RNG = np.random.default_rng(1)


def reference_ard(pred: np.ndarray, target: np.ndarray) -> float:
    """TI AbsRelDiffRng3To80 written out pixel by pixel (slow, obviously correct)."""
    errors = []
    for p, t in zip(pred.ravel().tolist(), target.ravel().tolist(), strict=True):
        if t == 0 or not np.isfinite(t):
            continue
        p = 0.0 if not np.isfinite(p) else p
        p, t = min(max(p, -80.0), 80.0), min(max(t, -80.0), 80.0)
        errors.append(abs(p - t) / abs(t) if t > 3 else 0.0)
    return float(np.mean(errors)) if len(errors) >= 2 else float("nan")


def test_ard_matches_reference():
    target = RNG.uniform(0.5, 120, (2, 12, 17)).astype(np.float32)
    target[RNG.random(target.shape) < 0.2] = 0
    target[RNG.random(target.shape) < 0.1] = np.nan
    pred = target * RNG.uniform(0.7, 1.3, target.shape).astype(np.float32) + RNG.normal(0, 2, target.shape)
    pred[RNG.random(target.shape) < 0.05] = np.nan
    expected = reference_ard(pred, target)
    assert abs_rel_diff(pred, target) == pytest.approx(expected, rel=1e-9)
    assert abs_rel_diff(torch.from_numpy(pred), torch.from_numpy(target)) == pytest.approx(expected, rel=1e-9)


def test_ard_hand_values():
    # t = 10: |12-10|/10 = 0.2; t = 2 (<= 3 m): counts as 0; t = 100 clamps to 80, p = 90 clamps to 80: 0.
    target = np.array([10.0, 2.0, 100.0, 0.0])
    pred = np.array([12.0, 5.0, 90.0, 7.0])
    assert abs_rel_diff(pred, target) == pytest.approx(0.2 / 3)


def test_ard_nan_with_fewer_than_two_valid():
    assert np.isnan(abs_rel_diff(np.ones(4), np.array([0, 0, 5.0, np.nan])))
    with pytest.raises(ValueError, match="shape"):
        abs_rel_diff(np.ones((2, 3)), np.ones((3, 2)))


def test_depth_ard_stream_is_batch_weighted_mean():
    meter = DepthARD()
    a = (np.full(4, 11.0), np.full(4, 10.0))  # 0.1
    b = (np.full(4, 13.0), np.full(4, 10.0))  # 0.3
    meter.update(*a, batch_size=1)
    meter.update(*b, batch_size=3)
    meter.update(np.ones(3), np.zeros(3))  # no valid pixels: skipped
    assert meter.compute() == pytest.approx((0.1 + 3 * 0.3) / 4)


@pytest.mark.parametrize("num_classes", [2, 5])
def test_confusion_matrix_matches_torchmetrics(num_classes):
    frames = []
    for _ in range(4):
        target = RNG.integers(0, num_classes, (9, 13))
        pred = np.where(RNG.random(target.shape) < 0.7, target, RNG.integers(0, num_classes, target.shape))
        target[RNG.random(target.shape) < 0.15] = 255
        frames.append((pred.astype(np.uint8), target.astype(np.uint8)))
    ours = ConfusionMatrix(num_classes)
    oracle_cm = MulticlassConfusionMatrix(num_classes, ignore_index=255)
    oracle_iou = MulticlassJaccardIndex(num_classes, average="none", ignore_index=255)
    for pred, target in frames:
        ours.update(pred, target)
        oracle_cm.update(torch.from_numpy(pred).long(), torch.from_numpy(target).long())
        oracle_iou.update(torch.from_numpy(pred).long(), torch.from_numpy(target).long())
    np.testing.assert_array_equal(ours.matrix, oracle_cm.compute().numpy())
    np.testing.assert_allclose(ours.iou(), oracle_iou.compute().numpy(), rtol=1e-6)
    assert ours.miou() == pytest.approx(float(oracle_iou.compute().mean()), rel=1e-6)


def test_absent_class_excluded_from_mean():
    """Class 2 never appears: IoU NaN (torchmetrics would report 0), mean over the two present classes."""
    target = np.array([0, 0, 1, 1, 255])
    pred = np.array([0, 1, 1, 1, 2])  # the prediction under the ignored pixel does not count
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    iou = cm.iou()
    assert iou[0] == pytest.approx(1 / 2) and iou[1] == pytest.approx(2 / 3) and np.isnan(iou[2])
    oracle = MulticlassJaccardIndex(3, average="none", ignore_index=255)
    present = oracle(torch.from_numpy(pred), torch.from_numpy(target)).numpy()[:2]
    np.testing.assert_allclose(iou[:2], present, rtol=1e-6)
    assert cm.miou() == pytest.approx(np.mean(present))


def test_confusion_matrix_rejects_bad_input():
    cm = ConfusionMatrix(2)
    with pytest.raises(ValueError, match=r"predicted class ids must lie in \[0, 2\)"):
        cm.update(np.array([0, 3]), np.array([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros(3), np.zeros(4))
    assert np.isnan(ConfusionMatrix(2).miou())
