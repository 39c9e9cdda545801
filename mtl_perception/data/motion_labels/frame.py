"""The motion label of one annotated frame.

1. Ego-motion: the vehicle's planar motion from odometry and timestamps (frames f - gap .. f), carried to
   the camera through the extrinsic (``mtl_perception.data.geometry``).
2. Rigid flow: where each pixel of frame f was in frame f - gap if the world were static, from its depth.
3. Residual flow: the project's Farnebäck (``mtl_perception.pipeline.FlowInput``, as the node computes
   flow) between frame f and frame f - gap warped by the rigid flow. Farnebäck measures small displacements
   well and returns about zero flow where a surface has no texture, whatever the true motion; against the
   warped partner the static world's answer is zero, so large sheared ground motion and textureless static
   surfaces come out right, and pixels without texture get a low confidence and are not used.
4. One decision per object instance (``gtFine`` instanceIds) from the residual flow of its confident,
   still-visible pixels inside its eroded outline (``evidence``):
   moving when their median residual speed is above ``moving_speed`` and ``moving_sigmas`` times the
   noise-equivalent lateral speed, or when the planar fit's speed is above ``fit_moving_speed`` by
   ``fit_sigmas`` standard deviations (motion along the viewing ray); static when the residual speed is
   below ``static_speed`` and a motion at the class's ``observe_speed`` in the object's least visible
   direction would have shown (so far objects, or ones that could move along the viewing ray unseen, stay
   undecided); undecided otherwise.
5. Pixels of movable classes take their instance's decision; a movable-class region without an instance id
   (Cityscapes' groups, e.g. ``cargroup``) is undecided; every other pixel is static (the ego vehicle's
   hood and the rectification border included).

The static world is the check of steps 1-3: its median residual must stay within ``max_background_px``
(pixels of the flow grid; Farnebäck's own noise there is about 0.3 px). When it does not, the odometry,
timestamps or calibration do not explain the frame (a timing offset, a calibration error, a wrong
disparity), and its objects are left undecided rather than labelled from a wrong ego-motion."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np
from cityscapesscripts.helpers.labels import labels as CITYSCAPES_LABELS

from mtl_perception.data.geometry import (
    backproject,
    camera_motion,
    camera_to_vehicle,
    ego_motion,
    project,
    rigid_flow_from_depth,
)
from mtl_perception.data.ground_truth import MOTION_MOVING, MOTION_STATIC, MOTION_UNDECIDED

from .evidence import object_evidence
from .inputs import FrameInputs

#: classes whose objects may move: Cityscapes' instance classes (person, rider, car, truck, bus, caravan,
#: trailer, train, motorcycle, bicycle), from the official table
MOVABLE_LABEL_IDS = frozenset(lab.id for lab in CITYSCAPES_LABELS if lab.hasInstances and lab.id >= 0)
_HUMAN_LABEL_IDS = frozenset(lab.id for lab in CITYSCAPES_LABELS if lab.category == "human" and lab.id >= 0)
_LABEL_NAMES = {lab.id: lab.name for lab in CITYSCAPES_LABELS if lab.id >= 0}
#: the static world that checks the ego-motion and measures the flow's noise: upright structure
#: (construction, object and vegetation), not the ground (flat, terrain: Farnebäck's sheared-motion bias)
_BACKGROUND_LABEL_IDS = frozenset(
    lab.id
    for lab in CITYSCAPES_LABELS
    if lab.id >= 0 and (lab.category in ("construction", "object") or lab.name == "vegetation")
)
FAR_DEPTH_M = 1000.0  # where disparity is missing (sky, holes) the partner is warped by the rotation alone
DECISIONS = ("moving", "static", "undecided")
#: why an instance got its decision
REASONS = {
    "moving": ("residual", "fit"),
    "static": ("no_residual",),
    "undecided": ("few_pixels", "unobservable", "ambiguous", "background_mismatch"),
}
_CODES = {"moving": MOTION_MOVING, "static": MOTION_STATIC, "undecided": MOTION_UNDECIDED}


@dataclass(frozen=True)
class Settings:
    """Everything a label depends on besides the input files (recorded in the report and every frame's
    decisions; a rerun with other settings is refused)."""

    gap: int = 2
    flow_width: int = 1024  # Farnebäck runs at this width (at most the image's), the height by aspect
    moving_speed: float = 0.175  # m/s of residual speed: moving above this ...
    moving_sigmas: float = 2.0  # ... and above this many noise-equivalent lateral speeds
    fit_moving_speed: float = 2.0  # m/s: moving too when the planar fit's speed is above this ...
    fit_sigmas: float = 2.0  # ... by this many of its standard deviations
    static_speed: float = 0.125  # m/s of residual speed: static below this ...
    observe_speed_human: float = 1.0  # ... if walking at this speed would have shown (person, rider)
    observe_speed_vehicle: float = 3.0  # ... if driving at this speed would have shown (the other classes)
    min_confidence: float = 0.5  # pixels with a lower Farnebäck confidence are not used
    min_pixels: int = 50  # fewer usable pixels: undecided
    max_samples: int = 20000  # pixels of an object (or of the static world) the statistics look at
    erosion_flow_px: float = 2.0  # outline erosion in pixels of the flow grid (flow bleeds across it)
    max_background_px: float = 1.0  # static world's median residual (px of the flow grid) before a mismatch

    def flow_size(self, height: int, width: int) -> tuple[int, int]:
        w = min(self.flow_width, width)
        return max(int(round(height * w / width)), 8), w

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class InstanceDecision:
    instance_id: int
    label: str
    pixels: int  # in the full-resolution map
    samples: int  # confident, visible pixels inside the eroded outline that the statistics used
    depth_m: float  # median depth of the samples (NaN without samples)
    residual_speed: float  # m/s (NaN without samples)
    noise_speed_lateral: float  # m/s
    noise_speed_worst: float  # m/s
    fit_speed: float  # m/s of the planar fit
    fit_speed_sigma: float  # m/s
    decision: str  # one of DECISIONS
    reason: str  # one of REASONS[decision]


@dataclass
class FrameDecisions:
    frame: str
    dt_s: float
    ego_speed: float  # m/s over the interval
    background_residual_px: (
        float  # static world's median residual flow, px of the flow grid (NaN: unmeasured)
    )
    background_ok: bool
    instances: list[InstanceDecision] = field(default_factory=list)
    group_pixels: int = 0  # movable-class pixels without an instance id (undecided)
    undecided_pixels: int = 0
    moving_pixels: int = 0
    pixels: int = 0

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> FrameDecisions:
        instances = [InstanceDecision(**i) for i in data["instances"]]
        return cls(**{**data, "instances": instances})


def _eroded(mask: np.ndarray, radius: int) -> np.ndarray:
    if radius < 1:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.erode(mask.astype(np.uint8), kernel) > 0


class FrameLabeller:
    """Labels annotated frames with one flow engine (``mtl_perception.pipeline.FlowInput``)."""

    def __init__(self, flow_input, settings: Settings) -> None:
        self.flow_input, self.settings = flow_input, settings

    def residual_flow(self, inputs: FrameInputs, rigid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """((h, w, 2) flow in px of the flow grid, (h, w) confidence) of frame f towards frame f - gap
        warped by the ego-motion's rigid flow ``rigid`` (H, W, 2)."""
        height, width = inputs.image.shape[:2]
        grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
        warped = cv2.remap(
            inputs.partner,
            grid_x + rigid[..., 0],
            grid_y + rigid[..., 1],
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        flow, confidence = self.flow_input.between(
            inputs.image, warped, self.settings.flow_size(height, width)
        )
        flow = np.ascontiguousarray(flow.permute(1, 2, 0).cpu().numpy().astype(np.float32))
        return flow, np.ascontiguousarray(confidence.cpu().numpy().astype(np.float32))

    def label(self, inputs: FrameInputs) -> tuple[np.ndarray, FrameDecisions]:
        """(HxW uint8 label map: 0 static, 255 moving, 128 undecided; the decisions)."""
        s = self.settings
        height, width = inputs.image.shape[:2]
        K = inputs.camera.K
        R_v, p_v = ego_motion(inputs.speeds, inputs.yaw_rates, inputs.timestamps_ns)
        R, t = camera_motion(inputs.camera, R_v, p_v)
        depth_or_far = np.where(inputs.depth > 0, inputs.depth, FAR_DEPTH_M)
        rigid = np.nan_to_num(rigid_flow_from_depth(depth_or_far, K, R, t))
        residual, confidence = self.residual_flow(inputs, rigid)
        scale_x, scale_y = width / residual.shape[1], height / residual.shape[0]
        B = camera_to_vehicle(inputs.camera)[0].T[:, :2]  # V's x and y axes in optical coordinates
        dt = (inputs.timestamps_ns[-1] - inputs.timestamps_ns[0]) * 1e-9

        def samples(mask: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            """(P (3, N) where a static point would be in the partner camera, depth (N,), residual (N, 2)
            px) of up to max_samples pixels of ``mask``: seen by the partner, with confident flow."""
            v, u = np.nonzero(mask)
            if len(u) > s.max_samples:  # an even subset: the statistics are medians over the object
                pick = np.sort(np.random.default_rng(seed).choice(len(u), s.max_samples, replace=False))
                u, v = u[pick], v[pick]
            z = inputs.depth[v, u].astype(np.float64)
            P = R @ backproject(u.astype(np.float64), v.astype(np.float64), z, K) + t[:, None]
            pu, pv = project(P, K)
            gu = ((u + 0.5) / scale_x - 0.5).astype(np.float32)[None]
            gv = ((v + 0.5) / scale_y - 0.5).astype(np.float32)[None]
            r = cv2.remap(residual, gu, gv, cv2.INTER_LINEAR)[0] * (scale_x, scale_y)
            c = cv2.remap(confidence, gu, gv, cv2.INTER_LINEAR)[0]
            keep = (P[2] > 0) & (pu >= 0) & (pu <= width - 1) & (pv >= 0) & (pv <= height - 1)
            keep &= c >= s.min_confidence
            return P[:, keep], z[keep], r[keep]

        labels, ids = inputs.label_ids, inputs.instance_ids
        depth_ok = inputs.depth > 0
        movable = np.isin(labels, list(MOVABLE_LABEL_IDS))
        decisions = FrameDecisions(
            frame=inputs.frame.stem,
            dt_s=dt,
            ego_speed=float(np.hypot(*p_v[:2]) / dt),
            background_residual_px=float("nan"),
            background_ok=False,
            pixels=height * width,
        )
        _, _, r = samples(np.isin(labels, list(_BACKGROUND_LABEL_IDS)) & depth_ok, seed=0)
        sigma_px = float("nan")
        if len(r) >= s.min_pixels:
            sigma_px = float(np.median(np.hypot(r[:, 0], r[:, 1])))
            decisions.background_residual_px = sigma_px / scale_x
            decisions.background_ok = decisions.background_residual_px <= s.max_background_px

        out = np.full((height, width), MOTION_STATIC, np.uint8)
        instance_pixels = ids >= 1000
        groups = movable & ~instance_pixels
        out[groups] = MOTION_UNDECIDED
        decisions.group_pixels = int(groups.sum())
        radius = int(round(s.erosion_flow_px * scale_x))
        for instance_id in np.unique(ids[instance_pixels]):
            label_id = int(instance_id) // 1000
            if label_id not in MOVABLE_LABEL_IDS:
                continue
            mask = ids == instance_id
            usable = _eroded(mask, radius) & depth_ok
            if usable.sum() < s.min_pixels:
                usable = mask & depth_ok  # small objects: their outline is all there is
            P, z, r = samples(usable, seed=int(instance_id))
            decision = InstanceDecision(
                instance_id=int(instance_id),
                label=_LABEL_NAMES[label_id],
                pixels=int(mask.sum()),
                samples=len(z),
                depth_m=float(np.median(z)) if len(z) else float("nan"),
                residual_speed=float("nan"),
                noise_speed_lateral=float("nan"),
                noise_speed_worst=float("nan"),
                fit_speed=float("nan"),
                fit_speed_sigma=float("nan"),
                decision="undecided",
                reason="few_pixels",
            )
            if len(z) >= s.min_pixels and np.isfinite(sigma_px):
                # samples closer than Farnebäck's averaging window share their flow error
                spacing = usable.sum() / min(usable.sum(), s.max_samples)
                independent = len(z) * spacing / (self.flow_input.params.winsize * scale_x) ** 2
                evidence = object_evidence(P, z, r, K, B, sigma_px=sigma_px, dt=dt, independent=independent)
                decision.residual_speed = evidence.residual_speed
                decision.noise_speed_lateral = evidence.noise_speed_lateral
                decision.noise_speed_worst = evidence.noise_speed_worst
                decision.fit_speed, decision.fit_speed_sigma = evidence.fit_speed, evidence.fit_speed_sigma
                observe = s.observe_speed_human if label_id in _HUMAN_LABEL_IDS else s.observe_speed_vehicle
                decision.decision, decision.reason = decide(evidence, observe, s)
            if len(z) >= s.min_pixels and not decisions.background_ok:  # the ego-motion is not to be trusted
                decision.decision, decision.reason = "undecided", "background_mismatch"
            out[mask] = _CODES[decision.decision]
            decisions.instances.append(decision)
        decisions.undecided_pixels = int((out == MOTION_UNDECIDED).sum())
        decisions.moving_pixels = int((out == MOTION_MOVING).sum())
        return out, decisions


def decide(evidence, observe_speed: float, s: Settings) -> tuple[str, str]:
    """(decision, reason) of one object from its evidence (``evidence.Evidence``)."""
    v = evidence.residual_speed
    if v >= max(s.moving_speed, s.moving_sigmas * evidence.noise_speed_lateral):
        return "moving", "residual"
    if evidence.fit_speed - s.fit_sigmas * evidence.fit_speed_sigma >= s.fit_moving_speed:
        return "moving", "fit"
    if v < s.static_speed:
        if evidence.noise_speed_worst <= observe_speed:
            return "static", "no_residual"
        return "undecided", "unobservable"
    return "undecided", "ambiguous"
