"""Augmentation: flow vectors follow the geometry (cv2.remap check), flips, scales, nearest targets."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mtl_perception.learning.augment import (
    KIND_FLOW,
    KIND_IMAGE,
    KIND_TARGET,
    TrainAugment,
    hflip,
    rotation_matrix,
    scale_crop_matrix,
    warp_affine,
)

PAIR_KINDS = {"image": (KIND_IMAGE, 0.0), "image2": (KIND_IMAGE, 0.0), "flow": (KIND_FLOW, 0.0)}


def _texture(h, w, seed):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.uniform(0, 255, (h, w)).astype(np.float32), (0, 0), 2.0) * 3 - 255


def _grid(h, w):
    return np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))


def _pair_with_flow(h=120, w=200):
    """frame2 (texture), flow (smooth, non-uniform) and frame1 with frame1(x) = frame2(x + flow(x))."""
    frame2 = _texture(h, w, 0)
    gx, gy = _grid(h, w)
    u = 3.0 + 2.0 * np.sin(gy / 17.0) + 0.01 * gx
    v = -2.0 + 1.5 * np.cos(gx / 23.0)
    flow = np.dstack([u, v, np.ones_like(u)]).astype(np.float32)
    frame1 = cv2.remap(frame2, gx + u, gy + v, cv2.INTER_LINEAR)
    return frame1, frame2, flow


def _photometric_error(sample):
    h, w = sample["image"].shape
    gx, gy = _grid(h, w)
    f = sample["flow"]
    rebuilt = cv2.remap(sample["image2"], gx + f[..., 0], gy + f[..., 1], cv2.INTER_LINEAR)
    # interior only: the confidence channel is 1 where the warped flow came from inside the original image
    valid = cv2.erode((f[..., 2] > 0.999).astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    valid &= (gx + f[..., 0] > 2) & (gx + f[..., 0] < w - 3) & (gy + f[..., 1] > 2) & (gy + f[..., 1] < h - 3)
    assert valid.sum() > 0.3 * h * w
    return np.abs(rebuilt - sample["image"])[valid].mean()


@pytest.mark.parametrize("seed", range(4))
def test_transformed_flow_still_maps_the_transformed_pair(seed):
    frame1, frame2, flow = _pair_with_flow()
    sample = {"image": frame1, "image2": frame2, "flow": flow}
    base = _photometric_error(sample)
    aug = TrainAugment(
        (96, 160), rotation=10.0, scale=(1.0, 1.8), p_rotate=1.0, p_scale=1.0, p_flip=0.5, kinds=PAIR_KINDS
    )
    out = aug(sample, np.random.default_rng(seed))
    err = _photometric_error(out)
    assert err < base + 2.0, (err, base)
    # control: the same warp with the flow vectors left untransformed does not map the pair
    rng = np.random.default_rng(100 + seed)
    M = rotation_matrix(rng.uniform(8, 12), *frame1.shape)
    good = warp_affine(sample, M, frame1.shape, PAIR_KINDS)
    bad = dict(good, flow=warp_affine({"image": flow}, M, frame1.shape, PAIR_KINDS)["image"])
    assert _photometric_error(good) < base + 2.0
    assert _photometric_error(bad) > 3 * _photometric_error(good)


def test_rotation_uses_the_original_vector():
    """(1, 0.5) under a 90 degree counter-clockwise rotation becomes (0.5, -1) (TI reused the rotated u)."""
    flow = np.zeros((33, 33, 3), np.float32)
    flow[..., 0], flow[..., 1], flow[..., 2] = 1.0, 0.5, 1.0
    out = warp_affine({"flow": flow}, rotation_matrix(90.0, 33, 33), (33, 33))["flow"]
    np.testing.assert_allclose(out[16, 16], [0.5, -1.0, 1.0], atol=1e-5)


def test_flip_twice_is_identity_and_negates_u():
    rng = np.random.default_rng(0)
    sample = {
        "image": rng.uniform(0, 255, (20, 30, 3)).astype(np.float32),
        "flow": rng.normal(size=(20, 30, 3)).astype(np.float32),
        "depth": rng.uniform(1, 80, (20, 30)).astype(np.float32),
        "semantic": rng.integers(0, 5, (20, 30)).astype(np.uint8),
        "motion": rng.integers(0, 2, (20, 30)).astype(np.uint8),
    }
    once = hflip(sample)
    np.testing.assert_array_equal(once["flow"][:, ::-1, 0], -sample["flow"][..., 0])
    np.testing.assert_array_equal(once["flow"][:, ::-1, 1:], sample["flow"][..., 1:])
    np.testing.assert_array_equal(once["semantic"], sample["semantic"][:, ::-1])
    twice = hflip(once)
    for key in sample:
        np.testing.assert_array_equal(twice[key], sample[key])


def test_scale_multiplies_flow_by_the_resize_ratios():
    flow = np.dstack([np.full((40, 60), 2.0), np.full((40, 60), -3.0), np.ones((40, 60))]).astype(np.float32)
    out = warp_affine({"flow": flow}, scale_crop_matrix(1.5, 1.25, 5, 3), (30, 50))["flow"]
    np.testing.assert_allclose(out[5:-5, 5:-5, 0], 3.0, rtol=1e-5)
    np.testing.assert_allclose(out[5:-5, 5:-5, 1], -3.75, rtol=1e-5)
    np.testing.assert_allclose(out[5:-5, 5:-5, 2], 1.0, rtol=1e-5)
    # the resize+crop matrix equals cv2.resize followed by slicing (pixel-centre convention)
    img = _texture(40, 60, 1)
    ref = cv2.resize(img, (120, 80), interpolation=cv2.INTER_LINEAR)[7:37, 11:61]
    got = warp_affine({"image": img}, scale_crop_matrix(2.0, 2.0, 11, 7), (30, 50))["image"]
    np.testing.assert_allclose(got[1:-1, 1:-1], ref[1:-1, 1:-1], atol=1e-3)


def test_nearest_targets_keep_only_valid_values():
    rng = np.random.default_rng(1)
    h, w = 64, 96
    depth_values = np.array([3.5, 10.25, 42.0], np.float32)
    sample = {
        "image": rng.uniform(0, 255, (h, w, 3)).astype(np.float32),
        "flow": rng.normal(size=(h, w, 3)).astype(np.float32),
        "depth": depth_values[rng.integers(0, 3, (h, w))],
        "semantic": np.array([0, 2, 4, 255], np.uint8)[rng.integers(0, 4, (h, w))],
        "motion": rng.integers(0, 2, (h, w)).astype(np.uint8),
    }
    aug = TrainAugment((48, 64), rotation=7.0, p_rotate=1.0, p_scale=1.0)
    for seed in range(5):
        out = aug(sample, np.random.default_rng(seed))
        assert out["image"].shape == (48, 64, 3) and out["flow"].shape == (48, 64, 3)
        assert set(np.unique(out["semantic"])) <= {0, 2, 4, 255}
        assert set(np.unique(out["motion"])) <= {0, 1, 255}
        assert set(np.unique(out["depth"])) <= {0.0, *depth_values.tolist()}
    with pytest.raises(ValueError, match="no augmentation kind"):
        warp_affine({"extra": sample["depth"]}, np.eye(2, 3), (h, w))
    assert KIND_TARGET == "target"


def test_resize_and_crop_scale_flow_and_keep_targets():
    from mtl_perception.learning.augment import crop, resize

    flow = np.dstack([np.full((40, 60), 2.0), np.full((40, 60), -3.0), np.ones((40, 60))]).astype(np.float32)
    sem = np.array([0, 3, 255], np.uint8)[np.random.default_rng(0).integers(0, 3, (40, 60))]
    out = resize({"flow": flow, "semantic": sem}, (30, 90))
    np.testing.assert_allclose(out["flow"][..., 0], 3.0, rtol=1e-5)
    np.testing.assert_allclose(out["flow"][..., 1], -2.25, rtol=1e-5)
    np.testing.assert_array_equal(out["semantic"], cv2.resize(sem, (90, 30), interpolation=cv2.INTER_NEAREST))
    img = _texture(40, 60, 2)
    small = resize({"image": img}, (20, 30))["image"]
    np.testing.assert_allclose(small, cv2.resize(img, (30, 20), interpolation=cv2.INTER_AREA))
    c = crop({"image": img, "flow": None}, 5, 7, (10, 20))
    np.testing.assert_array_equal(c["image"], img[5:15, 7:27])
    assert c["flow"] is None
