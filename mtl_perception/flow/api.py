"""``calc_optical_flow_farneback``: a drop-in for ``cv2.calcOpticalFlowFarneback`` on NumPy or torch."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from .confidence import CONFIDENCE_MODES, forward_backward_confidence
from .farneback import FarnebackEngine
from .gray import to_gray
from .params import OPTFLOW_USE_INITIAL_FLOW, FarnebackParams

_NUMPY_DTYPES = (np.uint8, np.uint16, np.int16, np.float32, np.float64)
_ENGINES: OrderedDict[tuple, FarnebackEngine] = OrderedDict()
_MAX_ENGINES = 8


def get_engine(params: FarnebackParams, height: int, width: int, device) -> FarnebackEngine:
    """Engine (per-size constants) from a small LRU cache, so repeated calls do not rebuild kernels."""
    key = (params, height, width, str(torch.device(device)))
    if key in _ENGINES:
        _ENGINES.move_to_end(key)
        return _ENGINES[key]
    engine = FarnebackEngine(params, height, width, device)
    _ENGINES[key] = engine
    while len(_ENGINES) > _MAX_ENGINES:
        _ENGINES.popitem(last=False)
    return engine


def check_finite(t: torch.Tensor, name: str) -> None:
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf values")


def as_gray_batch(image, name: str) -> tuple[torch.Tensor, str]:
    """numpy HxW / HxWx3 (BGR, like cv2) / HxWx1, or torch (H,W) / (N,1,H,W) -> ((N,1,H,W) float32, kind)."""
    if isinstance(image, np.ndarray):
        if image.size == 0:
            raise ValueError(f"{name} is empty (shape {image.shape})")
        if image.dtype.type not in _NUMPY_DTYPES:
            raise ValueError(f"{name} has unsupported dtype {image.dtype} (use uint8, uint16 or float)")
        if image.ndim == 3 and image.shape[2] == 3:
            image = to_gray(image, "bgr")
        elif image.ndim == 3 and image.shape[2] == 1:
            image = image[..., 0]
        if image.ndim != 2:
            raise ValueError(f"{name} must be HxW, HxWx1 or HxWx3 (BGR), got shape {image.shape}")
        t = torch.from_numpy(np.ascontiguousarray(image).astype(np.float32, copy=False))
        check_finite(t, name)
        return t[None, None], "numpy"
    if isinstance(image, torch.Tensor):
        if image.numel() == 0:
            raise ValueError(f"{name} is empty (shape {tuple(image.shape)})")
        if not (image.is_floating_point() or image.dtype in (torch.uint8, torch.int16, torch.int32)):
            raise ValueError(f"{name} has unsupported dtype {image.dtype} (use uint8 or a float dtype)")
        if image.ndim == 2:
            kind, t = "torch2d", image[None, None]
        elif image.ndim == 4 and image.shape[1] == 1:
            kind, t = "torch4d", image
        else:
            raise ValueError(
                f"{name} must be a (H,W) or (N,1,H,W) tensor, got shape {tuple(image.shape)} "
                "(convert colour with mtl_perception.flow.to_gray first)"
            )
        check_finite(t, name)
        return t.to(torch.float32), kind
    raise ValueError(f"{name} must be a numpy array or torch tensor, got {type(image).__name__}")


def _initial_flow(flow, kind: str, shape: tuple[int, ...], device) -> torch.Tensor:
    n, _, h, w = shape
    if isinstance(flow, np.ndarray):
        if kind != "numpy" or flow.shape != (h, w, 2):
            raise ValueError(f"initial flow must have shape {(h, w, 2)}, got {flow.shape}")
        t = torch.from_numpy(np.ascontiguousarray(flow, dtype=np.float32)).permute(2, 0, 1)[None]
    elif isinstance(flow, torch.Tensor):
        expected = (h, w, 2) if kind == "torch2d" else (n, 2, h, w)
        if tuple(flow.shape) != expected:
            raise ValueError(f"initial flow must have shape {expected}, got {tuple(flow.shape)}")
        t = flow.permute(2, 0, 1)[None] if kind == "torch2d" else flow
    else:
        raise ValueError(f"initial flow must be a numpy array or tensor, got {type(flow).__name__}")
    check_finite(t, "initial flow")
    return t.to(device=device, dtype=torch.float32).contiguous()


def calc_optical_flow_farneback(
    prev,
    next,  # noqa: A002 - same name as OpenCV's argument
    flow,
    pyr_scale: float,
    levels: int,
    winsize: int,
    iterations: int,
    poly_n: int,
    poly_sigma: float,
    flags: int,
    *,
    resize_mode: str = "cpu",
    confidence: str | None = None,
):
    """Dense Farnebäck flow with ``cv2.calcOpticalFlowFarneback``'s arguments and return convention.

    NumPy HxW (or HxWx3 BGR, converted like ``cv2.COLOR_BGR2GRAY``) -> HxWx2 float32 (dx, dy); when
    ``flow`` is a float32 HxWx2 array the result is also written into it, as cv2 does. Torch (H,W) ->
    (H,W,2); (N,1,H,W) -> (N,2,H,W), on the input's device. With ``confidence`` ("residual" or
    "forward_backward", see ``mtl_perception.flow.confidence``) returns ``(flow, conf)``, conf in [0, 1]
    shaped like the frames (HxW or (N,H,W)).
    """
    params = FarnebackParams(pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, flags, resize_mode)
    if confidence is not None and confidence not in CONFIDENCE_MODES:
        raise ValueError(f"confidence must be None or one of {CONFIDENCE_MODES}, got {confidence!r}")
    a, kind_a = as_gray_batch(prev, "prev")
    b, kind_b = as_gray_batch(next, "next")
    if kind_a != kind_b:
        raise ValueError(f"prev and next must be the same kind of input, got {kind_a} and {kind_b}")
    if a.shape != b.shape:
        raise ValueError(f"prev and next differ in size: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.device != b.device:
        raise ValueError(f"prev and next are on different devices: {a.device} vs {b.device}")
    init = None
    if flags & OPTFLOW_USE_INITIAL_FLOW:
        if flow is None:
            raise ValueError("OPTFLOW_USE_INITIAL_FLOW is set but no initial flow was given")
        init = _initial_flow(flow, kind_a, tuple(a.shape), a.device)
    n, _, h, w = a.shape
    engine = get_engine(params, h, w, a.device)
    fa, fb = engine.expand(a), engine.expand(b)
    out = engine.flow(fa, fb, init)
    conf = None
    if confidence == "residual":
        conf = engine.residual_confidence(fa, fb, out)
    elif confidence == "forward_backward":
        conf = forward_backward_confidence(out, engine.flow(fb, fa))
    if kind_a == "numpy":
        res = out[0].permute(1, 2, 0).numpy()
        if isinstance(flow, np.ndarray) and flow.shape == res.shape and flow.dtype == np.float32:
            flow[...] = res
            res = flow
        else:
            res = np.ascontiguousarray(res)
        return res if conf is None else (res, conf[0].numpy())
    if kind_a == "torch2d":
        res_t, conf_t = out[0].permute(1, 2, 0).contiguous(), None if conf is None else conf[0]
    else:
        res_t, conf_t = out, conf
    return res_t if conf is None else (res_t, conf_t)
