"""HHA encoding of a depth image (Gupta, Girshick, Arbelaez, Malik, ECCV 2014, sec. 3.1).

Three channels per pixel, each a geocentric quantity that a network pretrained on
RGB can take as an image:

* **H**orizontal disparity: ``DISPARITY_SCALE / depth`` (depth in cm), saturating at 255;
* **H**eight above ground: height of the point above the lowest points of the
  scene along the estimated gravity direction, in cm, clipped to [0, 255];
* **A**ngle with gravity: angle in degrees between the surface normal and the
  "up" direction, offset so that vertical surfaces (90 deg) read 128.

The gravity direction is estimated from the surface normals as in Gupta et al.
(CVPR 2013, sec. 3.1), which ECCV 2014 reuses: starting from the camera's "up"
axis, collect the normals nearly parallel to the current estimate (floors, table
tops, ceilings: angle < d or > 180 - d) and those nearly perpendicular to it
(walls: |angle - 90| < d); the new estimate is the direction most aligned with
the first set and most orthogonal to the second, i.e. the eigenvector with the
smallest eigenvalue of ``sum n n^T (perpendicular) - sum n n^T (parallel)``. The
threshold ``d`` shrinks from 45 to 15 degrees over the iterations.

Everything here is NumPy/OpenCV on one image; :func:`depth_to_hha` is the entry point.
Camera coordinates: x right, y down, z forward (the image's axes), metres.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = [
    "CameraIntrinsics", "NYU_INTRINSICS", "DISPARITY_SCALE", "ANGLE_OFFSET", "depth_to_points", "surface_normals",
    "estimate_gravity", "depth_to_hha",
]

# HHA channel 1 = DISPARITY_SCALE / depth in cm (Gupta et al.'s encoding: 1 m -> 310, saturating).
DISPARITY_SCALE = 31000.0
# HHA channel 3 = angle in degrees + ANGLE_OFFSET, so that vertical surfaces (90 deg) read 128.
ANGLE_OFFSET = 128.0 - 90.0


class CameraIntrinsics(tuple):
    """``(fx, fy, cx, cy)`` in pixels, for the image the depth map is aligned with."""

    def __new__(cls, fx: float, fy: float, cx: float, cy: float) -> "CameraIntrinsics":
        if fx <= 0 or fy <= 0:
            raise ValueError(f"Camera focal lengths must be positive, got fx={fx}, fy={fy}.")
        return super().__new__(cls, (float(fx), float(fy), float(cx), float(cy)))

    fx = property(lambda self: self[0])
    fy = property(lambda self: self[1])
    cx = property(lambda self: self[2])
    cy = property(lambda self: self[3])


# The Kinect RGB camera of NYU Depth v2 (the NYU toolbox's camera_params.m), 640x480 frames.
NYU_INTRINSICS = CameraIntrinsics(518.8579, 519.4696, 325.5824, 253.7362)


def depth_to_points(depth_m: np.ndarray, camera: Sequence[float]) -> np.ndarray:
    """Back-project a depth map.

    Args:
        depth_m: ``(H, W)`` depth along the optical axis in metres (0 = missing).
        camera: ``(fx, fy, cx, cy)``.

    Returns:
        ``(H, W, 3)`` float64 points ``(x, y, z)`` in camera coordinates (zeros where depth is missing).
    """
    fx, fy, cx, cy = (float(v) for v in camera)
    h, w = depth_m.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    z = depth_m.astype(np.float64)
    return np.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], axis=-1)


def surface_normals(points: np.ndarray, valid: np.ndarray, window: int = 7) -> Tuple[np.ndarray, np.ndarray]:
    """Unit normals by a least-squares plane through the valid points of a ``window`` x ``window`` patch.

    The normal is the eigenvector of the smallest eigenvalue of the patch's 3x3
    covariance, oriented towards the camera (``n . p < 0``).

    Args:
        points: ``(H, W, 3)`` camera-space points.
        valid: ``(H, W)`` bool, pixels with a measured depth.
        window: side of the square patch in pixels (odd).

    Returns:
        ``(normals (H, W, 3), ok (H, W) bool)``; ``ok`` is False where fewer than 3
        valid points fall in the patch or the pixel itself is invalid.
    """
    m = valid.astype(np.float64)
    ksize = (int(window), int(window))

    def box(a: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(a, cv2.CV_64F, ksize, normalize=False, borderType=cv2.BORDER_CONSTANT)

    count = box(m)
    p = points * m[..., None]
    mean = np.stack([box(p[..., i]) for i in range(3)], -1) / np.maximum(count, 1)[..., None]
    cov = np.empty(points.shape[:2] + (3, 3))
    for i in range(3):
        for j in range(i, 3):
            c = box(p[..., i] * points[..., j]) / np.maximum(count, 1) - mean[..., i] * mean[..., j]
            cov[..., i, j] = cov[..., j, i] = c
    _, vecs = np.linalg.eigh(cov)
    normals = vecs[..., :, 0]  # eigh sorts eigenvalues ascending
    facing_away = np.einsum("hwc,hwc->hw", normals, points) > 0
    normals[facing_away] *= -1
    ok = valid & (count >= 3)
    normals[~ok] = 0
    return normals, ok


def estimate_gravity(normals: np.ndarray, ok: np.ndarray, thresholds: Sequence[float] = (45, 45, 15, 15, 15),
                     initial: Sequence[float] = (0.0, -1.0, 0.0)) -> np.ndarray:
    """The "up" direction (opposite to gravity) in camera coordinates, a unit 3-vector.

    Args:
        normals: ``(H, W, 3)`` unit normals.
        ok: ``(H, W)`` pixels whose normal is usable.
        thresholds: angle ``d`` in degrees of each iteration (Gupta et al. 2013: 45, then 15).
        initial: starting estimate (the camera's up axis: image y points down).
    """
    n = normals[ok].reshape(-1, 3)
    up = np.asarray(initial, dtype=np.float64)
    up /= np.linalg.norm(up)
    for d in thresholds:
        cos = np.clip(n @ up, -1.0, 1.0)
        angle = np.degrees(np.arccos(cos))
        parallel = n[(angle < d) | (angle > 180.0 - d)]
        perpendicular = n[np.abs(angle - 90.0) < d]
        if len(parallel) + len(perpendicular) == 0:
            break
        scatter = perpendicular.T @ perpendicular - parallel.T @ parallel
        _, vecs = np.linalg.eigh(scatter)
        new = vecs[:, 0]
        up = new if new @ up >= 0 else -new
    return up


def depth_to_hha(depth_m: np.ndarray, camera: Sequence[float], window: int = 7, floor_percentile: float = 0.5,
                 up: Optional[np.ndarray] = None) -> np.ndarray:
    """Encode a depth map as HHA.

    Args:
        depth_m: ``(H, W)`` float depth in metres, 0 (or non-finite) where missing.
        camera: ``(fx, fy, cx, cy)`` of the depth map's pixel grid.
        window: normal-estimation patch side in pixels.
        floor_percentile: percentile of the heights taken as the ground (robust "lowest points").
        up: the up direction, if known; estimated from the normals when None.

    Returns:
        ``(H, W, 3)`` uint8: disparity, height above ground (cm), angle with gravity
        (+38 deg); 0 in every channel where depth is missing.
    """
    depth_m = np.where(np.isfinite(depth_m), depth_m, 0).astype(np.float64)
    valid = depth_m > 0
    hha = np.zeros(depth_m.shape + (3,), np.uint8)
    if not valid.any():
        return hha
    points = depth_to_points(depth_m, camera)
    normals, ok = surface_normals(points, valid, window)
    if up is None:
        up = estimate_gravity(normals, ok)
    up = np.asarray(up, np.float64) / np.linalg.norm(up)
    height_cm = 100.0 * (points @ up)
    height_cm -= np.percentile(height_cm[valid], floor_percentile)
    angle = np.degrees(np.arccos(np.clip(normals @ up, -1.0, 1.0)))
    disparity = DISPARITY_SCALE / np.maximum(100.0 * depth_m, 1e-6)
    channels = [disparity, height_cm, angle + ANGLE_OFFSET]
    for c, values in enumerate(channels):
        hha[..., c] = np.clip(np.round(values), 0, 255).astype(np.uint8)
    hha[~valid] = 0
    hha[valid & ~ok, 2] = 0
    return hha
