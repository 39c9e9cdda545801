"""What ``make_motion_labels`` reads of one annotated frame, from the files real Cityscapes publishes only:
the frame (``leftImg8bit``), its flow partner f - gap (``leftImg8bit_sequence``), disparity, camera, the
odometry (``vehicle_sequence``) and timestamps (``timestamp_sequence``) of frames f - gap .. f, and the
``gtFine`` label and instance maps. A missing or corrupt file is an :class:`InputProblem` of one kind, so the
tool can skip the frame and report it with others of its kind; a missing folder names its download."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mtl_perception.atomic import temporary_name_of
from mtl_perception.data.cityscapes import CameraCalibration, FrameId, cityscapes_path, read_camera
from mtl_perception.data.ground_truth import read_depth
from mtl_perception.imageio import read_image

#: the Cityscapes download (cityscapes-dataset.com) that provides each folder the tool reads
PACKAGES = {
    "leftImg8bit": "leftImg8bit_trainvaltest.zip",
    "leftImg8bit_sequence": "leftImg8bit_sequence_trainvaltest.zip (only the partner frames are needed)",
    "disparity": "disparity_trainvaltest.zip",
    "camera": "camera_trainvaltest.zip",
    "vehicle_sequence": "vehicle_sequence.zip",
    "timestamp_sequence": "timestamp_sequence.zip",
    "gtFine": "gtFine_trainvaltest.zip",
}
#: kinds of input problems, in the order the report lists them (one warning line per kind)
PROBLEM_KINDS = ("image", "partner", "disparity", "camera", "vehicle", "timestamp", "labels", "instances")


class InputProblem(Exception):
    """A missing or unreadable input of one frame: ``kind`` (one of ``PROBLEM_KINDS``) and the file."""

    def __init__(self, kind: str, path: Path, reason: str) -> None:
        super().__init__(f"{kind}: {path}: {reason}")
        self.kind, self.path, self.reason = kind, Path(path), reason


@dataclass
class FrameInputs:
    frame: FrameId
    image: np.ndarray  # HxWx3 uint8 RGB, frame f
    partner: np.ndarray  # HxWx3 uint8 RGB, frame f - gap
    depth: np.ndarray  # HxW float32 metres, 0 = invalid
    camera: CameraCalibration
    label_ids: np.ndarray  # HxW uint8 Cityscapes label ids
    instance_ids: np.ndarray  # HxW int32 Cityscapes instance ids (label * 1000 + k, else the label id)
    speeds: list[float]  # m/s of frames f - gap .. f - 1 (each holds until the next timestamp)
    yaw_rates: list[float]  # rad/s, same frames
    timestamps_ns: list[int]  # frames f - gap .. f


def check_layout(root: Path, split: str) -> None:
    """Every folder the tool reads exists for the split, else FileNotFoundError naming the first missing
    one and the Cityscapes package that provides it."""
    for folder, package in PACKAGES.items():
        path = Path(root) / folder / split
        if not path.is_dir():
            raise FileNotFoundError(
                f"missing folder {path}: it comes with Cityscapes' {package}, unpacked into {root}"
            )


def annotated_frames(root: Path, split: str) -> list[FrameId]:
    """Every annotated frame of the split (one ``leftImg8bit`` image each), sorted."""
    images = sorted((Path(root) / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
    return [FrameId.parse(p) for p in images if not temporary_name_of(p.name)]


def _rgb(kind: str, path: Path) -> np.ndarray:
    try:
        image = read_image(path, cv2.IMREAD_COLOR)
    except (FileNotFoundError, ValueError) as error:
        raise InputProblem(kind, path, str(error)) from error
    return np.ascontiguousarray(image[..., ::-1])


def _vehicle(path: Path) -> tuple[float, float]:
    try:
        data = json.loads(path.read_text())
        speed, yaw_rate = float(data["speed"]), float(data["yawRate"])
    except FileNotFoundError as error:
        raise InputProblem("vehicle", path, "missing file") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise InputProblem("vehicle", path, f"not a Cityscapes vehicle file ({error!r})") from error
    if not (math.isfinite(speed) and math.isfinite(yaw_rate)):
        raise InputProblem("vehicle", path, f"non-finite speed {speed} or yawRate {yaw_rate}")
    return speed, yaw_rate


def _timestamp(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except FileNotFoundError as error:
        raise InputProblem("timestamp", path, "missing file") from error
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InputProblem("timestamp", path, f"not an integer number of nanoseconds ({error!r})") from error


def _map(kind: str, path: Path, dtypes: tuple, shape: tuple[int, int]) -> np.ndarray:
    try:
        array = read_image(path, cv2.IMREAD_UNCHANGED)
    except (FileNotFoundError, ValueError) as error:
        raise InputProblem(kind, path, str(error)) from error
    if array.dtype not in dtypes or array.shape != shape:
        raise InputProblem(
            kind, path, f"expected a {shape} single-channel map, got {array.dtype} of shape {array.shape}"
        )
    return array


def read_frame_inputs(root: Path, split: str, frame: FrameId, gap: int) -> FrameInputs:
    """Everything the labels of ``frame`` need; :class:`InputProblem` names the first bad file."""
    image = _rgb("image", cityscapes_path(root, "image", split, frame))
    earlier = [FrameId(frame.city, frame.seq, frame.frame - k) for k in range(gap, 0, -1)]
    partner = _rgb("partner", cityscapes_path(root, "image_sequence", split, earlier[0]))
    if partner.shape != image.shape:
        raise InputProblem(
            "partner",
            cityscapes_path(root, "image_sequence", split, earlier[0]),
            f"{partner.shape[:2]} differs from the annotated frame's {image.shape[:2]}",
        )
    camera_path = cityscapes_path(root, "camera", split, frame)
    try:
        camera = read_camera(camera_path)
    except (FileNotFoundError, ValueError) as error:
        raise InputProblem("camera", camera_path, str(error)) from error
    disparity_path = cityscapes_path(root, "disparity", split, frame)
    try:
        depth = read_depth(disparity_path, camera)
    except (FileNotFoundError, ValueError) as error:
        raise InputProblem("disparity", disparity_path, str(error)) from error
    if depth.shape != image.shape[:2]:
        raise InputProblem("disparity", disparity_path, f"{depth.shape} differs from {image.shape[:2]}")
    odometry = [_vehicle(cityscapes_path(root, "vehicle", split, f)) for f in earlier]
    timestamps = [_timestamp(cityscapes_path(root, "timestamp", split, f)) for f in [*earlier, frame]]
    if any(b <= a for a, b in zip(timestamps, timestamps[1:], strict=False)):
        path = cityscapes_path(root, "timestamp", split, frame)
        raise InputProblem(
            "timestamp", path, f"timestamps of frames f - {gap} .. f do not increase: {timestamps}"
        )
    shape = image.shape[:2]
    label_ids = _map("labels", cityscapes_path(root, "label_ids", split, frame), (np.uint8,), shape)
    instances = _map(
        "instances", cityscapes_path(root, "instance_ids", split, frame), (np.uint16, np.int32), shape
    )
    return FrameInputs(
        frame=frame,
        image=image,
        partner=partner,
        depth=depth,
        camera=camera,
        label_ids=label_ids,
        instance_ids=instances.astype(np.int32),
        speeds=[s for s, _ in odometry],
        yaw_rates=[w for _, w in odometry],
        timestamps_ns=timestamps,
    )
