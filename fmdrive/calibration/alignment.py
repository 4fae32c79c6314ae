"""How well a LiDAR-camera extrinsic aligns depth edges with image edges (the core of `calib-check`).

After Levinson & Thrun, "Automatic online calibration of cameras and lasers" (RSS 2013), with the
changes real frames need (KITTI, nuScenes and the PJLab sample all showed the plain measure
preferring a +1-2 deg pitch over the true extrinsic):

- LiDAR depth discontinuities of two orientations. Along a scan ring (ordered by azimuth), a point
  whose neighbour is farther by jump_m is the near side of a *vertical* occlusion edge (an object's
  left/right silhouette). Across rings (the nearest return in the ring above/below at the same
  azimuth), a point whose neighbour is much farther (by a factor, so the ever wider spacing of
  ground rings is no edge) is the near side of a *horizontal* edge (an object's top or underside).
  Only the second kind constrains pitch.
- Image edges split by orientation: |dI/du| (vertical edges) and |dI/dv| (horizontal edges), each
  spread by an inverse distance transform D = alpha * E + (1 - alpha) * max_q E(q) * gamma^dist
  (L1 distance, two recursive scans per axis). A silhouette point is scored on the vertical-edge
  map, a top point on the horizontal-edge map. The plain gradient magnitude let horizontal ground
  texture, lane paint and the horizon reward silhouette points pushed down by a pitch error.
- One fixed set of edge points, those inside an image crop that every compared extrinsic keeps in
  the image, and a constant normaliser (each map's mean): the score of a perturbation no longer
  changes because points enter or leave the image.
- score = weighted mean of D / mean(D) at those points (weight sqrt(jump_m), capped): 1.0 is what
  randomly placed points get.

`axis_sweeps` scores offsets along each of the six camera axes; the curvature of the score around
the given extrinsic says whether a frame constrains an axis at all (observability) and the peak
says where the frame would put it. A perturbation that moves the edge points by < MIN_SHIFT_PX, or
along an axis whose score curve is flat, is reported as not judged instead of given a verdict.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from fmdrive.calibration.camera_model import CalibrationError, CameraModel
from fmdrive.geometry import make_T, transform_points

MIN_JUMP_M = 0.3            # range jump along a ring that makes a point a depth discontinuity
CROSS_RING_MIN_JUMP_M = 1.0  # across rings: both this jump ...
CROSS_RING_MIN_RATIO = 1.5   # ... and this range ratio (ground rings 30 m out are only ~1.2 apart)
MAX_JUMP_WEIGHT_M = 10.0    # weight sqrt(min(jump, this)): sky-far neighbours do not dominate
RING_GAP_DEG = 0.05         # elevation gap that separates two scan rings (no ring field given)
MAX_AZIMUTH_GAP_DEG = 1.0   # neighbours farther apart than this (no return between) are not compared
EDGE_GAMMA = 0.8            # inverse distance transform decay per pixel (L1)
EDGE_ALPHA = 1.0 / 3.0      # weight of the raw edge strength in the spread edge map
MIN_SHIFT_PX = 3.0          # a perturbation must move edge points at least this much to be judged
MIN_CURVATURE_PCT = 1.0     # an axis whose score drops less than this at one step is not constrained
CROP_MARGIN_PX = 2.0
ALONG_RING, ACROSS_RINGS = 0, 1   # orientation of a discontinuity: vertical / horizontal image edge
AXES = ('rot_x', 'rot_y', 'rot_z', 'trans_x', 'trans_y', 'trans_z')
AXIS_MEANING = {'rot_x': 'pitch', 'rot_y': 'yaw', 'rot_z': 'roll', 'trans_x': 'right',
                'trans_y': 'down', 'trans_z': 'forward'}
ROT_SWEEP_DEG = (-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0)
TRANS_SWEEP_M = (-0.2, -0.15, -0.1, -0.05, 0.0, 0.05, 0.1, 0.15, 0.2)


# ---------------------------------------------------------------- image side
def _grey(image_rgb) -> np.ndarray:
    image = np.asarray(image_rgb)
    if image.ndim == 3:
        return image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    if image.ndim == 2:
        return image.astype(np.float32)
    raise ValueError(f'image must be (H, W) or (H, W, 3), got shape {image.shape}')


def _spread(edges: np.ndarray, gamma: float, alpha: float) -> np.ndarray:
    """alpha * E + (1 - alpha) * max_q E(q) gamma^(|dx|+|dy|): separable, 1D scans along each axis."""
    spread = edges.copy()
    for axis in (0, 1):
        lines = np.moveaxis(spread, axis, 0)
        for i in range(1, lines.shape[0]):
            np.maximum(lines[i], gamma * lines[i - 1], out=lines[i])
        for i in range(lines.shape[0] - 2, -1, -1):
            np.maximum(lines[i], gamma * lines[i + 1], out=lines[i])
    return (alpha * edges + (1 - alpha) * spread).astype(np.float32)


def image_edge_map(image_rgb, gamma: float = EDGE_GAMMA, alpha: float = EDGE_ALPHA) -> np.ndarray:
    """(H, W) float32 edge strength of any orientation: Sobel gradient magnitude of the grey image,
    spread by the inverse distance transform (each pixel takes the strongest edge nearby)."""
    grey = _grey(image_rgb)
    return _spread(np.hypot(ndimage.sobel(grey, 0), ndimage.sobel(grey, 1)), gamma, alpha)


def oriented_edge_maps(image_rgb, gamma: float = EDGE_GAMMA, alpha: float = EDGE_ALPHA) -> np.ndarray:
    """(2, H, W) float32: [vertical edges |dI/du|, horizontal edges |dI/dv|], each spread by the
    inverse distance transform; indexed by ALONG_RING / ACROSS_RINGS."""
    grey = ndimage.gaussian_filter(_grey(image_rgb), 0.7)   # sensor noise is no edge
    return np.stack([_spread(np.abs(ndimage.sobel(grey, 1)), gamma, alpha),
                     _spread(np.abs(ndimage.sobel(grey, 0)), gamma, alpha)])


# ---------------------------------------------------------------- LiDAR side
def scan_rings(points_lidar, ring_gap_deg: float = RING_GAP_DEG) -> np.ndarray:
    """(N,) ring index of each point from its elevation angle (ascending with elevation): rings are
    separated by gaps of more than ring_gap_deg in the sorted elevations."""
    xyz = np.asarray(points_lidar, dtype=np.float64)[:, :3]
    elevation = np.degrees(np.arctan2(xyz[:, 2], np.hypot(xyz[:, 0], xyz[:, 1])))
    order = np.argsort(elevation)
    rings = np.empty(len(xyz), np.int64)
    rings[order] = np.r_[0, np.cumsum(np.diff(elevation[order]) > ring_gap_deg)]
    if len(xyz) and rings.max() > 512:
        # elevations too noisy to cluster (not a multi-beam spinning scan): fixed 0.2 deg bins
        rings = np.floor((elevation - elevation.min()) / 0.2).astype(np.int64)
    return rings


def _rings(xyz, rings):
    rings = scan_rings(xyz) if rings is None else np.asarray(rings).reshape(-1)
    if len(rings) != len(xyz):
        raise ValueError(f'rings has {len(rings)} entries for {len(xyz)} points')
    return rings


def depth_discontinuities(points_lidar, rings=None, min_jump_m: float = MIN_JUMP_M,
                          max_azimuth_gap_deg: float = MAX_AZIMUTH_GAP_DEG):
    """Near-side points of occlusion edges along the scan rings (vertical edges in the image).

    Returns (index (M,) into points_lidar, jump_m (M,)): for each such point, how much farther
    its farther ring neighbour is. rings: (N,) beam index per point (the PointCloud2 'ring'
    field) or None to derive it from elevation angles.
    """
    xyz = np.asarray(points_lidar, dtype=np.float64)[:, :3]
    if len(xyz) < 2:
        return np.zeros(0, np.int64), np.zeros(0)
    rings = _rings(xyz, rings)
    range_m = np.linalg.norm(xyz, axis=1)
    azimuth = np.arctan2(xyz[:, 1], xyz[:, 0])
    order = np.lexsort((azimuth, rings))
    r, ring, az = range_m[order], rings[order], azimuth[order]
    adjacent = (ring[1:] == ring[:-1]) & (np.diff(az) < np.radians(max_azimuth_gap_deg))
    step = np.diff(r)                                   # r[i+1] - r[i]
    jump_next = np.where(adjacent, step, 0.0)           # next neighbour farther by
    jump_prev = np.where(adjacent, -step, 0.0)          # previous neighbour farther by
    jump = np.maximum(np.r_[jump_next, 0.0], np.r_[0.0, jump_prev])
    keep = jump > min_jump_m
    return order[keep], jump[keep]


def cross_ring_discontinuities(points_lidar, rings=None, min_jump_m: float = CROSS_RING_MIN_JUMP_M,
                               min_ratio: float = CROSS_RING_MIN_RATIO,
                               max_azimuth_gap_deg: float = MAX_AZIMUTH_GAP_DEG):
    """Near-side points of occlusion edges between neighbouring rings (horizontal image edges:
    the top of a car against the building behind it). Rings are put in elevation order first (a
    'ring' field need not be). A pair counts when the far return is both min_jump_m and a factor
    min_ratio farther: on flat ground the next ring up is always farther, but by a small factor.

    Returns (index (M,), jump_m (M,)) like depth_discontinuities."""
    xyz = np.asarray(points_lidar, dtype=np.float64)[:, :3]
    if len(xyz) < 2:
        return np.zeros(0, np.int64), np.zeros(0)
    rings = _rings(xyz, rings)
    range_m = np.linalg.norm(xyz, axis=1)
    azimuth = np.arctan2(xyz[:, 1], xyz[:, 0])
    elevation = np.arctan2(xyz[:, 2], np.hypot(xyz[:, 0], xyz[:, 1]))
    ids, inverse = np.unique(rings, return_inverse=True)
    mean_el = np.bincount(inverse, weights=elevation) / np.bincount(inverse)
    members = [np.nonzero(inverse == k)[0] for k in range(len(ids))]
    members = [m[np.argsort(azimuth[m])] for m in members]
    best = np.zeros(len(xyz))
    gap = np.radians(max_azimuth_gap_deg)
    by_elevation = np.argsort(mean_el)
    for lower, upper in zip(by_elevation[:-1], by_elevation[1:]):   # one pass per ring pair
        a, b = members[lower], members[upper]
        if len(a) == 0 or len(b) == 0:
            continue
        for src, dst in ((a, b), (b, a)):
            j = np.clip(np.searchsorted(azimuth[dst], azimuth[src]), 1, len(dst) - 1) if len(dst) > 1 \
                else np.zeros(len(src), np.int64)
            cand = np.stack([dst[np.maximum(j - 1, 0)], dst[j]])
            d_az = np.abs(azimuth[cand] - azimuth[src])
            k = np.argmin(d_az, axis=0)
            nb = cand[k, np.arange(len(src))]
            ok = d_az[k, np.arange(len(src))] < gap
            jump = range_m[nb] - range_m[src]
            edge = ok & (jump > min_jump_m) & (range_m[nb] > min_ratio * range_m[src])
            np.maximum.at(best, src[edge], jump[edge])
    index = np.nonzero(best > 0)[0]
    return index, best[index]


def edge_points(points_lidar, rings=None):
    """(xyz (M, 3), weight (M,), orientation (M,)) of all depth-edge points of a sweep: along-ring
    ones (orientation ALONG_RING) and across-ring ones (ACROSS_RINGS)."""
    points = np.asarray(points_lidar)
    if points.ndim != 2 or points.shape[1] < 3:
        raise ValueError(f'points_lidar must be (N, 3+), got shape {points.shape}')
    xyz = points[:, :3].astype(np.float64)
    rings = _rings(xyz, rings) if len(xyz) else np.zeros(0, np.int64)
    i_along, j_along = depth_discontinuities(xyz, rings)
    i_across, j_across = cross_ring_discontinuities(xyz, rings)
    jump = np.r_[j_along, j_across]
    return (np.vstack([xyz[i_along], xyz[i_across]]).reshape(-1, 3),
            np.sqrt(np.minimum(jump, MAX_JUMP_WEIGHT_M)),
            np.r_[np.full(len(i_along), ALONG_RING), np.full(len(i_across), ACROSS_RINGS)].astype(np.int64))


# ---------------------------------------------------------------- score
def _check_image(image_rgb, camera: CameraModel) -> np.ndarray:
    image = np.asarray(image_rgb)
    if image.ndim not in (2, 3) or image.shape[:2] != (camera.height, camera.width):
        raise CalibrationError(
            f'the image is {image.shape[1] if image.ndim >= 2 else "?"}x{image.shape[0]} but the '
            f'camera_info says {camera.width}x{camera.height}; use the camera_info of this image '
            f'(CameraModel.scaled() for a resized one)')
    return image


class FrameScorer:
    """One camera frame + LiDAR sweep, ready to score many extrinsics on the same edge points."""

    def __init__(self, points_lidar, image_rgb, camera: CameraModel, rings=None):
        _check_image(image_rgb, camera)
        self.camera = camera
        self.maps = oriented_edge_maps(image_rgb)
        self.norm = np.maximum(self.maps.reshape(2, -1).mean(axis=1), 1e-12)   # constant per map
        self.xyz, self.weight, self.orientation = edge_points(points_lidar, rings)

    def project(self, T_camera_lidar):
        uv, _, in_image = self.camera.project(transform_points(np.asarray(T_camera_lidar, float), self.xyz))
        return uv, in_image

    def common_crop(self, transforms, margin_px: float = CROP_MARGIN_PX) -> np.ndarray:
        """(M,) bool: edge points inside the image (shrunk by margin_px) under every transform."""
        keep = np.ones(len(self.xyz), bool)
        W, H = self.camera.width, self.camera.height
        for T in transforms:
            uv, ok = self.project(T)
            with np.errstate(invalid='ignore'):
                keep &= ok & (uv[:, 0] >= margin_px) & (uv[:, 0] <= W - 1 - margin_px) \
                    & (uv[:, 1] >= margin_px) & (uv[:, 1] <= H - 1 - margin_px)
        return keep

    def score(self, T_camera_lidar, subset=None) -> float:
        """Weighted mean of the normalised oriented edge strength at the projected edge points
        (subset: a fixed point set, e.g. common_crop; None: those in the image under T)."""
        uv, ok = self.project(T_camera_lidar)
        sel = ok if subset is None else (subset & ok)
        if not sel.any():
            return 0.0
        pix = np.rint(uv[sel]).astype(np.int64)
        o = self.orientation[sel]
        values = self.maps[o, pix[:, 1], pix[:, 0]] / self.norm[o]
        w = self.weight[sel]
        return float((values * w).sum() / w.sum())

    def shift_px(self, T0, T1, subset) -> float:
        """Median image motion of the subset's edge points between two extrinsics."""
        if not subset.any():
            return 0.0
        uv0, _ = self.project(T0)
        uv1, _ = self.project(T1)
        return float(np.median(np.linalg.norm(uv1[subset] - uv0[subset], axis=1)))


def edge_score(edge_map, camera: CameraModel, T_camera_lidar, edge_points_lidar, weights) -> float:
    """Weighted mean of an (H, W) edge map at the projected points, over the map's mean (0 if none land)."""
    uv, _, in_image = camera.project(transform_points(np.asarray(T_camera_lidar, float),
                                                      np.asarray(edge_points_lidar, float)[:, :3]))
    if not in_image.any():
        return 0.0
    pix = np.rint(uv[in_image]).astype(np.int64)
    w = np.asarray(weights, float)[in_image]
    values = edge_map[pix[:, 1], pix[:, 0]]
    return float((values * w).sum() / w.sum() / max(float(edge_map.mean()), 1e-12))


def alignment_score(points_lidar, image_rgb, camera: CameraModel, T_camera_lidar, rings=None) -> float:
    """Edge alignment of one LiDAR sweep with one image under T_camera_lidar (higher = better;
    1.0 = no better than random placement)."""
    return FrameScorer(points_lidar, image_rgb, camera, rings).score(T_camera_lidar)


def axis_delta(axis: str, amount: float) -> np.ndarray:
    """4x4 delta for a rotation (degrees) about / a shift (metres) along one camera optical axis
    (x right, y down, z forward); the perturbed extrinsic is delta @ T_camera_lidar."""
    kind, name = axis.split('_')
    unit = np.eye(3)['xyz'.index(name)]
    if kind == 'trans':
        return make_T(t=amount * unit)
    a = np.radians(amount)
    K = np.array([[0, -unit[2], unit[1]], [unit[2], 0, -unit[0]], [-unit[1], unit[0], 0]])
    return make_T(np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * K @ K)  # Rodrigues


def perturbations(rot_deg=(1, 2), trans_m=(0.1,)) -> list[tuple[str, np.ndarray]]:
    """(name, delta) pairs; the perturbed extrinsic is delta @ T_camera_lidar, i.e. a rotation
    about / a shift along the camera's own optical axes (x right, y down, z forward)."""
    out = []
    for name in 'xyz':
        for deg in rot_deg:
            for sign in (1, -1):
                out.append((f'rot_{name}{"+" if sign > 0 else "-"}{deg:g}deg', axis_delta(f'rot_{name}', sign * deg)))
        for t in trans_m:
            for sign in (1, -1):
                out.append((f'trans_{name}{"+" if sign > 0 else "-"}{t * 100:g}cm',
                            axis_delta(f'trans_{name}', sign * t)))
    return out


def _axis_of(perturbation: str) -> str:
    return perturbation[:perturbation.index('_') + 2]


def sweep_frames(scorers, T_camera_lidar, rot_deg=(1, 2), trans_m=(0.1,),
                 rot_sweep_deg=ROT_SWEEP_DEG, trans_sweep_m=TRANS_SWEEP_M,
                 min_shift_px: float = MIN_SHIFT_PX, min_curvature_pct: float = MIN_CURVATURE_PCT):
    """Score the given extrinsic, its perturbations and per-axis sweeps over one or more frames
    (FrameScorer each); scores and shifts are averaged over the frames, each frame on its own
    fixed point set (the edge points every compared extrinsic keeps in its image crop).

    Returns (rows, axes): rows = [{perturbation, score, shift_px, observable}] with 'none' first;
    axes = {axis: {meaning, offsets, scores, peak_offset, curvature_pct, shift_px_per_step,
    observable, consistent}}."""
    T = np.asarray(T_camera_lidar, dtype=np.float64)
    named = perturbations(rot_deg, trans_m)
    sweeps = {a: [(x, axis_delta(a, x)) for x in (rot_sweep_deg if a.startswith('rot') else trans_sweep_m)]
              for a in AXES}
    candidates = [T] + [d @ T for _, d in named] + [d @ T for a in AXES for _, d in sweeps[a]]
    per_frame = []
    for sc in scorers:
        crop = sc.common_crop(candidates)
        rows = [{'perturbation': 'none', 'score': sc.score(T, crop), 'shift_px': 0.0}]
        rows += [{'perturbation': n, 'score': sc.score(d @ T, crop), 'shift_px': sc.shift_px(T, d @ T, crop)}
                 for n, d in named]
        axes = {a: ([sc.score(d @ T, crop) for _, d in sweeps[a]],
                    sc.shift_px(T, axis_delta(a, 1.0 if a.startswith('rot') else 0.1) @ T, crop))
                for a in AXES}
        per_frame.append((rows, axes, int(crop.sum())))
    rows = [{'perturbation': r['perturbation'],
             'score': float(np.mean([f[0][k]['score'] for f in per_frame])),
             'shift_px': round(float(np.mean([f[0][k]['shift_px'] for f in per_frame])), 2)}
            for k, r in enumerate(per_frame[0][0])]
    axes = {}
    for a in AXES:
        offsets = np.array([x for x, _ in sweeps[a]])
        scores = np.mean([f[1][a][0] for f in per_frame], axis=0)
        step_shift = float(np.mean([f[1][a][1] for f in per_frame]))
        axes[a] = _axis_summary(a, offsets, scores, step_shift, min_shift_px, min_curvature_pct)
    for r in rows:
        if r['perturbation'] == 'none':
            r['observable'] = True
        else:
            r['observable'] = bool(r['shift_px'] >= min_shift_px and axes[_axis_of(r['perturbation'])]['observable'])
    return rows, axes, [f[2] for f in per_frame]


def _axis_summary(axis, offsets, scores, step_shift_px, min_shift_px, min_curvature_pct) -> dict:
    """Peak (parabola through the best sample and its neighbours) of one axis sweep and its
    sharpness: the % score drop one step (1 deg / 10 cm) away from the peak. A flat curve means
    the frames do not constrain the axis; a sharp peak away from 0 means the given value is off."""
    step = 1.0 if axis.startswith('rot') else 0.1
    k = int(np.argmax(scores))
    peak = float(offsets[k])
    if 0 < k < len(offsets) - 1:
        y0, y1, y2 = scores[k - 1], scores[k], scores[k + 1]
        den = y0 - 2 * y1 + y2
        if den < 0:
            peak = float(offsets[k] + 0.5 * (offsets[k + 1] - offsets[k]) * (y0 - y2) / den)
    one_step = np.abs(np.abs(offsets - offsets[k]) - step) < 1e-6   # the samples one step from the peak
    drop_pct = float(100.0 * (1.0 - np.mean(scores[one_step]) / max(scores[k], 1e-12))) if one_step.any() else 0.0
    observable = bool(step_shift_px >= min_shift_px and drop_pct >= min_curvature_pct)
    unit = 'deg' if axis.startswith('rot') else 'm'
    return {'meaning': AXIS_MEANING[axis], 'unit': unit,
            'offsets': [round(float(x), 3) for x in offsets], 'scores': [round(float(s), 5) for s in scores],
            'peak_offset': round(peak, 3), 'curvature_pct': round(drop_pct, 2),
            'shift_px_per_step': round(step_shift_px, 2), 'observable': observable,
            'consistent': bool(abs(peak) <= 0.5 * step)}


def perturbation_sweep(points_lidar, image_rgb, camera: CameraModel, T_camera_lidar, rot_deg=(1, 2),
                       trans_m=(0.1,), rings=None, min_shift_px: float = MIN_SHIFT_PX) -> list[dict]:
    """Score of the given extrinsic (first entry, perturbation 'none') and of each perturbation on
    one frame. Each dict: perturbation, score, shift_px (median image shift of the scored edge
    points), observable (shift_px >= min_shift_px and the axis' score curve is not flat)."""
    rows, _, _ = sweep_frames([FrameScorer(points_lidar, image_rgb, camera, rings)], T_camera_lidar,
                              rot_deg, trans_m, min_shift_px=min_shift_px)
    return rows


# ---------------------------------------------------------------- overlay
def depth_colours(depth_m, near_m: float = 3.0, far_m: float = 60.0) -> np.ndarray:
    """(N, 3) uint8: red near -> green -> blue far (log scale)."""
    t = np.clip(np.log(np.maximum(depth_m, 1e-3) / near_m) / np.log(far_m / near_m), 0, 1)
    return (255 * np.stack([1 - t, 1 - np.abs(2 * t - 1), t], axis=1)).astype(np.uint8)


def render_overlay(points_lidar, image_rgb, camera: CameraModel, T_camera_lidar,
                   radius_px: int = 2) -> np.ndarray:
    """Copy of the image with the projected points drawn as small dots coloured by depth
    (where dots overlap, the nearest point's colour wins)."""
    image = _check_image(image_rgb, camera)
    out = np.array(image[..., :3] if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2),
                   dtype=np.uint8)  # a contiguous copy, so the flat view below writes into it
    uv, depth, in_image = camera.project(transform_points(np.asarray(T_camera_lidar, float),
                                                          np.asarray(points_lidar, float)[:, :3]))
    pix = np.rint(uv[in_image]).astype(np.int64)
    depth_m = depth[in_image]
    colours = depth_colours(depth_m)
    d = np.arange(-radius_px, radius_px + 1)
    du, dv = np.meshgrid(d, d)
    disc = du * du + dv * dv <= radius_px * radius_px + radius_px  # round dot
    du, dv = du[disc], dv[disc]
    u = np.clip(pix[:, 0:1] + du, 0, camera.width - 1)            # (M, dots)
    v = np.clip(pix[:, 1:2] + dv, 0, camera.height - 1)
    flat = (v * camera.width + u).reshape(-1)
    dot_depth = np.repeat(depth_m, len(du))
    nearest = np.full(camera.width * camera.height, np.inf)
    np.minimum.at(nearest, flat, dot_depth)                        # z-buffer: the nearest dot wins
    wins = dot_depth == nearest[flat]
    out.reshape(-1, 3)[flat[wins]] = np.repeat(colours, len(du), axis=0)[wins]
    return out
