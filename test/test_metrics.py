"""Metrics against independent oracles: torchmetrics confusion matrix / Jaccard, and a literal numpy ARD."""

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassJaccardIndex

from mtl_perception.metrics import ConfusionMatrix, DepthARD, DepthErrors, abs_rel_diff, delta_m, iou_by_name

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


def numpy_depth_errors(pred: np.ndarray, target: np.ndarray) -> dict:
    """Eigen et al. AbsRel / RMSE / delta1 over 0 < gt <= 80 m, prediction clamped to [1e-3, 80], numpy."""
    valid = np.isfinite(target) & (target > 0) & (target <= 80)
    p = np.clip(np.nan_to_num(pred[valid].astype(np.float64), nan=1e-3), 1e-3, 80)
    t = target[valid].astype(np.float64)
    return {
        "abs_rel": float(np.mean(np.abs(p - t) / t)),
        "rmse": float(np.sqrt(np.mean((p - t) ** 2))),
        "delta1": float(np.mean(np.maximum(p / t, t / p) < 1.25)),
    }


def test_depth_errors_are_sums_over_all_pixels():
    """Two batches of very different valid counts: the result is the pixel-pooled value (not the mean of
    the per-batch values), equal to numpy on the concatenated pixels."""
    target = RNG.uniform(0.5, 100, (3, 10, 12))
    target[RNG.random(target.shape) < 0.2] = 0
    target[2, :8] = 0  # third image almost empty
    target[0, 0, :4] = np.nan
    pred = target * RNG.uniform(0.6, 1.4, target.shape)
    pred[RNG.random(target.shape) < 0.03] = np.nan
    meter = DepthErrors()
    meter.update(pred[:2], target[:2])
    meter.update(torch.from_numpy(pred[2:, None]), torch.from_numpy(target[2:]))  # (N,1,H,W) prediction
    expected = numpy_depth_errors(pred, target)
    for key, value in meter.compute().items():
        assert value == pytest.approx(expected[key], rel=1e-12), key
    per_batch = np.mean(
        [
            numpy_depth_errors(pred[:2], target[:2])["abs_rel"],
            numpy_depth_errors(pred[2:], target[2:])["abs_rel"],
        ]
    )
    assert meter.compute()["abs_rel"] != pytest.approx(per_batch, rel=1e-3)
    restored = DepthErrors()
    restored.load_sums(meter.sums())
    assert restored.compute() == meter.compute()


def test_depth_errors_hand_values_and_empty():
    meter = DepthErrors()
    # t=10,p=12: rel 0.2, sq 4, ratio 1.2 (<1.25); t=20,p=10: rel 0.5, sq 100, ratio 2; t=90 > 80 m: skipped
    meter.update(np.array([12.0, 10.0, 5.0, 3.0]), np.array([10.0, 20.0, 90.0, 0.0]))
    result = meter.compute()
    assert result["abs_rel"] == pytest.approx(0.35)
    assert result["rmse"] == pytest.approx(np.sqrt(52.0))
    assert result["delta1"] == pytest.approx(0.5)
    assert all(np.isnan(v) for v in DepthErrors().compute().values())


def test_iou_by_name():
    assert iou_by_name([0.5, np.nan], ["static", "moving"], "motion_iou_") == pytest.approx(
        {"motion_iou_static": 0.5, "motion_iou_moving": np.nan}, nan_ok=True
    )
    with pytest.raises(ValueError, match="2 IoU values but 3 class names"):
        iou_by_name([0.5, 0.1], ["a", "b", "c"], "x_")


def test_delta_m_formula_and_sign():
    """Maninis' Δm in the drop convention: (100/K) Σ (-1)^δ (M - B) / B, δ = 1 when higher is better."""
    base = {"depth_ard": 0.10, "semantic_miou": 0.80, "motion_miou": 0.50}
    higher = {"depth_ard": False, "semantic_miou": True, "motion_miou": True}
    # ARD 10 % worse (+10), semantic 5 % worse (+5), motion 10 % better (-10): (10 + 5 - 10) / 3
    mtl = {"depth_ard": 0.11, "semantic_miou": 0.76, "motion_miou": 0.55}
    assert delta_m(mtl, base, higher) == pytest.approx(5 / 3)
    assert delta_m(base, base, higher) == 0.0
    assert delta_m({"semantic_miou": 0.88}, base, {"semantic_miou": True}) == pytest.approx(-10.0)
    with pytest.raises(ValueError, match="'motion_miou' missing from the metrics"):
        delta_m({"depth_ard": 0.1}, base, {"motion_miou": True})
    with pytest.raises(ValueError, match="non-zero baseline"):
        delta_m(mtl, {**base, "depth_ard": 0.0}, higher)
