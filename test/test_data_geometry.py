"""Cityscapes coordinate systems and ego-motion (mtl_perception.data.geometry) against independent oracles:
the camera transform Cityscapes publishes for its own calibration and cityscapesscripts'
box3dImageTransform (projection V -> I), a numerical integration of the vehicle's motion (scipy), and the
synthetic generator's exact geometry (its world poses and rendered depth)."""

from __future__ import annotations

import numpy as np
import pytest
from cityscapesscripts.helpers.box3dImageTransform import CRS_S, CRS_V, Box3dImageTransform, Camera
from pyquaternion import Quaternion
from scipy.integrate import solve_ivp

from mtl_perception.data import geometry
from mtl_perception.data.cityscapes import CameraCalibration
from mtl_perception.data.geometry import backproject, camera_motion, camera_to_vehicle, ego_motion, project

# aachen's camera.json as Cityscapes publishes it, and the sensor transform (V -> C, ISO 8855 axes) that
# Cityscapes 3D's annotation files give for the same camera (gtBbox3d "sensor": "sensor_T_ISO_8855")
AACHEN = CameraCalibration(
    fx=2262.52, fy=2265.3017905988554, u0=1096.98, v0=513.137, baseline=0.209313,
    pitch=0.038, roll=0.0, yaw=-0.0195, x=1.7, y=0.1, z=1.22,
)  # fmt: skip
SENSOR_T_ISO_8855 = np.array(
    [
        [0.9990881051503779, -0.01948468779721943, -0.03799085532693703, -1.6501524664770573],
        [0.019498764210995674, 0.9998098810245096, 0.0, -0.1331288872611436],
        [0.03798363254444427, -0.0007407747301939942, 0.9992780868764849, -1.2836173638418473],
    ]
)


def _oracle_camera() -> Camera:
    cam = AACHEN
    return Camera(fx=cam.fx, fy=cam.fy, u0=cam.u0, v0=cam.v0, sensor_T_ISO_8855=SENSOR_T_ISO_8855.tolist())


def _ours_v_to_pixels(points_v: np.ndarray, cam: CameraCalibration) -> np.ndarray:
    R, c = camera_to_vehicle(cam)
    u, v = project(R.T @ (points_v.T - c[:, None]), cam.K)
    return np.stack([u, v], -1)


def test_extrinsic_matches_the_published_sensor_transform():
    R, c = camera_to_vehicle(AACHEN)  # S -> V
    R_cv = R @ geometry.OPTICAL_TO_VEHICLE.T  # C -> V (ISO 8855 axes at the camera)
    np.testing.assert_allclose(R_cv.T, SENSOR_T_ISO_8855[:, :3], atol=1e-12)
    np.testing.assert_allclose(-R_cv.T @ c, SENSOR_T_ISO_8855[:, 3], atol=1e-12)


@pytest.mark.parametrize("yaw", [0.0, 0.3, -1.2])
def test_projection_matches_box3d_image_transform(yaw):
    """Corners of boxes in the vehicle frame, projected by cityscapesscripts and by us."""
    box = Box3dImageTransform(_oracle_camera())
    box.initialize_box(
        [4.3, 1.8, 1.5], Quaternion(axis=[0, 0, 1], angle=yaw).elements, [14.0, -2.5, 0.75], CRS_V
    )
    corners_v = np.array(list(box.get_vertices(CRS_V).values()))
    oracle = np.array(list(box.get_vertices_2d().values()))
    np.testing.assert_allclose(_ours_v_to_pixels(corners_v, AACHEN), oracle, atol=1e-6)
    # and in the optical frame S
    R, c = camera_to_vehicle(AACHEN)
    np.testing.assert_allclose(
        (R.T @ (corners_v.T - c[:, None])).T, list(box.get_vertices(CRS_S).values()), atol=1e-9
    )


def test_ego_motion_integrates_the_vehicle_model():
    """The composed arcs equal a numerical integration of x' = v cos psi, y' = v sin psi, psi' = yaw rate
    with speed and yaw rate held per interval (each frame's values until the next timestamp)."""
    speeds, yaw_rates = [8.0, 9.5, 4.0], [0.25, -0.4, 0.9]
    timestamps = [0, 58_823_529, 117_647_059, 190_000_000]
    state = np.zeros(3)
    for i, (v, w) in enumerate(zip(speeds, yaw_rates, strict=True)):
        t0, t1 = timestamps[i] * 1e-9, timestamps[i + 1] * 1e-9

        def unicycle(t, s, v=v, w=w):
            return [v * np.cos(s[2]), v * np.sin(s[2]), w]

        run = solve_ivp(unicycle, (t0, t1), state, rtol=1e-12, atol=1e-12)
        state = run.y[:, -1]
    R_v, p_v = ego_motion(speeds, yaw_rates, timestamps)
    np.testing.assert_allclose(p_v, [state[0], state[1], 0.0], atol=1e-9)
    np.testing.assert_allclose(R_v, geometry.rot_z(state[2]), atol=1e-12)
    with pytest.raises(ValueError, match="timestamps must increase"):
        ego_motion([1.0], [0.0], [5, 5])
    with pytest.raises(ValueError, match="one speed and yaw rate per interval"):
        ego_motion([1.0, 2.0], [0.0], [0, 1, 2])


def test_rigid_flow_matches_the_vehicle_moving_a_static_box():
    """A static box seen from two vehicle poses, both projected by cityscapesscripts: the box moves in the
    earlier vehicle frame by the inverse of the vehicle's motion. Our rigid flow of its corners, from their
    depth in the later frame, lands on the oracle's earlier pixels. The camera sits 1.7 m ahead of the axle:
    rotating about the camera instead of the vehicle origin misses by pixels in a turn."""
    oracle = _oracle_camera()
    R_v, p_v = ego_motion([9.0, 9.0], [0.35, 0.35], [0, 58_823_529, 117_647_059])  # a turn, 2 frames
    later = Box3dImageTransform(oracle)
    later.initialize_box(
        [4.0, 1.8, 1.5], Quaternion(axis=[0, 0, 1], angle=0.4).elements, [9.0, 3.0, 0.75], CRS_V
    )
    corners_later = np.array(list(later.get_vertices(CRS_V).values()))
    earlier = Box3dImageTransform(oracle)
    dpsi = np.arctan2(R_v[1, 0], R_v[0, 0])
    earlier.initialize_box(
        [4.0, 1.8, 1.5],
        Quaternion(axis=[0, 0, 1], angle=0.4 + dpsi).elements,
        R_v @ np.array([9.0, 3.0, 0.75]) + p_v,
        CRS_V,
    )
    # the same corners in the earlier vehicle frame, as the oracle placed them
    np.testing.assert_allclose(
        np.array(list(earlier.get_vertices(CRS_V).values())), (R_v @ corners_later.T).T + p_v, atol=1e-9
    )
    px_later = np.array(list(later.get_vertices_2d().values()))
    px_earlier = np.array(list(earlier.get_vertices_2d().values()))
    depth = np.array(list(later.get_vertices(CRS_S).values()))[:, 2]

    R, t = camera_motion(AACHEN, R_v, p_v)
    moved = R @ backproject(px_later[:, 0], px_later[:, 1], depth, AACHEN.K) + t[:, None]
    ours = np.stack(project(moved, AACHEN.K), -1)
    np.testing.assert_allclose(ours, px_earlier, atol=1e-6)
    R_vs, _ = camera_to_vehicle(AACHEN)
    about_camera = R_vs.T @ R_v @ R_vs @ backproject(px_later[:, 0], px_later[:, 1], depth, AACHEN.K)
    about_camera += (R_vs.T @ p_v)[:, None]
    assert np.abs(np.stack(project(about_camera, AACHEN.K), -1) - px_earlier).max() > 20


def test_rigid_flow_matches_the_generators_exact_geometry():
    """From the generator's scene: the rigid flow of frame 19 towards frame 17, computed the tool's way
    (vehicle.json speeds and yaw rates, timestamps, camera extrinsic), equals the projection of the rendered
    points through the generator's own world poses of the two cameras."""
    from mtl_perception.data.synthetic import cityscapes_like_camera, make_scene, render_frame
    from mtl_perception.data.synthetic.street import camera_pose

    h, w = 64, 128
    scene = make_scene(np.random.default_rng(5), 20, 17.0)
    cam = cityscapes_like_camera(h, w)
    frame = render_frame(scene, 19, cam, h, w)
    R_v, p_v = ego_motion(scene.speeds[17:19], scene.yaw_rates[17:19], scene.timestamps_ns[17:20])
    R, t = camera_motion(cam, R_v, p_v)
    ours = geometry.rigid_flow_from_depth(frame.depth, cam.K, R, t)

    R19, c19 = camera_pose(scene, 19, cam)  # camera -> world rotation, centre
    R17, c17 = camera_pose(scene, 17, cam)
    u, v = np.meshgrid(np.arange(w, dtype=float), np.arange(h, dtype=float))
    world = R19 @ backproject(u.ravel(), v.ravel(), frame.depth.ravel(), cam.K) + c19[:, None]
    u17, v17 = project(R17.T @ (world - c17[:, None]), cam.K)
    exact = np.stack([u17 - u.ravel(), v17 - v.ravel()], -1).reshape(h, w, 2)
    static = (frame.depth > 0) & (frame.motion == 0)
    assert static.mean() > 0.5
    np.testing.assert_allclose(ours[static], exact[static], atol=1e-4)
