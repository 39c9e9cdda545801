"""Depth, semantic and motion ground truth of one Cityscapes frame: the one reader behind the training
dataset, the bag writer and the demo.

Files (Cityscapes layout, ``mtl_perception.data.cityscapes.LAYOUT``):

* depth: ``disparity/{split}/{city}/{stem}_disparity.png`` (uint16; the folder may be called ``depth``) and
  the frame's ``camera.json`` -> metres with :func:`disparity_to_depth` (0 = invalid, clipped to [1, 255] m);
* semantic: ``gtFine/…_gtFine_labelIds.png`` (modes "five", "trainid") or TI's five-class
  ``gtFine/…_gtFine_labelTrainIds.png`` (mode "ti_five") -> uint8 classes, 255 ignore;
* motion: ``gtFine/…_gtFine_labelTrainIds_motion.png`` (0 static, 255 moving, 128 undecided: the value
  ``make_motion_labels`` writes where it cannot tell) -> uint8 0/1, undecided -> 255, the ignore index of the
  losses and metrics.

Every error names the file: ``FileNotFoundError`` for a missing one, ``ValueError`` for an unreadable or
truncated PNG, a wrong dtype or channel count, or a map whose size differs from the expected one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mtl_perception.data.cityscapes import (
    IGNORE_INDEX,
    CameraCalibration,
    FrameId,
    cityscapes_path,
    disparity_to_depth,
    label_ids_to_semantic,
    read_camera,
)
from mtl_perception.imageio import read_image

GROUND_TRUTH_TASKS = ("depth", "semantic", "motion")
#: values of a ``*_gtFine_labelTrainIds_motion.png`` on disk (TI's 0 / 255, and an undecided value between)
MOTION_STATIC, MOTION_MOVING, MOTION_UNDECIDED = 0, 255, 128
SEMANTIC_MODES = ("five", "trainid", "ti_five")
#: folder names of the disparity maps, in the order they are looked for
DEPTH_FOLDERS = ("disparity", "depth")


def _read_map(path: Path, dtype: type, what: str) -> np.ndarray:
    """One single-channel PNG of ``dtype``; a 3-channel or wrongly typed file is refused, naming it."""
    array = read_image(path, cv2.IMREAD_UNCHANGED)
    if array.dtype != dtype or array.ndim != 2:
        channels = 1 if array.ndim == 2 else array.shape[2]
        raise ValueError(
            f"{what} must be a single-channel {np.dtype(dtype).name} PNG: {path} is {array.dtype} "
            f"with {channels} channel(s)"
        )
    return array


def read_depth(disparity_path: str | Path, camera: CameraCalibration) -> np.ndarray:
    """A Cityscapes disparity PNG -> HxW float32 metres (0 = invalid), with the camera's fx and baseline."""
    disparity = _read_map(Path(disparity_path), np.uint16, "disparity")
    return disparity_to_depth(disparity, camera.fx, camera.baseline)


def read_semantic(label_path: str | Path, mode: str = "five") -> np.ndarray:
    """``*_labelIds.png`` (mode "ti_five": TI's ``*_labelTrainIds.png``) -> HxW uint8 classes, 255 ignore."""
    return label_ids_to_semantic(_read_map(Path(label_path), np.uint8, "label map"), mode)


def read_motion(motion_path: str | Path) -> np.ndarray:
    """A ``*_labelTrainIds_motion.png`` -> HxW uint8: 0 static, 1 moving, ``IGNORE_INDEX`` (255) undecided.

    On disk 0 is static, 255 moving and 128 undecided; any other value is refused, naming the file (a map
    resized with interpolation, or a 0/1 map of another convention, would otherwise be misread)."""
    path = Path(motion_path)
    stored = _read_map(path, np.uint8, "motion map")
    known = (MOTION_STATIC, MOTION_MOVING, MOTION_UNDECIDED)
    if not np.isin(stored, known).all():
        stray = np.setdiff1d(np.unique(stored), known)
        raise ValueError(
            f"motion map {path} holds values {stray[:8].tolist()}: expected only {MOTION_STATIC} (static), "
            f"{MOTION_MOVING} (moving) and {MOTION_UNDECIDED} (undecided)"
        )
    lut = np.zeros(256, np.uint8)
    lut[MOTION_MOVING], lut[MOTION_UNDECIDED] = 1, IGNORE_INDEX
    return lut[stored]


@dataclass(frozen=True)
class FrameGroundTruth:
    """The ground truth of one frame; a task is None when its file is absent (``missing`` names the path)."""

    depth: np.ndarray | None = None  # HxW float32 metres, 0 = invalid
    semantic: np.ndarray | None = None  # HxW uint8 classes, 255 = ignore
    motion: np.ndarray | None = None  # HxW uint8, 0 static / 1 moving / 255 undecided
    missing: dict[str, Path] = field(default_factory=dict)

    def present(self) -> dict[str, np.ndarray]:
        """The tasks that were read, in ``GROUND_TRUTH_TASKS`` order."""
        return {t: getattr(self, t) for t in GROUND_TRUTH_TASKS if getattr(self, t) is not None}


class GroundTruthReader:
    """Reads the ground truth of frames of one split of a Cityscapes-layout tree.

    ``depth_folder`` None picks the first of ``DEPTH_FOLDERS`` that exists for the split ("disparity" when
    neither does, so that the missing file is named in the usual layout).
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        semantic_mode: str = "five",
        depth_folder: str | None = None,
    ) -> None:
        if semantic_mode not in SEMANTIC_MODES:
            raise ValueError(f"semantic_mode must be one of {SEMANTIC_MODES}, got {semantic_mode!r}")
        self.root, self.split, self.semantic_mode = Path(root), split, semantic_mode
        if depth_folder is None:
            found = (f for f in DEPTH_FOLDERS if (self.root / f / split).is_dir())
            depth_folder = next(found, DEPTH_FOLDERS[0])
        self.depth_folder = depth_folder

    @property
    def semantic_kind(self) -> str:
        """The ``LAYOUT`` kind of the semantic file this reader's mode reads."""
        return "label_train_ids" if self.semantic_mode == "ti_five" else "label_ids"

    def paths(self, frame: FrameId) -> dict[str, Path]:
        """Files of ``frame``: one per task, plus the ``camera`` file depth needs."""
        return {
            "depth": cityscapes_path(self.root, "disparity", self.split, frame, folder=self.depth_folder),
            "semantic": cityscapes_path(self.root, self.semantic_kind, self.split, frame),
            "motion": cityscapes_path(self.root, "motion", self.split, frame),
            "camera": cityscapes_path(self.root, "camera", self.split, frame),
        }

    def is_annotated(self, frame: FrameId) -> bool:
        """Whether any ground-truth file of ``frame`` exists (in Cityscapes only every 20th frame has one)."""
        paths = self.paths(frame)
        return any(paths[t].is_file() for t in GROUND_TRUTH_TASKS)

    def read(
        self,
        frame: FrameId,
        *,
        camera: CameraCalibration | None = None,
        expected_size: tuple[int, int] | None = None,
        required: bool = True,
    ) -> FrameGroundTruth:
        """Read depth, semantic and motion of ``frame``.

        camera: the calibration for disparity -> depth (default: the frame's own ``camera.json``).
        expected_size: (H, W) every map must have (e.g. the image's). required: a missing file raises
        ``FileNotFoundError``; with False it is skipped and listed in ``missing`` (real Cityscapes has no
        motion ground truth). Unreadable files raise either way.
        """
        paths = self.paths(frame)
        missing = {t: paths[t] for t in GROUND_TRUTH_TASKS if not paths[t].is_file()}
        if missing and required:
            task, path = next(iter(missing.items()))
            raise FileNotFoundError(f"missing {task} ground truth of {frame.stem}: {path}")
        maps: dict[str, np.ndarray] = {}
        if "depth" not in missing:
            maps["depth"] = read_depth(paths["depth"], camera or read_camera(paths["camera"]))
        if "semantic" not in missing:
            maps["semantic"] = read_semantic(paths["semantic"], self.semantic_mode)
        if "motion" not in missing:
            maps["motion"] = read_motion(paths["motion"])
        if expected_size is not None:
            for task, array in maps.items():
                if array.shape != tuple(expected_size):
                    size = tuple(expected_size)
                    raise ValueError(
                        f"{task} of {frame.stem} is {array.shape}, expected {size}: {paths[task]}"
                    )
        return FrameGroundTruth(**maps, missing=missing)
