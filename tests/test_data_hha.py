"""HHA on a ray-cast scene whose geometry is known: floor, a box on it and a back wall."""
import cv2
import numpy as np
import pytest

from segkit.data.hha import ANGLE_OFFSET, depth_to_hha, depth_to_points, estimate_gravity, surface_normals

CAMERA = (120.0, 120.0, 79.5, 59.5)  # fx, fy, cx, cy of a 160 x 120 image
CAMERA_HEIGHT = 1.5                 # metres above the floor
BOX = ((-0.4, 0.4), (1.8, 2.8), (0.0, 0.5))  # right, forward, height (m) in a gravity-aligned frame
WALL = 4.0                          # metres ahead, vertical


def scene(pitch_deg=20.0, h=120, w=160):
    """Depth (m), the true up vector in camera coordinates, surface ids and true heights (cm)."""
    p = np.radians(pitch_deg)
    right, fwd, up = np.array([1.0, 0, 0]), np.array([0, -np.sin(p), np.cos(p)]), np.array([0, -np.cos(p), -np.sin(p)])
    fx, fy, cx, cy = CAMERA
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    d = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], -1)  # z = 1: t is the depth
    da, db, dc = d @ right, d @ fwd, d @ up
    inf = np.full((h, w), np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(dc < 0, -CAMERA_HEIGHT / dc, inf)
        t_wall = np.where(db > 0, WALL / db, inf)
        # Box: slab intersection in (right, forward, height above the floor) coordinates.
        origin = np.array([0.0, 0.0, CAMERA_HEIGHT])
        dirs = [da, db, dc]
        t0, t1 = np.zeros((h, w)), inf.copy()
        for k, (lo, hi) in enumerate(BOX):
            a, b = (lo - origin[k]) / dirs[k], (hi - origin[k]) / dirs[k]
            t0, t1 = np.maximum(t0, np.minimum(a, b)), np.minimum(t1, np.maximum(a, b))
        t_box = np.where((t1 >= t0) & (t0 > 0), t0, inf)
    ts = np.stack([t_floor, t_wall, t_box])
    surface = ts.argmin(0)  # 0 floor, 1 wall, 2 box
    depth = ts.min(0)
    height_cm = 100 * (depth * dc + CAMERA_HEIGHT)
    box_top = (surface == 2) & (np.abs(height_cm - 50) < 1e-6)
    return depth, up, surface, box_top, height_cm


def interior(mask, margin=5):
    return cv2.erode(mask.astype(np.uint8), np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)) > 0


def test_scene_is_what_the_test_thinks():
    depth, up, surface, box_top, height = scene()
    assert np.isfinite(depth).all()
    for s in (0, 1, 2):
        assert interior(surface == s).sum() > 20, s
    assert interior(box_top, 4).sum() > 20
    assert np.abs(height[surface == 0]).max() < 1e-6


def test_normals_of_planes():
    depth, up, surface, box_top, _ = scene()
    n, ok = surface_normals(depth_to_points(depth, CAMERA), depth > 0)
    floor = interior(surface == 0)
    np.testing.assert_allclose(n[floor] @ up, 1.0, atol=1e-6)  # facing up (towards the camera above it)
    wall = interior(surface == 1)
    np.testing.assert_allclose(n[wall] @ up, 0.0, atol=1e-6)
    assert ok[floor].all()


@pytest.mark.parametrize("pitch", [0.0, 20.0, 35.0])
def test_gravity_estimate_recovers_the_tilt(pitch):
    depth, up, *_ = scene(pitch)
    n, ok = surface_normals(depth_to_points(depth, CAMERA), depth > 0)
    est = estimate_gravity(n, ok)
    assert np.degrees(np.arccos(np.clip(est @ up, -1, 1))) < 0.5


def test_hha_channels_on_known_surfaces():
    depth, up, surface, box_top, height = scene(25.0)
    hha = depth_to_hha(depth, CAMERA)
    assert hha.dtype == np.uint8 and hha.shape == depth.shape + (3,)
    # Disparity: 31000 / depth in cm, saturating.
    np.testing.assert_array_equal(hha[..., 0], np.clip(np.round(310.0 / depth), 0, 255))
    floor, wall, top = interior(surface == 0), interior(surface == 1), interior(box_top, 4)
    # Height above the lowest points (the floor), in cm.
    assert np.abs(hha[floor, 1].astype(int) - 0).max() <= 1
    assert np.abs(hha[top, 1].astype(int) - 50).max() <= 1
    np.testing.assert_allclose(hha[wall, 1], np.clip(np.round(height[wall]), 0, 255), atol=1)
    # Angle with gravity: horizontal surfaces 0 deg -> 38, vertical 90 deg -> 128.
    assert np.abs(hha[floor, 2].astype(int) - round(ANGLE_OFFSET)).max() <= 1
    assert np.abs(hha[top, 2].astype(int) - round(ANGLE_OFFSET)).max() <= 1
    assert np.abs(hha[wall, 2].astype(int) - 128).max() <= 1


def test_missing_depth_is_zero_and_does_not_disturb_the_rest():
    depth, up, surface, *_ = scene()
    holed = depth.copy()
    holed[5:9, 10:14] = 0
    holed[0, 0] = np.nan
    hha = depth_to_hha(holed, CAMERA)
    assert (hha[5:9, 10:14] == 0).all() and (hha[0, 0] == 0).all()
    ref = depth_to_hha(depth, CAMERA)
    floor = interior(surface == 0)
    assert np.abs(hha[floor].astype(int) - ref[floor].astype(int)).max() <= 1
    assert (depth_to_hha(np.zeros((4, 5)), CAMERA) == 0).all()
