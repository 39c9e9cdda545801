"""One random street: its layout (sidewalks, facades, trees, poles and signs, parked cars, pedestrians, a
cross street and a closing facade), traffic timed to be in view around the Cityscapes annotated frame, the
ego trajectory and the lighting. Every draw comes from one generator in a fixed order, so a seed gives the
same street on every platform."""

from __future__ import annotations

import numpy as np

from mtl_perception.data.cityscapes import CameraCalibration
from mtl_perception.data.geometry import camera_to_vehicle, rot_z, vehicle_arc

from .annotation import annotated_index
from .world import (
    BUILDING,
    BUILDING_COLORS,
    BUILDING_ID,
    CAR_ID,
    CROSS_WIDTH,
    CURB_HEIGHT,
    EGO_LANE_Y,
    PERSON_ID,
    POLE,
    POLE_ID,
    ROAD_HALF_WIDTH,
    SIDEWALK,
    SIDEWALK_ID,
    SIDEWALK_WIDTH,
    SIGN,
    SIGN_ID,
    TRUNK,
    VEGETATION,
    VEGETATION_ID,
    Box,
    InstanceIds,
    Lighting,
    Scene,
    car,
    draw_seed,
    pedestrian,
    pick_color,
)

STREET_START, STREET_END = -30.0, 230.0  # x range of the main street (metres)
CrossStreet = tuple[float, float]  # x range [start, end] of the cross street


def _clear_of(cross: CrossStreet, a: float, b: float) -> bool:
    """Whether the x interval [a, b] keeps 1 m away from the cross street."""
    return b < cross[0] - 1.0 or a > cross[1] + 1.0


def _sidewalks(rng: np.random.Generator, side: float, cross: CrossStreet) -> list[Box]:
    """Raised sidewalks on one side, interrupted by the cross street; the curb face counts as sidewalk too
    (Cityscapes convention)."""
    y0 = side * ROAD_HALF_WIDTH
    y1 = side * (ROAD_HALF_WIDTH + SIDEWALK_WIDTH)
    return [
        Box(
            np.array([xa, min(y0, y1), 0.0]),
            np.array([xb, max(y0, y1), CURB_HEIGHT]),
            SIDEWALK_ID,
            SIDEWALK,
            (0.62, 0.6, 0.57),
            draw_seed(rng),
        )
        for xa, xb in ((STREET_START, cross[0]), (cross[1], STREET_END))
    ]


def _tree(rng: np.random.Generator, x: float, y: float) -> list[Box]:
    """A trunk and a crown box."""
    trunk = Box(
        np.array([x - 0.15, y - 0.15, 0.0]),
        np.array([x + 0.15, y + 0.15, 2.5]),
        VEGETATION_ID,
        TRUNK,
        (0.3, 0.22, 0.15),
        draw_seed(rng),
    )
    r, crown_height = rng.uniform(1.2, 2.2), rng.uniform(2.0, 3.5)
    crown = Box(
        np.array([x - r, y - r, 2.2]),
        np.array([x + r, y + r, 2.2 + crown_height]),
        VEGETATION_ID,
        VEGETATION,
        pick_color(rng, [(0.2, 0.38, 0.12), (0.28, 0.42, 0.15)]),
        draw_seed(rng),
    )
    return [trunk, crown]


def _facades_and_trees(rng: np.random.Generator, side: float, cross: CrossStreet) -> list[Box]:
    """Building facades along one side at varying setback, length and height, gaps left for the cross
    street; a tree in front of some set-back facades, never on the cross street."""
    boxes: list[Box] = []
    x = STREET_START
    while x < STREET_END:
        if cross[0] - 4.0 <= x < cross[1] + 1.0:
            x = cross[1] + 1.0
            continue
        length = min(rng.uniform(8, 22), cross[0] - 1.0 - x) if x < cross[0] else rng.uniform(8, 22)
        setback = rng.uniform(0.0, 6.0) if rng.random() < 0.8 else rng.uniform(8, 15)
        near = ROAD_HALF_WIDTH + SIDEWALK_WIDTH + setback
        depth = rng.uniform(8, 14)
        height = rng.uniform(7, 24)
        ylo, yhi = sorted((side * near, side * (near + depth)))
        boxes.append(
            Box(
                np.array([x, ylo, 0.0]),
                np.array([x + length, yhi, height]),
                BUILDING_ID,
                BUILDING,
                pick_color(rng, BUILDING_COLORS),
                draw_seed(rng),
            )
        )
        tree_y = side * (ROAD_HALF_WIDTH + SIDEWALK_WIDTH + rng.uniform(0.8, max(setback - 1.5, 0.9)))
        tree_x = x + rng.uniform(2, max(2.5, length - 2))
        if setback > 3.0 and rng.random() < 0.7 and _clear_of(cross, tree_x - 2.5, tree_x + 2.5):
            boxes += _tree(rng, tree_x, tree_y)
        x += length + (rng.uniform(2, 8) if rng.random() < 0.3 else 0.0)
    return boxes


def _poles_and_signs(rng: np.random.Generator, side: float, cross: CrossStreet) -> list[Box]:
    """Poles near the curb of one side, some carrying a traffic sign."""
    boxes: list[Box] = []
    positions = np.sort(rng.uniform(0, 150, size=rng.integers(3, 6)))
    for px in [p for p in positions if _clear_of(cross, p, p)]:
        py = side * (ROAD_HALF_WIDTH + 0.5)
        pole_height = rng.uniform(3.5, 6.0)
        boxes.append(
            Box(
                np.array([px - 0.08, py - 0.08, CURB_HEIGHT]),
                np.array([px + 0.08, py + 0.08, pole_height]),
                POLE_ID,
                POLE,
                (0.5, 0.5, 0.52),
                draw_seed(rng),
            )
        )
        if rng.random() < 0.6:
            boxes.append(
                Box(
                    np.array([px - 0.12, py - 0.35, 2.2]),
                    np.array([px - 0.08, py + 0.35, 2.9]),
                    SIGN_ID,
                    SIGN,
                    pick_color(rng, [(0.1, 0.25, 0.7), (0.8, 0.1, 0.1), (0.9, 0.8, 0.1)]),
                    draw_seed(rng),
                )
            )
    return boxes


def _parked_cars(rng: np.random.Generator, side: float, cross: CrossStreet, ids: InstanceIds) -> list[Box]:
    """Parked cars in the outer lane of one side, off the cross street."""
    boxes: list[Box] = []
    positions = np.sort(rng.uniform(5, 140, size=rng.integers(2, 6)))
    for cx in [c for c in positions if _clear_of(cross, c - 3, c + 3)]:
        boxes += car(
            rng, x=cx, y=side * 5.4, heading_sign=1.0, speed=0.0, seed=draw_seed(rng), instance=ids(CAR_ID)
        )
    return boxes


def _sidewalk_pedestrians(rng: np.random.Generator, side: float, ids: InstanceIds) -> list[Box]:
    """Pedestrians on one sidewalk: some standing, some walking along it."""
    boxes: list[Box] = []
    for _ in range(rng.integers(2, 6)):
        px, py = rng.uniform(8, 40), side * (ROAD_HALF_WIDTH + rng.uniform(0.5, SIDEWALK_WIDTH - 0.5))
        walking = rng.random() < 0.6
        velocity = (
            np.array([rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 1.8), 0.0, 0.0]) if walking else np.zeros(3)
        )
        boxes += pedestrian(
            rng,
            x=px,
            y=py,
            ground=CURB_HEIGHT,
            hip=0.95,
            top=1.75,
            velocity=velocity,
            seed=draw_seed(rng),
            instance=ids(PERSON_ID),
        )
    return boxes


def _closing_facade(rng: np.random.Generator) -> Box:
    """A facade across the end of the street, closing the view."""
    return Box(
        np.array([STREET_END + 15, -60.0, 0.0]),
        np.array([STREET_END + 30, 60.0, 20.0]),
        BUILDING_ID,
        BUILDING,
        pick_color(rng, BUILDING_COLORS),
        draw_seed(rng),
    )


def _traffic(
    rng: np.random.Generator, cross: CrossStreet, ego_speed: float, t_annotated: float, ids: InstanceIds
) -> list[Box]:
    """Moving road users placed so that they are in view around the annotated frame (time
    ``t_annotated``): a car ahead in the ego lane, an oncoming car passing 15-30 m ahead, crossing cars on
    the cross street, pedestrians crossing the road, and more oncoming cars further on."""
    boxes: list[Box] = []
    ego_x_annotated = ego_speed * t_annotated
    boxes += car(
        rng,
        x=rng.uniform(35, 60),
        y=EGO_LANE_Y,
        heading_sign=1.0,
        speed=ego_speed * rng.uniform(0.5, 1.3),
        seed=draw_seed(rng),
        instance=ids(CAR_ID),
    )
    v_oncoming = rng.uniform(8, 13)
    boxes += car(
        rng,
        x=ego_x_annotated + rng.uniform(15, 30) + v_oncoming * t_annotated,
        y=-EGO_LANE_Y,
        heading_sign=-1.0,
        speed=v_oncoming,
        seed=draw_seed(rng),
        instance=ids(CAR_ID),
    )
    for lane_x, sign in ((cross[0] + 3.0, 1.0), (cross[1] - 3.0, -1.0)):
        if rng.random() < 0.75:
            v_cross = rng.uniform(7, 12)
            y_annotated = rng.uniform(-12, 12)
            boxes += car(
                rng,
                x=lane_x,
                y=y_annotated - sign * v_cross * t_annotated,
                heading_sign=sign,
                speed=v_cross,
                seed=draw_seed(rng),
                instance=ids(CAR_ID),
                along=1,
            )
    for _ in range(rng.integers(1, 3)):
        px, py = rng.uniform(22, 45), rng.uniform(-6.0, 6.0)
        velocity = np.array([0.0, rng.choice([-1.0, 1.0]) * rng.uniform(1.2, 1.8), 0.0])
        boxes += pedestrian(
            rng,
            x=px,
            y=py,
            ground=0.0,
            hip=0.85,
            top=1.7,
            velocity=velocity,
            seed=draw_seed(rng),
            instance=ids(PERSON_ID),
        )
    for _ in range(rng.integers(0, 3)):
        boxes += car(
            rng,
            x=rng.uniform(60, 140),
            y=-EGO_LANE_Y,
            heading_sign=-1.0,
            speed=rng.uniform(7, 13),
            seed=draw_seed(rng),
            instance=ids(CAR_ID),
        )
    return boxes


def _ego_trajectory(
    rng: np.random.Generator, num_frames: int, fps: float, ego_speed: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Timestamps (ns), speeds, yaw rates and poses (x, y, heading): speed with mild acceleration, yaw rate
    oscillating gently (lane keeping), integrated as an arc per frame interval."""
    t = np.arange(num_frames) / fps
    timestamps = np.rint(t * 1e9).astype(np.int64)
    speeds = ego_speed + rng.uniform(-0.8, 0.8) * t
    amp, phase = rng.uniform(0.03, 0.12), rng.uniform(0, 2 * np.pi)
    yaw_rates = amp * np.sin(phase + 2 * np.pi * t / 2.5)
    poses = np.zeros((num_frames, 3))
    poses[0] = (0.0, EGO_LANE_Y + rng.uniform(-0.2, 0.2), rng.uniform(-0.02, 0.02))
    for i in range(num_frames - 1):
        dt = (timestamps[i + 1] - timestamps[i]) * 1e-9
        disp, dpsi = vehicle_arc(speeds[i], yaw_rates[i], dt)
        x, y, psi = poses[i]
        dx, dy, _ = rot_z(psi) @ disp
        poses[i + 1] = (x + dx, y + dy, psi + dpsi)
    return timestamps, speeds, yaw_rates, poses


def _lighting(rng: np.random.Generator) -> Lighting:
    """Sun direction, ambient level, colour tint, exposure and sky colours of one sequence."""
    elev, azim = rng.uniform(0.3, 1.0), rng.uniform(0, 2 * np.pi)
    return Lighting(
        sun=np.array([np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev)]),
        ambient=rng.uniform(0.45, 0.6),
        sun_strength=rng.uniform(0.35, 0.6),
        tint=rng.uniform(0.92, 1.08, size=3),
        exposure=rng.uniform(0.9, 1.1),
        sky_zenith=np.array([0.35, 0.55, 0.85]) * rng.uniform(0.85, 1.1),
        sky_horizon=np.array([0.78, 0.84, 0.9]) * rng.uniform(0.9, 1.05),
    )


def make_scene(rng: np.random.Generator, num_frames: int, fps: float) -> Scene:
    """Draw one street, its objects, lighting and the ego trajectory."""
    ground_seed = draw_seed(rng)
    cross_start = rng.uniform(45.0, 70.0)  # a cross street with crossing traffic
    cross = (cross_start, cross_start + CROSS_WIDTH)
    boxes: list[Box] = []
    ids = InstanceIds()  # one id per object for the whole snippet
    for side in (-1.0, 1.0):
        boxes += _sidewalks(rng, side, cross)
        boxes += _facades_and_trees(rng, side, cross)
        boxes += _poles_and_signs(rng, side, cross)
        boxes += _parked_cars(rng, side, cross, ids)
        boxes += _sidewalk_pedestrians(rng, side, ids)
    boxes.append(_closing_facade(rng))
    ego_speed = rng.uniform(6.0, 11.0)
    boxes += _traffic(rng, cross, ego_speed, t_annotated=annotated_index(num_frames) / fps, ids=ids)
    timestamps, speeds, yaw_rates, poses = _ego_trajectory(rng, num_frames, fps, ego_speed)
    return Scene(boxes, _lighting(rng), timestamps, speeds, yaw_rates, poses, ground_seed, cross)


def camera_pose(scene: Scene, index: int, cam: CameraCalibration) -> tuple[np.ndarray, np.ndarray]:
    """Camera-to-world rotation and camera centre at frame ``index``."""
    R_vc, c_v = camera_to_vehicle(cam)
    x, y, psi = scene.poses[index]
    Rz = rot_z(psi)
    return Rz @ R_vc, np.array([x, y, 0.0]) + Rz @ c_v
