"""Losses against independent formulas: torch.nn.functional on hand-picked pixels, numpy, TI's definitions."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtl_perception.learning.losses import (
    TI_CLASS_WEIGHTS,
    build_criterion,
    charbonnier,
    depth_loss,
    segmentation_loss,
)

GEN = torch.Generator().manual_seed(0)


def numpy_depth_loss(pred: np.ndarray, target: np.ndarray) -> float:
    """TI's SmoothL1Diff + ScaleLoss written out on the valid pixels with numpy (float64)."""
    valid = np.isfinite(target) & (target > 0)
    p, t = pred[valid].astype(np.float64), target[valid].astype(np.float64)
    d = np.abs(p - t)
    smooth = np.where(d < 1.0, 0.5 * d**2, d - 0.5).mean()
    x = p.mean() - t.mean()
    scale = (x**2 + 1e-6) ** 0.45 - (1e-6) ** 0.45
    return float(smooth + scale)


def test_charbonnier_formula():
    x = torch.tensor([-2.0, -1e-3, 0.0, 0.5, 3.0], dtype=torch.float64)
    expected = ((x * 1.0) ** 2 + 1e-3**2) ** 0.45 - (1e-3**2) ** 0.45
    torch.testing.assert_close(charbonnier(x), expected)
    assert charbonnier(torch.zeros(())) == 0


def test_depth_loss_matches_numpy_on_valid_pixels():
    target = torch.rand(2, 1, 7, 9, generator=GEN, dtype=torch.float64) * 60 + 1
    target[torch.rand(target.shape, generator=GEN) < 0.3] = 0
    target[0, 0, 0, :3] = float("nan")  # NaN-marked invalid ground truth, as the node replay writes it
    pred = target.nan_to_num(7.0) + torch.randn(target.shape, generator=GEN, dtype=torch.float64) * 2
    pred[target == 0] = 1e6  # predictions at invalid pixels must not matter
    ours = depth_loss(pred, target)
    assert float(ours) == pytest.approx(numpy_depth_loss(pred.numpy(), target.numpy()), rel=1e-12)
    valid = torch.isfinite(target) & (target > 0)
    oracle = F.smooth_l1_loss(pred[valid], target[valid], beta=1.0) + charbonnier(
        pred[valid].mean() - target[valid].mean()
    )
    torch.testing.assert_close(ours, oracle)


def test_depth_loss_all_invalid_is_zero_with_finite_gradient():
    pred = torch.randn(2, 1, 4, 5, requires_grad=True)
    target = torch.zeros(2, 1, 4, 5)
    target[0, 0, 0, 0] = float("nan")
    loss = depth_loss(pred, target)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(pred.grad).all() and (pred.grad == 0).all()


def test_depth_loss_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match=r"depth: prediction \(1, 1, 4, 4\) and target \(1, 1, 8, 8\)"):
        depth_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 8, 8))


def _labels(shape, num_classes, ignore_fraction):
    target = torch.randint(0, num_classes, shape, generator=GEN)
    target[torch.rand(shape, generator=GEN) < ignore_fraction] = 255
    return target


def test_segmentation_loss_is_mean_over_valid_pixels():
    logits = torch.randn(2, 5, 6, 8, generator=GEN, dtype=torch.float64)
    target = _labels((2, 6, 8), 5, 0.4)
    ours = segmentation_loss(logits, target)
    # independent: F.cross_entropy's 'mean' over non-ignored pixels (no weights) is exactly the fixed loss
    torch.testing.assert_close(ours, F.cross_entropy(logits, target, ignore_index=255))
    # and numpy: -log softmax at the labelled class, averaged over labelled pixels
    lp = logits.numpy() - np.log(np.exp(logits.numpy()).sum(1, keepdims=True))
    t = target.numpy()
    n, h, w = np.nonzero(t != 255)
    assert float(ours) == pytest.approx(float(-lp[n, t[n, h, w], h, w].mean()), rel=1e-12)


def test_ti_ignored_pixel_count_bug_is_fixed():
    """TI divided by all pixels with target >= 0 (255 included): with 3/4 of the pixels ignored its loss
    is 1/4 of the true mean. The fixed loss does not depend on how many pixels are ignored."""
    logits = torch.randn(1, 3, 4, 4, generator=GEN, dtype=torch.float64)
    target = torch.randint(0, 3, (1, 4, 4), generator=GEN)
    partly = target.clone()
    partly[:, :3] = 255  # 12 of 16 pixels ignored
    fixed = segmentation_loss(logits, partly)
    ti = segmentation_loss(logits, partly, ti_count_bug=True)
    torch.testing.assert_close(ti, fixed * 4 / 16)
    torch.testing.assert_close(fixed, F.cross_entropy(logits[..., 3:, :], target[:, 3:]))
    # without ignored pixels the two agree
    torch.testing.assert_close(
        segmentation_loss(logits, target, ti_count_bug=True), segmentation_loss(logits, target)
    )


def test_class_weighted_loss_is_weighted_sum_over_valid_count():
    logits = torch.randn(2, 5, 5, 7, generator=GEN, dtype=torch.float64)
    target = _labels((2, 5, 7), 5, 0.2)
    w = torch.tensor(TI_CLASS_WEIGHTS["semantic"], dtype=torch.float64)
    ours = segmentation_loss(logits, target, w)
    valid = target != 255
    per_pixel = F.cross_entropy(logits, target, ignore_index=255, reduction="none")  # unweighted NLL
    expected = (per_pixel * w[target.clamp(max=4)])[valid].sum() / valid.sum()
    torch.testing.assert_close(ours, expected)
    # differs from torch's weighted 'mean' (which divides by the sum of the targets' weights)
    assert not torch.isclose(ours, F.cross_entropy(logits, target, weight=w, ignore_index=255))


def test_all_ignored_labels_give_zero_loss_and_finite_gradient():
    logits = torch.randn(2, 2, 3, 3, requires_grad=True)
    loss = segmentation_loss(logits, torch.full((2, 3, 3), 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all() and (logits.grad == 0).all()
    # torch's own mean is NaN here: the reason for the clamped count
    assert torch.isnan(F.cross_entropy(logits.detach(), torch.full((2, 3, 3), 255), ignore_index=255))


def test_labels_out_of_range_are_named():
    with pytest.raises(ValueError, match=r"labels \[7\] outside \[0, 5\)"):
        segmentation_loss(torch.zeros(1, 5, 2, 2), torch.tensor([[[0, 7], [255, 1]]]))
    with pytest.raises(ValueError, match="class weights have shape"):
        segmentation_loss(torch.zeros(1, 5, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), torch.ones(3))


def _batch_and_outputs(num_classes=5, size=(6, 10)):
    h, w = size
    batch = {
        "depth": torch.rand(2, 1, h, w, generator=GEN) * 50,
        "semantic": _labels((2, h, w), num_classes, 0.2),
        "motion": _labels((2, h, w), 2, 0.1),
    }
    outputs = {
        "depth": torch.rand(2, 1, h, w, generator=GEN) * 50,
        "semantic": torch.randn(2, num_classes, h, w, generator=GEN),
        "motion": torch.randn(2, 2, h, w, generator=GEN),
    }
    return outputs, batch


def test_criterion_returns_each_task_loss():
    outputs, batch = _batch_and_outputs()
    losses = build_criterion(tasks=("depth", "semantic", "motion"))(outputs, batch)
    assert set(losses) == {"depth", "semantic", "motion"}
    torch.testing.assert_close(losses["depth"], depth_loss(outputs["depth"], batch["depth"]))
    torch.testing.assert_close(
        losses["semantic"], F.cross_entropy(outputs["semantic"], batch["semantic"], ignore_index=255)
    )
    torch.testing.assert_close(
        losses["motion"], F.cross_entropy(outputs["motion"], batch["motion"], ignore_index=255)
    )
    only_depth = build_criterion(tasks=["depth"])({"depth": outputs["depth"]}, batch)
    assert set(only_depth) == {"depth"}


def test_criterion_class_weights_every_step_by_default():
    outputs, batch = _batch_and_outputs()
    w = torch.tensor(TI_CLASS_WEIGHTS["motion"])
    criterion = build_criterion(tasks=("motion",), class_weights={"motion": w})
    expected = segmentation_loss(outputs["motion"], batch["motion"], w)
    for _ in range(5):
        torch.testing.assert_close(criterion(outputs, batch)["motion"], expected)


def test_criterion_ti_random_class_weights_follow_the_torch_seed():
    """class_weight_probability=0.2: weighted in a fraction ~0.2 of the calls, replayed by the seed."""
    outputs, batch = _batch_and_outputs()
    w = torch.tensor(TI_CLASS_WEIGHTS["motion"])
    criterion = build_criterion(tasks=("motion",), class_weights={"motion": w}, class_weight_probability=0.2)
    weighted = segmentation_loss(outputs["motion"], batch["motion"], w)

    def draws(n):
        return [bool(torch.isclose(criterion(outputs, batch)["motion"], weighted)) for _ in range(n)]

    torch.manual_seed(5)
    first = draws(400)
    torch.manual_seed(5)
    assert draws(400) == first
    assert 0.14 < np.mean(first) < 0.26


def test_criterion_bad_input():
    with pytest.raises(ValueError, match="tasks must be"):
        build_criterion(tasks=("depth", "flow"))
    with pytest.raises(ValueError, match="class weights given for 'depth'"):
        build_criterion(tasks=("depth",), class_weights={"depth": torch.ones(1)})
    with pytest.raises(ValueError, match="class_weight_probability"):
        build_criterion(tasks=("motion",), class_weight_probability=1.5)
    outputs, batch = _batch_and_outputs()
    with pytest.raises(ValueError, match=r"tasks \['semantic'\] need both"):
        build_criterion(tasks=("semantic",))({"depth": outputs["depth"]}, batch)
