"""Multi-task Cityscapes dataset: image + flow inputs, depth / semantic / motion targets.

Layout under ``root`` (default ``./data/datasets/cityscapes/data``)::

    leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png
    leftImg8bit_flow_farneback_confidence/{split}/{city}/{stem}_leftImg8bit_flow.png   (make_flow_dataset)
    gtFine/{split}/{city}/{stem}_gtFine_labelIds.png              (or TI's five-class *_labelTrainIds.png)
    gtFine/{split}/{city}/{stem}_gtFine_labelTrainIds_motion.png  (0 static, 255 moving, 128 undecided)
    disparity/{split}/{city}/{stem}_disparity.png                 (the folder may also be called ``depth``)
    camera/{split}/{city}/{stem}_camera.json

Samples are paired by Cityscapes name (city_seq_frame), never by sorted index (TI's loader paired flow and
images by index, which silently misaligns when one file is missing).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from mtl_perception.data.cityscapes import FLOW_FOLDER, LAYOUT, FrameId, cityscapes_path
from mtl_perception.data.ground_truth import GroundTruthReader
from mtl_perception.flow import read_flow_png, read_ti_flow_png
from mtl_perception.imageio import read_image
from mtl_perception.learning.augment import align_flow

DEFAULT_ROOT = Path("./data/datasets/cityscapes/data")
FLOW_SUFFIX = "leftImg8bit_flow.png"


def check_split(root: str | Path, split: str) -> None:
    """FileNotFoundError naming the folder when ``root`` or its images of ``split`` are missing or empty:
    the first thing a mistyped --data_path or --split meets, before any file inside is looked for."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"--data_path {root}: no such folder (expected the Cityscapes layout: leftImg8bit/, gtFine/, "
            "disparity/, camera/ and the flow folder)"
        )
    images = root / "leftImg8bit" / split
    if not images.is_dir() or not any(images.iterdir()):
        state = "is empty" if images.is_dir() else "does not exist"
        raise FileNotFoundError(f"--data_path {root}: no images for split {split!r} ({images} {state})")


def flow_path(
    root: str | Path, split: str, frame: FrameId, folder: str = FLOW_FOLDER, suffix: str = FLOW_SUFFIX
) -> Path:
    return Path(root) / folder / split / frame.city / f"{frame.stem}_{suffix}"


class CityscapesMultiTask(torch.utils.data.Dataset):
    """One sample per annotated frame: ``image`` (3,H,W) float 0..255 RGB, ``flow`` (3,H,W: u, v px, conf),
    ``depth`` (1,H,W) metres (0 invalid), ``semantic`` (H,W) long (255 ignore), ``motion`` (H,W) long
    (0 static, 1 moving, 255 ignore: undecided in the label file, or an augmentation border), and ``name``
    (the Cityscapes stem).

    flow_format: "png16" (this project's 16-bit PNGs) or "ti" (TI's 8-bit u' = 128 + s·u with
    ``ti_flow_scale`` = s). semantic_mode: "five" | "trainid" (from ``*_labelIds.png``) or "ti_five" (TI's
    five-class ``*_labelTrainIds.png``). ``transform(sample_dict, rng)`` augments (``learning/augment.py``).
    """

    def __init__(
        self,
        root: str | Path = DEFAULT_ROOT,
        split: str = "train",
        *,
        use_flow: bool = True,
        flow_folder: str = FLOW_FOLDER,
        flow_suffix: str = FLOW_SUFFIX,
        flow_format: str = "png16",
        ti_flow_scale: float | None = None,
        semantic_mode: str = "five",
        transform: Callable | None = None,
        seed: int | None = None,
    ):
        self.root, self.split = Path(root), split
        if flow_format not in ("png16", "ti"):
            raise ValueError(f"flow_format must be 'png16' or 'ti', got {flow_format!r}")
        if flow_format == "ti" and not (ti_flow_scale and ti_flow_scale > 0):
            raise ValueError(
                "flow_format='ti' needs ti_flow_scale (pixels -> code steps, u' = 128 + scale*u)"
            )
        self.ground_truth = GroundTruthReader(self.root, split, semantic_mode=semantic_mode)
        self.use_flow, self.flow_folder, self.flow_suffix = use_flow, flow_folder, flow_suffix
        self.flow_format, self.ti_flow_scale = flow_format, ti_flow_scale
        self.semantic_mode, self.transform = semantic_mode, transform
        self.seed, self.rng, self._rng_owner = seed, np.random.default_rng(seed), None
        depth_dir = self.root / self.ground_truth.depth_folder / split
        if not depth_dir.is_dir():
            raise FileNotFoundError(f"no disparity (or depth) folder: {depth_dir}")
        gt_dir = self.root / "gtFine" / split
        sem_suffix = LAYOUT[self.ground_truth.semantic_kind][1]
        labels = sorted(gt_dir.glob(f"*/*_{sem_suffix}"))
        if not labels:
            raise FileNotFoundError(f"no *_{sem_suffix} under {gt_dir}")
        self.frames = [FrameId.parse(p) for p in labels]
        for fid in self.frames:  # fail early, naming the first missing file
            for path in self._paths(fid).values():
                if not path.is_file():
                    raise FileNotFoundError(f"missing file for {fid.stem}: {path}")

    def _paths(self, fid: FrameId) -> dict[str, Path]:
        """Every file of the sample: image, the ground truth (depth, semantic, motion, camera), flow."""
        image = cityscapes_path(self.root, "image", self.split, fid)
        paths = {"image": image, **self.ground_truth.paths(fid)}
        if self.use_flow:
            paths["flow"] = flow_path(self.root, self.split, fid, self.flow_folder, self.flow_suffix)
        return paths

    def _worker_rng(self) -> np.random.Generator:
        """One generator per DataLoader worker and epoch: forked workers would otherwise all copy the same
        generator state and draw identical augmentations. ``worker.seed`` changes every epoch and follows
        ``torch.manual_seed``."""
        info = torch.utils.data.get_worker_info()
        if info is not None and self._rng_owner != info.seed:
            self.rng = np.random.default_rng([self.seed or 0, info.seed])
            self._rng_owner = info.seed
        return self.rng

    def __len__(self) -> int:
        return len(self.frames)

    def load(self, index: int) -> dict:
        """The sample as HxW(xC) numpy arrays, before augmentation."""
        fid = self.frames[index]
        p = self._paths(fid)
        image = read_image(p["image"], cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32)
        h, w = image.shape[:2]
        truth = self.ground_truth.read(fid, expected_size=(h, w))
        sample = {
            "image": image,
            "depth": truth.depth,
            "semantic": truth.semantic,
            "motion": truth.motion,
            "flow": None,
        }
        if self.use_flow:
            if self.flow_format == "png16":
                flow, conf = read_flow_png(p["flow"])
            else:
                flow, conf = read_ti_flow_png(p["flow"], self.ti_flow_scale)
            # Kept at its own size (make_flow_dataset writes it at the network size): the validation
            # transform then feeds it to the network untouched, as the node does; the augmentation aligns it
            # to the image first (augment.align_flow, TI's AlignImages).
            sample["flow"] = np.dstack([flow, conf]).astype(np.float32)
        return sample

    def __getitem__(self, index: int) -> dict:
        sample = self.load(index)
        if self.transform is not None:
            sample = self.transform(sample, self._worker_rng())
        else:
            sample = align_flow(sample)
        out = {
            "name": self.frames[index].stem,
            "image": torch.from_numpy(np.ascontiguousarray(sample["image"].transpose(2, 0, 1))),
            "depth": torch.from_numpy(np.ascontiguousarray(sample["depth"]))[None],
            "semantic": torch.from_numpy(sample["semantic"].astype(np.int64)),
            "motion": torch.from_numpy(sample["motion"].astype(np.int64)),
        }
        if sample.get("flow") is not None:
            out["flow"] = torch.from_numpy(np.ascontiguousarray(sample["flow"].transpose(2, 0, 1)))
        return out
