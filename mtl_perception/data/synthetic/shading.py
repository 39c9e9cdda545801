"""Shading of a ray-cast frame into the image and its ground truth. Surfaces are textured with value noise
in surface coordinates (object-local for moving objects), so every surface point keeps its appearance over
time and optical flow is well posed; then painted details (lane markings, window panes, sidewalk tiles),
Lambert shading with face normals, and a sky gradient with clouds fixed in direction (at infinity)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtl_perception.data.cityscapes import CameraCalibration

from .noise import fractal_noise, lattice_hash, line_coverage
from .raycast import GROUND_SURFACE, RayHits
from .world import BUILDING, PERSON, ROAD, ROAD_HALF_WIDTH, SIDEWALK, SKY_ID, TERRAIN_ID, Lighting, Scene

# texture contrast per material, indexed like world.GROUND ... world.TRUNK
_CONTRAST = np.array([1.8, 0.35, 0.45, 1.1, 0.4, 0.4, 0.3, 0.5, 0.5, 0.8], np.float32)


@dataclass
class RenderedFrame:
    image: np.ndarray  # HxWx3 uint8 RGB
    depth: np.ndarray  # HxW float32 metres (0 = sky)
    label_ids: np.ndarray  # HxW uint8, official Cityscapes ids
    motion: np.ndarray  # HxW uint8, 0 static / 255 moving
    instance_ids: np.ndarray  # HxW uint16, Cityscapes instanceIds: label * 1000 + k on objects, else label id


@dataclass
class SurfaceTables:
    """Per-surface properties, index 0 = ground, k + 1 = box k (at this frame's position)."""

    corner: np.ndarray  # (N,3) float32 low corner: origin of the object-local texture coordinates
    color: np.ndarray  # (N,3) float32
    material: np.ndarray  # (N,) int32
    label: np.ndarray  # (N,) uint8 Cityscapes id
    seed: np.ndarray  # (N,) uint32 texture seed
    moving: np.ndarray  # (N,) bool
    instance: np.ndarray  # (N,) uint16 Cityscapes instance id, 0 = not part of an object


@dataclass
class SurfacePoints:
    """Where each pixel's ray hit (sky pixels carry ground placeholders, masked out by ``hit``)."""

    hit: np.ndarray  # (H,W) bool: not sky
    surface: np.ndarray  # (H,W) surface index (0 on sky)
    depth: np.ndarray  # (H,W) float32 hit depth (0 on sky)
    world: np.ndarray  # (3,H,W) float32 hit point
    local: np.ndarray  # (3,H,W) hit point relative to the surface's corner (world point on the ground)
    face_axis: np.ndarray  # (H,W) int64 world axis of the face normal (2 on the ground)
    s: np.ndarray  # (H,W) texture coordinates on the face (metres)
    t: np.ndarray
    ray_length: np.ndarray  # (H,W) |direction| (directions have unit camera z)
    footprint: np.ndarray  # (H,W) float32 size of the pixel on the surface (metres)


def _surface_tables(scene: Scene, box_offsets: list[np.ndarray]) -> SurfaceTables:
    count = len(scene.boxes) + 1
    tables = SurfaceTables(
        corner=np.zeros((count, 3), np.float32),
        color=np.zeros((count, 3), np.float32),
        material=np.zeros(count, np.int32),
        label=np.zeros(count, np.uint8),
        seed=np.zeros(count, np.uint32),
        moving=np.zeros(count, bool),
        instance=np.zeros(count, np.uint16),
    )
    tables.seed[0] = scene.seed % 2**32
    for k, box in enumerate(scene.boxes, start=1):
        tables.corner[k] = box.lo + box_offsets[k - 1]
        tables.color[k], tables.material[k], tables.label[k] = box.color, box.material, box.label
        tables.seed[k], tables.moving[k] = box.seed % 2**32, box.moving
        tables.instance[k] = box.instance
    return tables


def _surface_points(hits: RayHits, tables: SurfaceTables, cam: CameraCalibration) -> SurfacePoints:
    d = hits.directions
    hit = hits.surface >= 0
    surface = np.where(hit, hits.surface, 0)
    depth = np.where(hit, hits.hit_depth, 0.0).astype(np.float32)
    world = hits.origin.astype(np.float32)[:, None, None] + d * depth
    local = world - np.moveaxis(tables.corner[surface], -1, 0)
    local = np.where(surface[None] == GROUND_SURFACE, world, local)
    axis = hits.face_axis.astype(np.int64)
    axis = np.where(surface == GROUND_SURFACE, 2, axis)
    # the two coordinates spanning the face: (x or y) and (z, or y on horizontal faces)
    s = np.where(axis == 0, local[1], local[0])
    t = np.where(axis == 2, local[1], local[2])
    ray_length = np.sqrt((d * d).sum(0))
    cos = np.abs(np.take_along_axis(d, axis[None], 0)[0]) / ray_length
    footprint = (depth / np.float32(cam.fx)) * ray_length / np.maximum(cos, 0.05)  # metres per pixel
    footprint = np.maximum(footprint, 1e-4).astype(np.float32)
    return SurfacePoints(hit, surface, depth, world, local, axis, s, t, ray_length, footprint)


def _ground_split(scene: Scene, points: SurfacePoints) -> tuple[np.ndarray, np.ndarray]:
    """Ground pixels, and those of them on the road (main street or cross street)."""
    world = points.world
    is_ground = points.surface == GROUND_SURFACE
    on_road = (np.abs(world[1]) < ROAD_HALF_WIDTH) | (
        (world[0] > scene.cross[0]) & (world[0] < scene.cross[1])
    )
    return is_ground, is_ground & on_road


def _semantic_labels(tables: SurfaceTables, points: SurfacePoints, is_ground, road) -> np.ndarray:
    """Cityscapes ids: the surface's label; the ground is road or terrain (sidewalks are boxes)."""
    label = tables.label[points.surface].copy()
    label[is_ground] = TERRAIN_ID
    label[road] = ROAD
    return np.where(points.hit, label, SKY_ID).astype(np.uint8)


def _textured_albedo(tables: SurfaceTables, points: SurfacePoints, is_ground, road, noise) -> np.ndarray:
    """Surface colour (terrain and asphalt on the ground) modulated by the material's noise contrast."""
    albedo = tables.color[points.surface].copy()
    albedo[is_ground & ~road] = (0.36, 0.42, 0.22)
    albedo[road] = (0.34, 0.34, 0.36)
    contrast = _CONTRAST[tables.material[points.surface]]
    albedo *= np.clip(1.0 + contrast * (noise - 0.5) * 2.0, 0.15, None)[..., None]
    return albedo


def _paint_lane_markings(scene: Scene, points: SurfacePoints, road, albedo: np.ndarray) -> np.ndarray:
    """Solid edge lines at |y| = 3.5 m and a dashed centre line at y = 0 on the main street."""
    x, y, footprint = points.world[0], points.world[1], points.footprint
    dash = line_coverage(np.mod(x - 1.5 + 4.5, 9.0) - 4.5, 1.5, footprint)
    mark = np.maximum(
        line_coverage(np.abs(y) - 3.5, 0.07, footprint), line_coverage(y, 0.07, footprint) * dash
    )
    on_main = (x < scene.cross[0]) | (x > scene.cross[1])
    mark = np.where(road & on_main, mark, 0.0)[..., None]
    return albedo * (1 - mark) + 0.85 * mark


def _paint_windows(points: SurfacePoints, material, seed, noise, albedo: np.ndarray) -> np.ndarray:
    """Window panes on building facades above 1.5 m, each pane with its own brightness."""
    s, t = points.s, points.t
    facade = (material == BUILDING) & (points.face_axis != 2) & (t > 1.5)
    fs, ft = np.mod(s / 3.0, 1.0), np.mod(t / 3.2, 1.0)
    window = facade & (fs > 0.25) & (fs < 0.75) & (ft > 0.3) & (ft < 0.8)
    pane = lattice_hash(np.floor(s / 3.0), np.floor(t / 3.2), seed + np.uint32(17))
    glass = (
        np.array([0.12, 0.15, 0.2], np.float32)
        * (0.6 + 0.9 * pane)[..., None]
        * (0.8 + 0.4 * noise)[..., None]
    )
    return np.where(window[..., None], glass, albedo)


def _paint_sidewalk_tiles(points: SurfacePoints, material, seed, is_ground, albedo: np.ndarray) -> np.ndarray:
    """0.6 m tiles of varying brightness on the sidewalk tops, faded out below ~2 px per tile."""
    tiles = lattice_hash(np.floor(points.s / 0.6), np.floor(points.t / 0.6), seed)
    tile_weight = np.clip(0.6 / points.footprint / 2.0 - 1.0, 0.0, 1.0)
    sidewalk_top = (material == SIDEWALK) & (points.face_axis == 2) & ~is_ground
    return np.where(
        sidewalk_top[..., None],
        albedo * (0.85 + 0.3 * (0.5 + tile_weight * (tiles - 0.5)))[..., None],
        albedo,
    )


def _darken_legs(points: SurfacePoints, material, albedo: np.ndarray) -> np.ndarray:
    return np.where(((material == PERSON) & (points.local[2] < 0.8))[..., None], albedo * 0.6, albedo)


def _sunlit(
    lighting: Lighting, directions: np.ndarray, points: SurfacePoints, is_ground, albedo
) -> np.ndarray:
    """Lambert shading with face normals (facing the camera), tint and exposure."""
    normal_sign = -np.sign(np.take_along_axis(directions, points.face_axis[None], 0)[0])
    normal_sign = np.where(is_ground, 1.0, normal_sign)
    sun_dot = np.clip(normal_sign * lighting.sun.astype(np.float32)[points.face_axis], 0.0, None)
    shade = lighting.ambient + lighting.sun_strength * sun_dot
    return albedo * shade[..., None] * (lighting.tint * lighting.exposure).astype(np.float32)


def _sky(lighting: Lighting, directions: np.ndarray, ray_length, cam: CameraCalibration, seed) -> np.ndarray:
    """Horizon-to-zenith gradient with clouds that depend on the direction only (at infinity)."""
    dn = directions / ray_length
    elev = np.arcsin(np.clip(dn[2], -1, 1))
    az = np.arctan2(dn[1], dn[0])
    wsky = np.clip(elev / 0.6, 0, 1)[..., None]
    sky = lighting.sky_horizon * (1 - wsky) + lighting.sky_zenith * wsky
    pixel_angle = np.float32(1.0 / cam.fx)
    clouds = fractal_noise(
        az * 8.0,
        elev * 8.0,
        np.full(elev.shape, seed, np.uint32),
        np.full(elev.shape, pixel_angle * 8.0, np.float32),
        wavelengths=(1.0, 0.3, 0.1),
        amplitudes=(0.5, 0.3, 0.2),
    )
    return sky * (1 - 0.3 * wsky) + (0.3 * wsky) * (0.7 + 0.5 * clouds)[..., None]


def shade(scene: Scene, cam: CameraCalibration, hits: RayHits) -> RenderedFrame:
    """Image, depth, Cityscapes label ids and motion mask of a ray-cast frame."""
    tables = _surface_tables(scene, hits.box_offsets)
    points = _surface_points(hits, tables, cam)
    material, seed = tables.material[points.surface], tables.seed[points.surface]
    noise = fractal_noise(points.s, points.t, seed, points.footprint)
    is_ground, road = _ground_split(scene, points)
    label = _semantic_labels(tables, points, is_ground, road)

    albedo = _textured_albedo(tables, points, is_ground, road, noise)
    albedo = _paint_lane_markings(scene, points, road, albedo)
    albedo = _paint_windows(points, material, seed, noise, albedo)
    albedo = _paint_sidewalk_tiles(points, material, seed, is_ground, albedo)
    albedo = _darken_legs(points, material, albedo)
    rgb = _sunlit(scene.lighting, hits.directions, points, is_ground, albedo)
    sky = _sky(scene.lighting, hits.directions, points.ray_length, cam, tables.seed[0] + 99)
    rgb = np.where(points.hit[..., None], rgb, sky * scene.lighting.exposure)
    image = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)

    motion = np.where(points.hit & tables.moving[points.surface], 255, 0).astype(np.uint8)
    depth = np.where(points.hit, hits.hit_depth, 0.0).astype(np.float32)
    instance = tables.instance[points.surface]
    instance_ids = np.where(points.hit & (instance > 0), instance, label).astype(np.uint16)
    return RenderedFrame(image, depth, label, motion, instance_ids)
