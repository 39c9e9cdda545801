"""The OpenCV details the port depends on, each checked against cv2 or an independent hand reference."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtl_perception.flow import FarnebackParams, calc_optical_flow_farneback
from mtl_perception.flow.farneback import (
    FarnebackEngine,
    area_resize_matrix,
    blur_matrix,
    border_weight_map,
    gaussian_kernel,
    level_plan,
    linear_resize_matrix,
    poly_expansion_constants,
    pyramid_blur_params,
)
from mtl_perception.flow.synthetic import endpoint_error, make_pair

pytestmark = pytest.mark.usefixtures("torch_one_thread")


SPEC_TABLE = {  # poly_n, sigma -> g[0..n], ig11, ig03, ig33, ig55 (from the project's OpenCV spec)
    (5, 1.1): (
        [0.3626749, 0.2399148, 0.0694505, 0.0087978, 0.0004877, 0.0000118],
        (0.826452292, -0.413263275, 0.341542384, 0.683023397),
    ),
    (5, 1.2): (
        [0.3324527, 0.2349272, 0.0828978, 0.0146070, 0.0012852, 0.0000565],
        (0.694486393, -0.347453531, 0.241301747, 0.482311346),
    ),
    (7, 1.5): (
        [0.2659616, 0.2129654, 0.1093401, 0.0359940, 0.0075973, 0.0010282, 0.0000892, 0.0000050],
        (0.444448905, -0.222250691, 0.0987790745, 0.197534826),
    ),
}


@pytest.mark.parametrize("key", list(SPEC_TABLE))
def test_poly_expansion_constants_match_spec_table(key):
    g_half, ig = SPEC_TABLE[key]
    g, xg, xxg, inv = poly_expansion_constants(*key)
    n = key[0]
    np.testing.assert_allclose(g[n:], g_half, atol=1e-7)
    np.testing.assert_allclose(inv, ig, rtol=1e-6)
    np.testing.assert_allclose(xg, np.arange(-n, n + 1) * g, rtol=1e-6)
    np.testing.assert_allclose(xxg, np.arange(-n, n + 1) ** 2 * g, rtol=1e-6)


@pytest.mark.parametrize(
    "ksize,sigma", [(3, 0.0), (5, 0.0), (7, 0.0), (3, 0.5), (9, 1.5), (19, 3.5), (79, 15.5)]
)
def test_gaussian_kernel_matches_cv2(ksize, sigma):
    ref = cv2.getGaussianKernel(ksize, sigma, ktype=cv2.CV_32F).ravel()
    np.testing.assert_allclose(gaussian_kernel(ksize, sigma), ref, rtol=1e-6, atol=1e-9)


def test_pyramid_blur_table_and_level_zero_kernel():
    assert [pyramid_blur_params(0.5**k)[0] for k in range(6)] == [3, 3, 9, 19, 39, 79]
    np.testing.assert_array_equal(gaussian_kernel(3, 0.0), [0.25, 0.5, 0.25])


def test_level_plan_32px_rule_and_half_even_rounding():
    assert [p[:2] for p in level_plan(384, 768, 0.5, 5)] == [(384, 768), (192, 384), (96, 192), (48, 96)]
    assert len(level_plan(1024, 2048, 0.5, 5)) == 6 and level_plan(1024, 2048, 0.5, 5)[-1][:2] == (32, 64)
    assert level_plan(1080, 1920, 0.5, 5)[-1][:2] == (34, 60)
    assert len(level_plan(720, 1280, 0.5, 5)) == 5
    assert level_plan(1000, 1000, 0.5, 4)[4][:2] == (62, 62)  # 62.5 rounds half to even
    assert level_plan(31, 500, 0.5, 5) == [(31, 500, 1.0)]


def test_border_weight_map_including_small_frame_quirk():
    edge = np.array([0.14, 0.14, 0.4472, 0.4472, 0.4472], dtype=np.float32)

    def reference(h, w):  # the unsigned comparison done with real uint32 wrap-around
        out = np.ones((h, w), np.float32)
        for y in range(h):
            for x in range(w):
                near_x = np.uint32(np.int64(x - 5) & 0xFFFFFFFF) >= np.uint32(np.int64(w - 10) & 0xFFFFFFFF)
                near_y = np.uint32(np.int64(y - 5) & 0xFFFFFFFF) >= np.uint32(np.int64(h - 10) & 0xFFFFFFFF)
                if near_x or near_y:
                    # float32 ones: under numpy < 2 (a ROS install's) float32 * Python float is float64.
                    one = s = np.float32(1.0)
                    s *= edge[x] if x < 5 else one
                    s *= edge[w - x - 1] if x >= w - 5 else one
                    s *= edge[y] if y < 5 else one
                    s *= edge[h - y - 1] if y >= h - 5 else one
                    out[y, x] = s
        return out

    for h, w in [(20, 30), (8, 9), (6, 20), (12, 7)]:
        np.testing.assert_array_equal(border_weight_map(h, w), reference(h, w))
    small = border_weight_map(8, 9)
    assert small[5, 5] == 1.0  # the quirk: 3 px from the right/bottom edge, yet no edge scaling at all
    assert border_weight_map(20, 30)[5, 26] == np.float32(0.4472)


@pytest.mark.parametrize(
    "src,dst",
    [((250, 333), (63, 83)), ((250, 333), (125, 167)), ((64, 96), (32, 48)), ((175, 251), (90, 129))],
)
def test_area_resize_matches_cv2_inter_area(src, dst):
    rng = np.random.default_rng(0)
    img = rng.normal(size=src).astype(np.float32) * 5
    ref = cv2.resize(img, dst[::-1], interpolation=cv2.INTER_AREA)
    ours = area_resize_matrix(src[0], dst[0]) @ img @ area_resize_matrix(src[1], dst[1]).T
    np.testing.assert_allclose(ours, ref, atol=2e-5)
    if src[0] % dst[0]:  # torch's 'area' mode uses integer bin edges: not OpenCV's fractional overlap
        t = F.interpolate(torch.from_numpy(img)[None, None], size=dst, mode="area")[0, 0].numpy()
        assert np.abs(t - ref).max() > 1e-3


@pytest.mark.parametrize("src,dst", [((241, 333), (121, 167)), ((48, 96), (96, 192)), ((50, 70), (75, 105))])
def test_half_pixel_resize_matches_cv2_inter_linear(src, dst):
    img = np.random.default_rng(1).normal(size=src).astype(np.float32)
    ref = cv2.resize(img, dst[::-1], interpolation=cv2.INTER_LINEAR)
    ours = F.interpolate(torch.from_numpy(img)[None, None], size=dst, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(ours[0, 0].numpy(), ref, atol=1e-4)


@pytest.mark.parametrize("src,dst", [((96, 192), (48, 96)), ((50, 70), (31, 47)), ((24, 48), (48, 96))])
def test_cuda_mode_corner_aligned_resize(src, dst):
    """cv::cuda::resize INTER_LINEAR: src = dst·(n_src/n_dst), right/bottom neighbour clamped."""
    img = np.random.default_rng(2).normal(size=src).astype(np.float32)
    fy, fx = np.float32(src[0] / dst[0]), np.float32(src[1] / dst[1])
    ref = np.zeros(dst, np.float32)
    for y in range(dst[0]):
        sy = np.float32(y) * fy
        y1 = int(np.floor(sy))
        y2 = min(y1 + 1, src[0] - 1)
        for x in range(dst[1]):
            sx = np.float32(x) * fx
            x1 = int(np.floor(sx))
            x2 = min(x1 + 1, src[1] - 1)
            ref[y, x] = (
                img[y1, x1] * ((x1 + 1 - sx) * (y1 + 1 - sy))
                + img[y1, x2] * ((sx - x1) * (y1 + 1 - sy))
                + img[y2, x1] * ((x1 + 1 - sx) * (sy - y1))
                + img[y2, x2] * ((sx - x1) * (sy - y1))
            )
    engine = FarnebackEngine(FarnebackParams(resize_mode="cuda"), *src)
    ours = engine._resize(torch.from_numpy(img)[None, None], dst)[0, 0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    if dst[0] < src[0] and src[0] % dst[0] == 0:  # a 2x downscale samples pixel 2x instead of averaging
        np.testing.assert_allclose(ours, img[:: src[0] // dst[0], :: src[1] // dst[1]], atol=1e-5)


@pytest.mark.parametrize("winsize", [10, 15])
def test_box_normalisation_cpu_vs_cuda(winsize):
    """The CPU divides the (2m+1)² window sum by winsize² (differs for even winsize); CUDA by (2m+1)²."""
    ones = torch.ones(1, 5, 40, 50)
    m = winsize // 2
    cpu = FarnebackEngine(FarnebackParams(winsize=winsize), 40, 50).blur(ones)
    cuda = FarnebackEngine(FarnebackParams(winsize=winsize, resize_mode="cuda"), 40, 50).blur(ones)
    torch.testing.assert_close(cpu, torch.full_like(ones, (2 * m + 1) ** 2 / winsize**2))
    torch.testing.assert_close(cuda, ones)


def test_box_blur_matches_cv2_box_filter():
    rng = np.random.default_rng(3)
    m = rng.normal(size=(5, 37, 61)).astype(np.float32) * 100
    engine = FarnebackEngine(FarnebackParams(winsize=15), 37, 61)
    ours = engine.blur(torch.from_numpy(m)[None])[0].numpy()
    for c in range(5):
        ref = cv2.boxFilter(m[c], -1, (15, 15), normalize=True, borderType=cv2.BORDER_REPLICATE)
        np.testing.assert_allclose(ours[c], ref, atol=2e-3)


@pytest.mark.parametrize(
    "args", [(0.5, 3, 15, 3, 5, 1.2, 0), (0.5, 5, 13, 10, 5, 1.1, 0), (0.5, 3, 15, 3, 5, 1.2, 256)]
)
def test_cuda_mode_close_to_cpu_mode_on_smooth_flow(args):
    """Spec: the CUDA conventions move smooth-flow results by ≤ 0.001 px (box) / ≤ 0.01 px (Gaussian)."""
    prev, nxt, gt = make_pair("coffee", 192, 256, 3.0, seed=4)
    a, b = cv2.cvtColor(prev, cv2.COLOR_BGR2GRAY), cv2.cvtColor(nxt, cv2.COLOR_BGR2GRAY)
    cpu = calc_optical_flow_farneback(a, b, None, *args)
    cuda = calc_optical_flow_farneback(a, b, None, *args, resize_mode="cuda")
    diff = float(endpoint_error(cpu, cuda).mean())
    print(f"[cuda-mode] {args}: mean EPE vs cpu mode {diff:.2e} px")
    assert 0 < diff < 0.02
    assert abs(endpoint_error(cuda, gt).mean() - endpoint_error(cpu, gt).mean()) < 0.05


@pytest.mark.parametrize("k", [1, 2, 3])
def test_pyramid_level_matrices_match_cv2_blur_then_resize(k):
    """Level k = resize(GaussianBlur(frame, σ_k, reflect-101)) equals A_y @ frame @ A_xᵀ."""
    img = np.random.default_rng(5).uniform(0, 255, (300, 401)).astype(np.float32)
    h, w, scale = level_plan(300, 401, 0.5, 3)[k]
    ksize, sigma = pyramid_blur_params(scale)
    blurred = cv2.GaussianBlur(img, (ksize, ksize), sigma, sigma, borderType=cv2.BORDER_REFLECT_101)
    ref = cv2.resize(blurred, (w, h), interpolation=cv2.INTER_LINEAR)
    taps = gaussian_kernel(ksize, sigma)
    ay = linear_resize_matrix(300, h) @ blur_matrix(300, taps)
    ax = linear_resize_matrix(401, w) @ blur_matrix(401, taps)
    np.testing.assert_allclose(ay @ img.astype(np.float64) @ ax.T, ref, atol=2e-3)
