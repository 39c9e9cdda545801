"""What the synthetic street world is made of: dimensions, materials, Cityscapes label ids, the box and
scene types, and builders for cars and pedestrians. Everything is an axis-aligned box or the ground plane.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mtl_perception.data.cityscapes import label_id

ROAD_HALF_WIDTH = 7.0
SIDEWALK_WIDTH = 3.0
CURB_HEIGHT = 0.15
EGO_LANE_Y = -1.75
CROSS_WIDTH = 14.0

# materials (index into the shading tables)
GROUND, BUILDING, SIDEWALK, VEGETATION, POLE, SIGN, CAR, GLASS, PERSON, TRUNK = range(10)

ROAD, SIDEWALK_ID, BUILDING_ID, POLE_ID, SIGN_ID = (
    label_id(n) for n in ("road", "sidewalk", "building", "pole", "traffic sign")
)
VEGETATION_ID, TERRAIN_ID, SKY_ID, PERSON_ID, CAR_ID = (
    label_id(n) for n in ("vegetation", "terrain", "sky", "person", "car")
)


@dataclass
class Box:
    lo: np.ndarray
    hi: np.ndarray
    label: int
    material: int
    color: tuple[float, float, float]
    seed: int
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))
    instance: int = 0  # Cityscapes instance id (label id * 1000 + k) of the object it belongs to; 0 = none

    @property
    def moving(self) -> bool:
        return bool(np.any(self.velocity != 0))


@dataclass
class Lighting:
    sun: np.ndarray
    ambient: float
    sun_strength: float
    tint: np.ndarray
    exposure: float
    sky_zenith: np.ndarray
    sky_horizon: np.ndarray


@dataclass
class Scene:
    boxes: list[Box]
    lighting: Lighting
    timestamps_ns: np.ndarray
    speeds: np.ndarray
    yaw_rates: np.ndarray
    poses: np.ndarray  # (F, 3): x, y, heading of the vehicle in the world
    seed: int
    cross: tuple[float, float]  # x range of the cross street


class InstanceIds:
    """Cityscapes instance ids of one scene: label id * 1000 + k, k counting the scene's objects of that
    label from 0 (as cityscapesscripts' ``json2instanceImg`` counts an image's), drawn in build order."""

    def __init__(self) -> None:
        self._count: dict[int, int] = {}

    def __call__(self, label: int) -> int:
        k = self._count.get(label, 0)
        if k >= 1000:
            raise ValueError(f"more than 1000 objects of label {label} in one scene")
        self._count[label] = k + 1
        return label * 1000 + k


def draw_seed(rng: np.random.Generator) -> int:
    """A texture seed for one surface."""
    return int(rng.integers(1, 2**31))


def pick_color(rng: np.random.Generator, colors) -> tuple[float, float, float]:
    """One of ``colors``, brightness jittered by +-15 %."""
    c = np.asarray(colors[rng.integers(len(colors))], np.float64)
    return tuple(np.clip(c * rng.uniform(0.85, 1.15), 0, 1))


BUILDING_COLORS = [
    (0.72, 0.66, 0.55),
    (0.6, 0.6, 0.62),
    (0.65, 0.42, 0.33),
    (0.8, 0.76, 0.68),
    (0.5, 0.52, 0.5),
]
CAR_COLORS = [
    (0.7, 0.1, 0.1),
    (0.15, 0.2, 0.55),
    (0.85, 0.85, 0.85),
    (0.1, 0.1, 0.1),
    (0.45, 0.47, 0.5),
    (0.2, 0.4, 0.25),
]
CLOTH_COLORS = [(0.2, 0.2, 0.5), (0.6, 0.15, 0.15), (0.15, 0.15, 0.15), (0.7, 0.6, 0.3), (0.3, 0.5, 0.3)]


def car(
    rng: np.random.Generator,
    *,
    x: float,
    y: float,
    heading_sign: float,
    speed: float,
    seed: int,
    instance: int,
    along: int = 0,
) -> list[Box]:
    """A car (body, glass cabin, dark wheel box) driving along world axis ``along`` (0 = x, 1 = y); all three
    boxes carry the car's ``instance`` id."""
    length, width = rng.uniform(3.9, 4.8), rng.uniform(1.7, 1.9)
    color = pick_color(rng, CAR_COLORS)
    vel = np.zeros(3)
    vel[along] = heading_sign * speed
    centre = np.array([x, y])

    def box(a0, a1, w_inset, z0, z1, material, col, s) -> Box:
        lo, hi = np.zeros(3), np.zeros(3)
        lo[along], hi[along] = (
            centre[along] - length / 2 + a0 * length,
            centre[along] - length / 2 + a1 * length,
        )
        lo[1 - along], hi[1 - along] = (
            centre[1 - along] - width / 2 + w_inset,
            centre[1 - along] + width / 2 - w_inset,
        )
        lo[2], hi[2] = z0, z1
        return Box(lo, hi, CAR_ID, material, col, s, vel.copy(), instance)

    cab = 0.25 if heading_sign > 0 else 0.2
    return [
        box(0.0, 1.0, 0.0, 0.25, 0.95, CAR, color, seed),
        box(cab, cab + 0.5, 0.1, 0.95, 1.45, GLASS, (0.25, 0.28, 0.33), seed + 1),
        box(0.07, 0.93, 0.05, 0.0, 0.25, CAR, (0.08, 0.08, 0.08), seed + 2),
    ]


def pedestrian(
    rng: np.random.Generator,
    *,
    x: float,
    y: float,
    ground: float,
    hip: float,
    top: float,
    velocity: np.ndarray,
    seed: int,
    instance: int,
) -> list[Box]:
    """A pedestrian: legs from ``ground`` to ``hip`` and a narrower torso up to ``top`` (metres), both boxes
    carrying its ``instance`` id."""
    return [
        Box(
            np.array([x - 0.2, y - 0.25, ground]),
            np.array([x + 0.2, y + 0.25, hip]),
            PERSON_ID,
            PERSON,
            pick_color(rng, CLOTH_COLORS),
            seed,
            velocity.copy(),
            instance,
        ),
        Box(
            np.array([x - 0.17, y - 0.25, hip]),
            np.array([x + 0.17, y + 0.25, top]),
            PERSON_ID,
            PERSON,
            pick_color(rng, CLOTH_COLORS),
            seed + 1,
            velocity.copy(),
            instance,
        ),
    ]
