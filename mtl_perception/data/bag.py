"""Cityscapes (or synthetic) sequences -> a rosbag2 (metadata v9, MCAP or sqlite3) written with ``rosbags``.

Topics: ``/camera/image_raw`` (sensor_msgs/Image rgb8), ``/camera/camera_info`` (plumb_bob, D = 0, K/P from
the Cityscapes camera file, scaled when resizing); with ``--with-gt`` on annotated frames: ``/gt/depth``
(32FC1 metres, NaN invalid), ``/gt/semantic`` (mono8, five classes by default) and ``/gt/motion`` (mono8 0/1,
255 undecided), all with the image's header. Offered QoS: reliable, keep-last 10, volatile (what
``ros2 bag play`` uses).
The bag plays with ``ros2 bag play BAG`` on a ROS 2 Jazzy install, or with this package's ``play_bag``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mtl_perception.atomic import staging_directory
from mtl_perception.cli import non_negative_float, positive_float, positive_int, tool_main
from mtl_perception.data.cityscapes import CameraCalibration, FrameId, cityscapes_path, read_camera
from mtl_perception.data.ground_truth import FrameGroundTruth, GroundTruthReader
from mtl_perception.imageio import read_image

FRAME_ID = "camera_left_optical_frame"
TOPICS = {
    "image": "/camera/image_raw",
    "camera_info": "/camera/camera_info",
    "depth": "/gt/depth",
    "semantic": "/gt/semantic",
    "motion": "/gt/motion",
}
#: bag time of the first frame (a fixed epoch keeps conversions reproducible)
START_TIME_NS = 1_600_000_000 * 10**9
#: frame-number jumps up to this size inside one sequence are missing frames; larger ones start a new snippet
MAX_GAP = 10
# Cityscapes' snippets are unrelated scenes. The node restarts its flow history after a pause longer than
# reset_gap_factor x flow_dt (10 x 2/17 = 1.18 s by default); a shorter pause between snippets would pair
# the first frames of a snippet with the last ones of the previous scene.
SNIPPET_GAP_S = 2.0


@dataclass
class Snippet:
    city: str
    seq: int
    frames: list[int]
    folder: str  # leftImg8bit_sequence or leftImg8bit


def find_snippets(
    root: Path, split: str, city: str | None = None, sequence: int | None = None
) -> list[Snippet]:
    """Group frames into snippets by (city, sequence), by Cityscapes name (never by sorted index)."""
    for folder in ("leftImg8bit_sequence", "leftImg8bit"):
        base = root / folder / split
        files = sorted(base.glob(f"{city or '*'}/*_leftImg8bit.png"))
        if files:
            break
    else:
        raise FileNotFoundError(
            f"no *_leftImg8bit.png under {root}/leftImg8bit_sequence/{split} or {root}/leftImg8bit/{split}"
            + (f" for city {city!r}" if city else "")
        )
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for f in files:
        fid = FrameId.parse(f)
        if sequence is None or fid.seq == sequence:
            groups[(fid.city, fid.seq)].append(fid.frame)
    if not groups:
        raise FileNotFoundError(f"sequence {sequence} not found under {base}")
    snippets = []
    for (c, s), frames in sorted(groups.items()):
        # some Cityscapes cities hold several 30-frame snippets in one long sequence: a jump of more than
        # MAX_GAP frame numbers starts a new snippet, smaller holes are missing frames (reported later)
        frames = sorted(frames)
        start = 0
        for k in range(1, len(frames) + 1):
            if k == len(frames) or frames[k] - frames[k - 1] > MAX_GAP:
                snippets.append(Snippet(c, s, frames[start:k], folder))
                start = k
    return snippets


def _find_camera(root: Path, split: str, snippet: Snippet) -> Path:
    cams = sorted(
        (root / "camera" / split / snippet.city).glob(f"{snippet.city}_{snippet.seq:06d}_*_camera.json")
    )
    if not cams:
        raise FileNotFoundError(
            f"no camera file for {snippet.city}_{snippet.seq:06d} in {root / 'camera' / split / snippet.city}"
        )
    inside = [p for p in cams if snippet.frames[0] <= FrameId.parse(p).frame <= snippet.frames[-1]]
    return (inside or cams)[0]  # the snippet's annotated frame; else any calibration of the sequence


def _read_timestamp(path: Path) -> int | None:
    if not path.is_file():
        return None
    try:
        return int(path.read_text().split()[0])
    except (ValueError, IndexError) as exc:
        raise ValueError(f"malformed timestamp file {path}") from exc


class _Messages:
    """Builds sensor_msgs messages of the rosbags Jazzy typestore."""

    def __init__(self):
        from rosbags.typesys import Stores, get_typestore

        self.ts = get_typestore(Stores.ROS2_JAZZY)
        t = self.ts.types
        self.Image, self.CameraInfo = t["sensor_msgs/msg/Image"], t["sensor_msgs/msg/CameraInfo"]
        self.Header, self.Time = t["std_msgs/msg/Header"], t["builtin_interfaces/msg/Time"]
        self.Roi = t["sensor_msgs/msg/RegionOfInterest"]

    def header(self, stamp_ns: int):
        return self.Header(
            stamp=self.Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=FRAME_ID
        )

    def image(self, stamp_ns: int, array: np.ndarray, encoding: str):
        array = np.ascontiguousarray(array)
        h, w = array.shape[:2]
        return self.Image(
            header=self.header(stamp_ns),
            height=h,
            width=w,
            encoding=encoding,
            is_bigendian=0,
            step=array.strides[0],
            data=array.reshape(-1).view(np.uint8),
        )

    def camera_info(self, stamp_ns: int, cam: CameraCalibration, height: int, width: int):
        k = np.array([cam.fx, 0, cam.u0, 0, cam.fy, cam.v0, 0, 0, 1], np.float64)
        p = np.array([cam.fx, 0, cam.u0, 0, 0, cam.fy, cam.v0, 0, 0, 0, 1, 0], np.float64)
        return self.CameraInfo(
            header=self.header(stamp_ns),
            height=height,
            width=width,
            distortion_model="plumb_bob",
            d=np.zeros(5),
            k=k,
            r=np.eye(3).reshape(-1),
            p=p,
            binning_x=0,
            binning_y=0,
            roi=self.Roi(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
        )

    def serialize(self, msg) -> bytes:
        return self.ts.serialize_cdr(msg, msg.__msgtype__)


def playback_qos():
    """Reliable, keep-last 10, volatile: ``Rosbag2QoS{}``, what ``ros2 bag play`` offers by default."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    infinite = QosTime(sec=9223372036, nsec=854775807)
    return Qos(
        history=QosHistory.KEEP_LAST,
        depth=10,
        reliability=QosReliability.RELIABLE,
        durability=QosDurability.VOLATILE,
        deadline=infinite,
        lifespan=infinite,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=infinite,
        avoid_ros_namespace_conventions=False,
    )


@contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A bag path in a hidden folder beside ``out``, renamed to ``out`` only when the block succeeds: a
    conversion that stops on a bad file or a signal leaves no half-written bag, and one killed outright
    leaves a folder the next run removes (``mtl_perception.atomic``). The staged bag keeps ``out``'s name,
    which rosbags uses for its storage file."""
    with staging_directory(out) as folder:
        yield folder / out.name
        (folder / out.name).rename(out)


def convert(
    root: str | Path,
    split: str,
    out: str | Path,
    *,
    city: str | None = None,
    sequence: int | None = None,
    storage: str = "mcap",
    width: int | None = None,
    height: int | None = None,
    with_gt: bool = False,
    semantic_mode: str = "five",
    fps: float = 17.0,
    snippet_gap_s: float = SNIPPET_GAP_S,
) -> dict[str, int]:
    """Write the bag; returns message counts per topic. Refuses an existing ``out``; on an error (a missing or
    unreadable file) nothing is left at ``out``."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    root, out = Path(root), Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; rosbag2 output is never overwritten")
    if storage not in ("mcap", "sqlite3"):
        raise ValueError(f"storage must be 'mcap' or 'sqlite3', got {storage!r}")
    if (width is None) != (height is None):
        raise ValueError("give both --width and --height, or neither")
    if width is not None and (width < 1 or height < 1):
        raise ValueError(f"--width and --height must be positive, got {width}x{height}")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"--fps must be a positive finite number, got {fps}")
    if not (math.isfinite(snippet_gap_s) and snippet_gap_s >= 0):
        raise ValueError(f"--snippet-gap must be a finite number >= 0, got {snippet_gap_s}")
    snippets = find_snippets(root, split, city, sequence)
    ground_truth = GroundTruthReader(root, split, semantic_mode=semantic_mode, depth_folder="disparity")
    msgs = _Messages()
    counts: dict[str, int] = defaultdict(int)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    qos = [playback_qos()]
    with _staged(out) as staging, Writer(staging, version=9, storage_plugin=plugin) as writer:
        types = {"image": "sensor_msgs/msg/Image", "camera_info": "sensor_msgs/msg/CameraInfo"}
        if with_gt:
            types |= {k: "sensor_msgs/msg/Image" for k in ("depth", "semantic", "motion")}
        conns = {
            k: writer.add_connection(TOPICS[k], t, typestore=msgs.ts, offered_qos_profiles=qos)
            for k, t in types.items()
        }

        def write(kind: str, stamp: int, msg) -> None:
            writer.write(conns[kind], stamp, msgs.serialize(msg))
            counts[TOPICS[kind]] += 1

        t_start = START_TIME_NS
        missing_gt: set[str] = set()
        for snip in snippets:
            missing = sorted(set(range(snip.frames[0], snip.frames[-1] + 1)) - set(snip.frames))
            if missing:
                print(
                    f"cityscapes_to_bag: warning: {snip.city}_{snip.seq:06d} misses frames {missing}",
                    file=sys.stderr,
                )
            cam_full = read_camera(_find_camera(root, split, snip))
            ts0 = _read_timestamp(
                cityscapes_path(root, "timestamp", split, FrameId(snip.city, snip.seq, snip.frames[0]))
            )
            stamp = t_start
            for f in snip.frames:
                fid = FrameId(snip.city, snip.seq, f)
                ts = _read_timestamp(cityscapes_path(root, "timestamp", split, fid))
                if ts is not None and ts0 is not None:
                    stamp = t_start + (ts - ts0)
                else:
                    stamp = t_start + round((f - snip.frames[0]) * 1e9 / fps)
                img_path = root / snip.folder / split / snip.city / f"{fid.stem}_leftImg8bit.png"
                rgb = read_image(img_path, cv2.IMREAD_COLOR)[..., ::-1]
                h0, w0 = rgb.shape[:2]
                h, w = (height, width) if height is not None else (h0, w0)
                cam = cam_full.scaled(w / w0, h / h0)
                if (h, w) != (h0, w0):
                    interp = cv2.INTER_AREA if h < h0 else cv2.INTER_LINEAR
                    rgb = cv2.resize(rgb, (w, h), interpolation=interp)
                write("camera_info", stamp, msgs.camera_info(stamp, cam, h, w))
                write("image", stamp, msgs.image(stamp, rgb, "rgb8"))
                if with_gt and ground_truth.is_annotated(fid):
                    truth = ground_truth.read(fid, camera=cam_full, expected_size=(h0, w0), required=False)
                    _warn_missing(truth, missing_gt)
                    for kind, (array, encoding) in _ground_truth_images(truth, size=(h, w)).items():
                        write(kind, stamp, msgs.image(stamp, array, encoding))
            t_start = stamp + round(snippet_gap_s * 1e9)
    return dict(counts)


def _warn_missing(truth: FrameGroundTruth, warned: set[str]) -> None:
    """Warn once per task whose ground truth is absent (real Cityscapes has no motion ground truth)."""
    for kind, path in truth.missing.items():
        if kind not in warned:
            print(f"cityscapes_to_bag: warning: no {kind} ground truth, e.g. {path}", file=sys.stderr)
            warned.add(kind)


def _ground_truth_images(truth: FrameGroundTruth, size: tuple[int, int]) -> dict[str, tuple[np.ndarray, str]]:
    """The frame's ground truth as (array, encoding) at the bag's image size: depth 32FC1 metres with NaN
    invalid (REP 118), semantic and motion mono8; nearest resizing keeps only values present in the map."""
    h, w = size
    images = {}
    for kind, array in truth.present().items():
        if kind == "depth":
            array = np.where(array > 0, array, np.nan).astype(np.float32)
        if array.shape != (h, w):
            array = cv2.resize(array, (w, h), interpolation=cv2.INTER_NEAREST)
        images[kind] = (array, "32FC1" if kind == "depth" else "mono8")
    return images


@tool_main("cityscapes_to_bag")
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cityscapes_to_bag", description=__doc__.split("\n")[0])
    ap.add_argument("--root", required=True, type=Path)
    ap.add_argument("--split", default="val")
    ap.add_argument("--city")
    ap.add_argument("--sequence", type=int)
    ap.add_argument("--out", required=True, type=Path, help="bag directory to create (must not exist)")
    ap.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    ap.add_argument("--width", type=positive_int)
    ap.add_argument("--height", type=positive_int)
    ap.add_argument("--with-gt", action="store_true", help="also write /gt/depth, /gt/semantic, /gt/motion")
    ap.add_argument("--semantic", choices=("five", "trainid"), default="five")
    ap.add_argument(
        "--fps", type=positive_float, default=17.0, help="frame rate used when timestamp_sequence is absent"
    )
    ap.add_argument(
        "--snippet-gap",
        type=non_negative_float,
        default=SNIPPET_GAP_S,
        help="seconds between snippets (longer than the node's reset gap, 10 x 2/17 s by default, so the "
        "node restarts its flow at each snippet instead of pairing frames of two unrelated scenes)",
    )
    args = ap.parse_args(argv)
    counts = convert(
        root=args.root,
        split=args.split,
        out=args.out,
        city=args.city,
        sequence=args.sequence,
        storage=args.storage,
        width=args.width,
        height=args.height,
        with_gt=args.with_gt,
        semantic_mode=args.semantic,
        fps=args.fps,
        snippet_gap_s=args.snippet_gap,
    )
    for topic, n in sorted(counts.items()):
        print(f"{topic}: {n} messages")
    print(f"wrote {args.out} ({args.storage})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
