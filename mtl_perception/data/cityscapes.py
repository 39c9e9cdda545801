"""Cityscapes layout, label mapping and disparity -> depth.

The label table comes from the official ``cityscapesscripts.helpers.labels`` (PyPI ``cityscapesscripts``) so
that every mapping here follows the dataset's own definition instead of a hand-copied list.

Five-class mapping (TI multi-task: road, sky, pedestrian, vehicle, background):

* road -> ``road``; sky -> ``sky``; person, rider -> ``pedestrian``;
* car, truck, bus, train, motorcycle, bicycle -> ``vehicle``;
* every other label that Cityscapes evaluates (``ignoreInEval == False``) -> ``background``;
* labels Cityscapes ignores (``ignoreInEval == True``: unlabeled, ego vehicle, parking, caravan, trailer,
  license plate, ...) -> 255. Caravan and trailer are vehicles but Cityscapes ignores them in evaluation, so
  they are ignored here as well.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cityscapesscripts.helpers.labels import labels as CITYSCAPES_LABELS

FIVE_CLASS_NAMES = ("road", "sky", "pedestrian", "vehicle", "background")
IGNORE_INDEX = 255

_FIVE_CLASS_MEMBERS = {
    "road": ("road",),
    "sky": ("sky",),
    "pedestrian": ("person", "rider"),
    "vehicle": ("car", "truck", "bus", "train", "motorcycle", "bicycle"),
}

#: RGB colours of the five classes: the Cityscapes colours of their main member, and grey for background.
FIVE_CLASS_PALETTE = np.array(
    [(128, 64, 128), (70, 130, 180), (220, 20, 60), (0, 0, 142), (100, 100, 100)], dtype=np.uint8
)

#: Cityscapes names: ``{city}_{seq:06d}_{frame:06d}_{type}.{ext}``.
NAME_RE = re.compile(r"^(?P<city>.+)_(?P<seq>\d{6})_(?P<frame>\d{6})_(?P<suffix>.+)$")

#: Per-type folder and file suffix of the Cityscapes layout.
LAYOUT = {
    "image": ("leftImg8bit", "leftImg8bit.png"),
    "image_sequence": ("leftImg8bit_sequence", "leftImg8bit.png"),
    "label_ids": ("gtFine", "gtFine_labelIds.png"),
    "label_train_ids": ("gtFine", "gtFine_labelTrainIds.png"),
    "instance_ids": ("gtFine", "gtFine_instanceIds.png"),
    "motion": ("gtFine", "gtFine_labelTrainIds_motion.png"),
    "disparity": ("disparity", "disparity.png"),
    "camera": ("camera", "camera.json"),
    "vehicle": ("vehicle_sequence", "vehicle.json"),
    "timestamp": ("timestamp_sequence", "timestamp.txt"),
}
#: make_flow_dataset's precomputed flow input of the annotated frames (not a Cityscapes folder)
FLOW_FOLDER = "leftImg8bit_flow_farneback_confidence"


@dataclass(frozen=True)
class FrameId:
    """One Cityscapes frame, identified by city, sequence and frame number (never by a sorted index)."""

    city: str
    seq: int
    frame: int

    @property
    def stem(self) -> str:
        return f"{self.city}_{self.seq:06d}_{self.frame:06d}"

    @classmethod
    def parse(cls, name: str | Path) -> FrameId:
        """Parse a Cityscapes file name such as ``aachen_000000_000019_leftImg8bit.png``."""
        m = NAME_RE.match(Path(name).name)
        if m is None:
            raise ValueError(f"not a Cityscapes file name ({{city}}_{{seq}}_{{frame}}_{{type}}): {name}")
        return cls(m["city"], int(m["seq"]), int(m["frame"]))


def cityscapes_path(
    root: str | Path, kind: str, split: str, frame: FrameId, folder: str | None = None
) -> Path:
    """Path of one file of the layout, e.g. ``cityscapes_path(root, "disparity", "train", fid)``."""
    if kind not in LAYOUT:
        raise ValueError(f"unknown Cityscapes file kind {kind!r}; known: {sorted(LAYOUT)}")
    default_folder, suffix = LAYOUT[kind]
    return Path(root) / (folder or default_folder) / split / frame.city / f"{frame.stem}_{suffix}"


@dataclass(frozen=True)
class CameraCalibration:
    """A Cityscapes ``*_camera.json`` (metres and radians; intrinsics in pixels of the full image)."""

    fx: float
    fy: float
    u0: float
    v0: float
    baseline: float
    pitch: float = 0.0
    roll: float = 0.0
    yaw: float = 0.0
    x: float = 0.0
    y: float = 0.0
    z: float = 0.0

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the conventional name of the intrinsic matrix
        return np.array([[self.fx, 0.0, self.u0], [0.0, self.fy, self.v0], [0.0, 0.0, 1.0]])

    def scaled(self, sx: float, sy: float) -> CameraCalibration:
        """Intrinsics for an image resized by (sx, sy) (pixel-centre convention, as cv2.resize)."""
        return CameraCalibration(
            self.fx * sx,
            self.fy * sy,
            (self.u0 + 0.5) * sx - 0.5,
            (self.v0 + 0.5) * sy - 0.5,
            self.baseline,
            self.pitch,
            self.roll,
            self.yaw,
            self.x,
            self.y,
            self.z,
        )

    def to_json(self) -> dict:
        return {
            "extrinsic": {
                "baseline": self.baseline,
                "pitch": self.pitch,
                "roll": self.roll,
                "x": self.x,
                "y": self.y,
                "yaw": self.yaw,
                "z": self.z,
            },
            "intrinsic": {"fx": self.fx, "fy": self.fy, "u0": self.u0, "v0": self.v0},
        }


def read_camera(path: str | Path) -> CameraCalibration:
    """Read a Cityscapes camera file; a missing file or key, or an fx, fy or baseline that is not a positive
    finite number (depth is fx * baseline / disparity), raises an error naming the path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"camera file not found: {path}")
    try:
        data = json.loads(path.read_text())
        ext, intr = data["extrinsic"], data["intrinsic"]
        camera = CameraCalibration(
            fx=float(intr["fx"]),
            fy=float(intr["fy"]),
            u0=float(intr["u0"]),
            v0=float(intr["v0"]),
            baseline=float(ext["baseline"]),
            pitch=float(ext.get("pitch", 0.0)),
            roll=float(ext.get("roll", 0.0)),
            yaw=float(ext.get("yaw", 0.0)),
            x=float(ext.get("x", 0.0)),
            y=float(ext.get("y", 0.0)),
            z=float(ext.get("z", 0.0)),
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed Cityscapes camera file {path}: {exc!r}") from exc
    for name in ("fx", "fy", "baseline"):
        value = getattr(camera, name)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"Cityscapes camera file {path}: {name} is {value}, expected a positive number")
    return camera


def disparity_to_depth(disparity: np.ndarray, fx: float, baseline: float) -> np.ndarray:
    """Cityscapes 16-bit disparity PNG values -> metric depth (float32 metres, 0 = invalid).

    d = (p - 1) / 256 for p > 0, Z = fx * baseline / d, clipped to [1, 255] m as TI's loader does; p = 0 and
    d = 0 are invalid and give 0.
    """
    disparity = np.asarray(disparity)
    if disparity.dtype != np.uint16:
        raise ValueError(f"disparity must be the uint16 PNG values, got dtype {disparity.dtype}")
    if disparity.ndim != 2:
        raise ValueError(f"disparity must be HxW, got shape {disparity.shape}")
    if not (fx > 0 and baseline > 0):
        raise ValueError(f"fx and baseline must be positive, got fx={fx}, baseline={baseline}")
    d = (disparity.astype(np.float32) - 1.0) / 256.0
    valid = d > 0
    depth = np.zeros(disparity.shape, np.float32)
    depth[valid] = np.clip(np.float32(fx * baseline) / d[valid], 1.0, 255.0)
    return depth


def depth_to_disparity(depth: np.ndarray, fx: float, baseline: float) -> np.ndarray:
    """Metric depth -> Cityscapes disparity PNG values (p = d*256 + 1, 0 where depth is 0/inf/NaN)."""
    depth = np.asarray(depth, np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    p = np.zeros(depth.shape, np.float64)
    p[valid] = fx * baseline / depth[valid] * 256.0 + 1.0
    return np.clip(np.rint(p), 0, 65535).astype(np.uint16)


def _build_lookup(mode: str) -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    if mode == "trainid":
        for lab in CITYSCAPES_LABELS:
            if lab.id >= 0 and 0 <= lab.trainId < 255:
                lut[lab.id] = lab.trainId
        return lut
    if mode == "five":
        member_of = {
            name: FIVE_CLASS_NAMES.index(cls) for cls, names in _FIVE_CLASS_MEMBERS.items() for name in names
        }
        for lab in CITYSCAPES_LABELS:
            if lab.id < 0 or lab.ignoreInEval:
                continue
            lut[lab.id] = member_of.get(lab.name, FIVE_CLASS_NAMES.index("background"))
        return lut
    raise ValueError(f"unknown semantic mode {mode!r}; use 'five', 'trainid' or 'ti_five'")


_LOOKUPS = {mode: _build_lookup(mode) for mode in ("five", "trainid")}


def five_class_table() -> list[tuple[str, int, str]]:
    """(Cityscapes name, id, five-class name or 'ignore') for every label, from the official table."""
    lut = _LOOKUPS["five"]
    return [
        (lab.name, lab.id, FIVE_CLASS_NAMES[lut[lab.id]] if lab.id >= 0 and lut[lab.id] < 5 else "ignore")
        for lab in CITYSCAPES_LABELS
    ]


def label_ids_to_semantic(label_ids: np.ndarray, mode: str = "five") -> np.ndarray:
    """Cityscapes ``*_labelIds.png`` values -> training classes (uint8, 255 = ignore).

    mode "five": the five TI classes (see the module docstring); "trainid": the 19 Cityscapes trainIds;
    "ti_five": the input already is one of TI's five-class ``*_labelTrainIds.png`` maps (0..4 kept, else 255).
    """
    label_ids = np.asarray(label_ids)
    if label_ids.dtype != np.uint8:
        raise ValueError(f"label ids must be uint8, got dtype {label_ids.dtype}")
    if mode == "ti_five":
        return np.where(label_ids < 5, label_ids, IGNORE_INDEX).astype(np.uint8)
    if mode not in _LOOKUPS:
        raise ValueError(f"unknown semantic mode {mode!r}; use 'five', 'trainid' or 'ti_five'")
    return _LOOKUPS[mode][label_ids]


def num_semantic_classes(mode: str = "five") -> int:
    return 19 if mode == "trainid" else 5


def semantic_palette(mode: str = "five") -> np.ndarray:
    """(C, 3) uint8 RGB: trainId colours from the official table, or the five-class palette."""
    if mode in ("five", "ti_five"):
        return FIVE_CLASS_PALETTE.copy()
    if mode == "trainid":
        pal = np.zeros((19, 3), np.uint8)
        for lab in CITYSCAPES_LABELS:
            if 0 <= lab.trainId < 19:
                pal[lab.trainId] = lab.color
        return pal
    raise ValueError(f"unknown semantic mode {mode!r}; use 'five', 'trainid' or 'ti_five'")


def colorize_semantic(classes: np.ndarray, mode: str = "five") -> np.ndarray:
    """Class map (255 ignore) -> HxWx3 RGB image; ignore pixels are black."""
    pal = np.zeros((256, 3), np.uint8)
    p = semantic_palette(mode)
    pal[: len(p)] = p
    return pal[np.asarray(classes, np.uint8)]


def label_id(name: str) -> int:
    """Official Cityscapes label id of a label name (e.g. 'car' -> 26)."""
    for lab in CITYSCAPES_LABELS:
        if lab.name == name:
            return lab.id
    raise ValueError(f"unknown Cityscapes label {name!r}")
