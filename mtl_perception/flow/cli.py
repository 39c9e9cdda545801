"""``flow_tool``: Farnebäck flow between two images, or a self-checking demo on a synthetic warp."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from mtl_perception.atomic import atomic_path
from mtl_perception.cli import image_size, tool_main
from mtl_perception.device import torch_device
from mtl_perception.imageio import read_image

from .api import calc_optical_flow_farneback
from .codecs import write_flow_png
from .colorwheel import flow_to_color
from .gray import to_gray
from .params import COMMON, CUDA_DEFAULTS, FarnebackParams
from .synthetic import SmoothWarp, endpoint_error, texture

PRESETS = {"cuda": CUDA_DEFAULTS, "common": COMMON}
#: peak host memory of the CPU Farnebäck per pixel of one frame, with headroom (measured: about 600 bytes
#: at 1024x2048, both presets, torch 2.13 CPU); a pair that needs more than is available is refused before
#: any of it is allocated
BYTES_PER_PIXEL = 800


def _args(p: FarnebackParams) -> tuple:
    return (p.pyr_scale, p.levels, p.winsize, p.iterations, p.poly_n, p.poly_sigma, p.flags)


def _read_gray(path: str) -> np.ndarray:
    """Image file -> grey, converted like cv2.cvtColor(COLOR_BGR2GRAY) (imread's own grey path differs)."""
    if Path(path).is_dir():
        raise IsADirectoryError(f"image {path} is a directory")
    image = read_image(path, cv2.IMREAD_UNCHANGED)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if image.ndim == 3 and image.dtype == np.uint8:
        return to_gray(image, "bgr")
    if image.ndim == 3:
        return to_gray(image.astype(np.float32), "bgr")
    return image


def compute_flow(prev: np.ndarray, nxt: np.ndarray, params: FarnebackParams, device: str):
    """Grey uint8 frames -> (HxWx2 flow, HxW residual confidence) as NumPy, computed on ``device``."""
    a = torch.from_numpy(np.ascontiguousarray(prev)).to(device=device, dtype=torch.float32)
    b = torch.from_numpy(np.ascontiguousarray(nxt)).to(device=device, dtype=torch.float32)
    flow, conf = calc_optical_flow_farneback(
        a, b, None, *_args(params), resize_mode=params.resize_mode, confidence="residual"
    )
    return flow.cpu().numpy(), conf.cpu().numpy()


def run_demo(out_dir: Path, params: FarnebackParams, device: str, size=(256, 320), overwrite=False) -> dict:
    """Warp a real photo by a known smooth flow, recover it, write flow/colour PNGs, return the numbers."""
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out {out_dir} is a file; with --demo it names the output folder")
    color_path = out_dir / "flow_color.png"
    for path in (out_dir / "flow.png", color_path):
        check_output(path, overwrite=overwrite, needs_parent=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    h, w = size
    prev_bgr = texture("astronaut", h, w)
    warp = SmoothWarp(h, w, amp=4.0, seed=0)
    next_bgr = warp.warp(prev_bgr)
    gt = warp.ground_truth()
    prev, nxt = (cv2.cvtColor(x, cv2.COLOR_BGR2GRAY) for x in (prev_bgr, next_bgr))
    start = time.perf_counter()
    flow, conf = compute_flow(prev, nxt, params, device)
    elapsed = time.perf_counter() - start
    ref = cv2.calcOpticalFlowFarneback(prev, nxt, None, *_args(params))
    write_flow_png(out_dir / "flow.png", flow, conf, overwrite=overwrite)
    max_mag = float(np.hypot(gt[..., 0], gt[..., 1]).max())
    panel = np.concatenate(
        [
            prev_bgr[..., ::-1],
            flow_to_color(gt, max_mag),
            flow_to_color(flow, max_mag),
            np.repeat((conf * 255).astype(np.uint8)[..., None], 3, axis=2),
        ],
        axis=1,
    )
    write_image(color_path, panel[..., ::-1], overwrite=overwrite)
    stats = {
        "size": [h, w],
        "params": params.to_dict(),
        "device": device,
        "seconds": round(elapsed, 4),
        "epe_vs_ground_truth": float(endpoint_error(flow, gt).mean()),
        "cv2_epe_vs_ground_truth": float(endpoint_error(ref, gt).mean()),
        "epe_vs_cv2_mean": float(endpoint_error(flow, ref).mean()),
        "epe_vs_cv2_p999": float(np.percentile(endpoint_error(flow, ref), 99.9)),
        "mean_confidence": float(conf.mean()),
        "files": {"flow_png": str(out_dir / "flow.png"), "color_png": str(color_path)},
    }
    return stats


def check_output(path: str | os.PathLike, *, overwrite: bool, needs_parent: bool = True) -> None:
    """Everything that would make writing ``path`` fail, checked before any flow is computed."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"output {path} is a directory; give a file path")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    if needs_parent and not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {path.parent} does not exist (for {path.name})")
    if not cv2.haveImageWriter(str(path)):
        raise ValueError(f"cannot write an image named {path.name!r}; use a .png name")


def write_image(path: str | os.PathLike, image: np.ndarray, *, overwrite: bool) -> None:
    """cv2.imwrite, atomically and failing loudly (imwrite itself only returns False)."""
    with atomic_path(path, overwrite=overwrite, make_parents=False) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise OSError(f"could not write {path}")


def check_memory(height: int, width: int) -> None:
    """Refuse a frame size whose flow cannot fit in the memory available now."""
    import psutil

    needed, available = height * width * BYTES_PER_PIXEL, psutil.virtual_memory().available
    if needed > available:
        raise ValueError(
            f"a {width}x{height} pair needs about {needed / 2**30:.1f} GiB for the flow, "
            f"{available / 2**30:.1f} GiB are available; resize the images first"
        )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flow_tool",
        description="Farnebäck optical flow (OpenCV-exact, PyTorch). Writes a 16-bit KITTI-style flow PNG "
        "(R=u, G=v: value = flow*64 + 2^15; B = confidence*65535).",
    )
    p.add_argument("prev", nargs="?", help="first image")
    p.add_argument("next", nargs="?", help="second image")
    p.add_argument("--out", required=True, help="flow PNG path (or output folder with --demo)")
    p.add_argument("--color", help="also write a Middlebury colour-coded PNG here")
    p.add_argument(
        "--params",
        choices=sorted(PRESETS),
        default="cuda",
        help="cuda: (0.5,5,13,10,5,1.1,0) OpenCV-CUDA defaults; common: (0.5,3,15,3,5,1.2,0)",
    )
    p.add_argument(
        "--resize-mode",
        choices=("cpu", "cuda"),
        default="cpu",
        help="reproduce cv2.calcOpticalFlowFarneback (cpu) or cv::cuda::FarnebackOpticalFlow",
    )
    p.add_argument("--device", default="cpu", type=torch_device, help="cpu or cuda[:N]")
    p.add_argument("--demo", action="store_true", help="synthetic real-texture pair with known flow")
    p.add_argument("--size", default=(256, 320), type=image_size, help="demo frame size HxW")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    return p


@tool_main("flow_tool")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    params = FarnebackParams(**{**PRESETS[args.params].to_dict(), "resize_mode": args.resize_mode})
    if args.demo:
        check_memory(*args.size)
        stats = run_demo(
            out_dir=Path(args.out),
            params=params,
            device=args.device,
            size=args.size,
            overwrite=args.overwrite,
        )
        print(json.dumps(stats, indent=2))
        return 0
    if not (args.prev and args.next):
        print("flow_tool: error: PREV and NEXT images are required (or use --demo)", file=sys.stderr)
        return 2
    outputs = [args.out] + ([args.color] if args.color else [])
    if args.color and Path(args.color).resolve() == Path(args.out).resolve():
        raise ValueError(f"--out and --color name the same file {args.out}")
    for path in outputs:  # every output is checked before the flow is computed
        check_output(path, overwrite=args.overwrite)
    if Path(args.out).suffix.lower() != ".png":
        raise ValueError(f"--out {args.out}: flow files are 16-bit PNGs; give a .png name")
    prev, nxt = _read_gray(args.prev), _read_gray(args.next)
    if prev.shape != nxt.shape:
        raise ValueError(f"images differ in size: {args.prev} is {prev.shape}, {args.next} is {nxt.shape}")
    check_memory(*prev.shape[:2])
    flow, conf = compute_flow(prev=prev, nxt=nxt, params=params, device=args.device)
    write_flow_png(args.out, flow, conf, overwrite=args.overwrite)
    if args.color:
        write_image(args.color, flow_to_color(flow)[..., ::-1], overwrite=args.overwrite)
    mag = np.hypot(flow[..., 0], flow[..., 1])
    print(
        f"flow {prev.shape[1]}x{prev.shape[0]}: mean |flow| {mag.mean():.3f} px, max {mag.max():.3f} px, "
        f"mean confidence {conf.mean():.3f} -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
