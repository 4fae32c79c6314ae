"""Lane centre lines from LiDAR ground returns: bright paint on dark asphalt.

Plain numpy, no ROS. Input: ground points (M, 4) x, y, z, intensity in base_link (x forward, y left).

1. Markings = ground returns far brighter than the asphalt. Intensities are read relative to the
   sweep's own percentiles (black level = 5th, asphalt = median, paint = 99.5th): the threshold
   needs no scale, so the simulator (~15 vs ~200), float 0..1, uint8/uint16 reflectivity and
   sensors with an offset or coarse quantisation all work. The raw values are never changed.
   Dense sweeps are thinned (bright returns all kept, the dark ones strided and weighted) so the
   cost does not grow with the sensor's beam count.
2. The dominant marking line is found by RANSAC on a quadratic y(x) over the markings within
   `fit_range_m` ahead. Painted lines of one road are parallel, so all of them share its shape:
   y = a_k + b x + c x^2. The intercepts a_k are the peaks of the histogram of y - (b x + c x^2).
   Slices of road painted across (crosswalks, stop lines) are masked first, and a line must be
   mostly bright along its band (bright speckle lines up by chance, the ground along it stays dark).
3. One joint least-squares fit refines (a_k..., b, c); the bend is kept only if it explains more
   paint than a straight fit. The ego lane lies between the nearest line left (a_k > 0) and right
   (a_k < 0) of the vehicle; neighbours between the next lines out. One boundary seen: the other
   is placed lane_width_m away.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fmdrive.objects import Lane


@dataclass
class LaneParams:
    fit_range_m: float = 30.0            # markings used from x = min_x_m to this far ahead
    min_x_m: float = -5.0
    centerline_length_m: float = 40.0    # centre lines are sampled from 0 to this far ahead
    centerline_step_m: float = 2.0
    intensity_ratio: float = 3.0         # marking >= ratio * median asphalt (above black level) ...
    intensity_mad_k: float = 2.5         # ... and >= median + k * robust sigma of the ground ...
    intensity_contrast: float = 0.25     # ... and this far from the median to the paint level
    max_ground_points: int = 12000       # thinned to about this many (bright ones all kept)
    max_marking_fraction: float = 0.3    # more "bright" ground than this: no contrast, no lanes
    min_marking_points: int = 8          # support of one painted line ...
    min_line_span_m: float = 6.0         # ... spread at least this far along x
    inlier_distance_m: float = 0.2
    paint_band_m: float = 0.1            # |y - line(x)| within this is on the paint ...
    min_paint_fraction: float = 0.05     # ... and this share of the ground there must be bright
    ransac_iterations: int = 200
    min_sample_span_m: float = 4.0       # RANSAC samples spread at least this far along x
    max_curvature_1pm: float = 0.02      # |y''| = 2|c|, i.e. radius >= 50 m
    min_bend_gain: float = 0.02          # a curved fit must explain 2 % more paint than a straight one
    transverse_slice_m: float = 2.0      # x-slices in which paint across the road is looked for ...
    transverse_cell_m: float = 0.5
    max_painted_share: float = 0.3       # ... more lateral cells painted than this: a crosswalk
    max_heading_rad: float = 0.6         # |dy/dx| at the vehicle
    min_lane_width_m: float = 2.5
    max_lane_width_m: float = 5.0
    seed: int = 0


def marking_threshold(intensity, params: LaneParams | None = None) -> float:
    """Intensity above which a ground return is paint: well above the median asphalt.

    Relative to the sweep's percentiles only, so any scale or offset of the sensor's intensity
    gives the same markings; inf when the ground shows no contrast at all."""
    params = params or LaneParams()
    intensity = np.asarray(intensity, dtype=np.float64)
    intensity = intensity[np.isfinite(intensity)]
    if len(intensity) == 0:
        return float('inf')
    black, median, paint = np.percentile(intensity, [5.0, 50.0, 99.5])
    if paint <= median:
        return float('inf')
    v = intensity - black
    median_v = median - black
    sigma = 1.4826 * float(np.median(np.abs(v - median_v)))
    return float(black + max(params.intensity_ratio * median_v,
                             median_v + params.intensity_mad_k * sigma,
                             median_v + params.intensity_contrast * (paint - median)))


def _transverse_paint(pts, bright, params: LaneParams) -> np.ndarray:
    """Mask of the points in x-slices painted across the road (crosswalks, stop lines).

    Lane lines cover a few lateral cells of a slice; zebra stripes and stop lines cover most of
    the visible road width, and would pull the lane curves towards them.
    """
    slice_idx = np.floor((pts[:, 0] - params.min_x_m) / params.transverse_slice_m).astype(np.int64)
    cell_idx = np.floor((pts[:, 1] - pts[:, 1].min()) / params.transverse_cell_m).astype(np.int64)
    n_cells = int(cell_idx.max()) + 1
    key = slice_idx * n_cells + cell_idx
    n_slices = int(slice_idx.max()) + 1
    seen = np.bincount(np.unique(key) // n_cells, minlength=n_slices)
    painted = np.bincount(np.unique(key[bright]) // n_cells, minlength=n_slices)
    transverse = painted > params.max_painted_share * np.maximum(seen, 1)
    return transverse[slice_idx]


def _quadratic_ransac(x, y, params: LaneParams, rng):
    """(b, c) of the best-supported quadratic y = a + b x + c x^2, or None."""
    n = len(x)
    sample = np.stack([rng.integers(0, n, params.ransac_iterations) for _ in range(3)], axis=1)
    xs, ys = x[sample], y[sample]                                        # (I, 3)
    ok = (np.ptp(xs, axis=1) >= params.min_sample_span_m)
    ok &= (np.abs(xs[:, :, None] - xs[:, None, :]) + np.eye(3) >= 0.5).all(axis=(1, 2))
    if not ok.any():
        return None
    xs, ys = xs[ok], ys[ok]
    vander = np.stack([np.ones_like(xs), xs, xs * xs], axis=2)            # (I, 3, 3)
    coef = np.linalg.solve(vander, ys[:, :, None])[:, :, 0]               # (I, 3) a, b, c
    plausible = (np.abs(2 * coef[:, 2]) <= params.max_curvature_1pm) \
        & (np.abs(coef[:, 1]) <= np.tan(params.max_heading_rad))
    if not plausible.any():
        return None
    coef = coef[plausible]
    residual = np.abs(y[None, :] - (coef[:, :1] + coef[:, 1:2] * x + coef[:, 2:3] * x * x))
    support = (residual < params.inlier_distance_m).sum(axis=1)
    best = int(np.argmax(support))
    if support[best] < params.min_marking_points:
        return None
    return coef[best, 1], coef[best, 2]


def _offset_peaks(offsets, x, params: LaneParams):
    """Intercepts of the parallel lines: peaks of the offset histogram, refined by the median."""
    bin_m = 0.1
    edges = np.arange(offsets.min() - 0.5, offsets.max() + 0.5 + bin_m, bin_m)
    hist, _ = np.histogram(offsets, edges)
    window = int(round(params.inlier_distance_m / bin_m))
    smooth = np.convolve(hist, np.ones(2 * window + 1), mode='same')      # count within +-inlier
    peaks = []
    order = np.argsort(-smooth, kind='stable')
    for i in order:                       # non-maximum suppression over bins (a few hundred)
        if smooth[i] < params.min_marking_points:
            break
        centre = 0.5 * (edges[i] + edges[i + 1])
        if all(abs(centre - p) > 1.0 for p in peaks):
            peaks.append(centre)
    refined = []
    for p in peaks:
        near = np.abs(offsets - p) < params.inlier_distance_m
        # the smoothed histogram counts whole bins, so a peak between two clumps can have no
        # point within the inlier distance itself: such a peak is no line
        if near.sum() >= params.min_marking_points and np.ptp(x[near]) >= params.min_line_span_m:
            refined.append(float(np.median(offsets[near])))
    return sorted(refined)


def _joint_fit(x, y, intercepts, b, c, params: LaneParams, bend: bool = True):
    """Least squares y = a_k + b x (+ c x^2 if bend) over the inliers of all lines.

    Returns (a (K,), b, c, inlier count) or None.
    """
    a = np.asarray(intercepts, dtype=np.float64)
    c = c if bend else 0.0
    inliers = 0
    for _ in range(2):
        r = y[:, None] - (a[None, :] + b * x[:, None] + c * x[:, None] ** 2)
        k = np.argmin(np.abs(r), axis=1)
        inlier = np.abs(r[np.arange(len(x)), k]) < params.inlier_distance_m
        inliers = int(inlier.sum())
        if inliers < 3 + len(a):
            return None
        xi, yi, ki = x[inlier], y[inlier], k[inlier]
        counts = np.bincount(ki, minlength=len(a))
        if (counts == 0).any():           # a line lost its points: keep the others
            a = a[counts > 0]
            continue
        design = np.zeros((len(xi), len(a) + 2))
        design[np.arange(len(xi)), ki] = 1.0
        design[:, -2], design[:, -1] = xi, xi * xi
        if not bend:
            design = design[:, :-1]
        sol, *_ = np.linalg.lstsq(design, yi, rcond=None)
        a, b = sol[:len(a)], float(sol[len(a)])
        c = float(sol[-1]) if bend else 0.0
    r = y[:, None] - (a[None, :] + b * x[:, None] + c * x[:, None] ** 2)
    inliers = int((np.abs(r).min(axis=1) < params.inlier_distance_m).sum())
    return a, b, c, inliers


def detect_lanes(ground_points_base, lane_width_m: float = 3.5,
                 params: LaneParams | None = None) -> list:
    """Ego lane (offset 0) and seen neighbours (+1 left, -1 right) as list[Lane], or [].

    ground_points_base: (M, 4) x, y, z, intensity in base_link. lane_width_m is the expected width,
    used to judge which lines bound lanes and to place a boundary that is not seen.
    """
    params = params or LaneParams()
    pts = np.asarray(ground_points_base)
    if pts.ndim != 2 or pts.shape[1] < 4 or len(pts) < params.min_marking_points \
            or pts.dtype.kind not in 'fiu':
        return []
    # selection in the sweep's own dtype; only the points kept are converted to float64
    with np.errstate(invalid='ignore'):
        near = (pts[:, 0] >= params.min_x_m) & (pts[:, 0] <= params.fit_range_m) \
            & (np.abs(pts[:, 1]) <= 2.5 * lane_width_m) & np.isfinite(pts[:, :4]).all(axis=1)
    index = np.flatnonzero(near)
    if len(index) < params.min_marking_points:
        return []
    # thin dense sweeps: every bright return is kept, every k-th dark one stands for k
    stride = max(1, int(np.ceil(len(index) / params.max_ground_points)))
    intensity = pts[index, 3]
    bright = intensity > marking_threshold(intensity[::stride], params)
    n_bright = int(np.count_nonzero(bright))
    if n_bright < params.min_marking_points or n_bright > params.max_marking_fraction * len(index):
        return []
    if stride > 1:
        kept = bright.copy()
        kept[::stride] = True
        index, bright = index[kept], bright[kept]
    pts = pts[index, :4].astype(np.float64)
    weight = np.where(bright, 1.0, float(stride))
    bright &= ~_transverse_paint(pts, bright, params)
    if bright.sum() < params.min_marking_points:
        return []
    x, y = pts[bright, 0], pts[bright, 1]
    shape = _quadratic_ransac(x, y, params, np.random.default_rng(params.seed))
    if shape is None:
        return []
    b, c = shape
    intercepts = _offset_peaks(y - (b * x + c * x * x), x, params)
    if not intercepts:
        return []
    bent = _joint_fit(x, y, intercepts, b, c, params, bend=True)
    straight = _joint_fit(x, y, intercepts, b, c, params, bend=False)
    # Occam: a bend must explain clearly more paint than a straight road (a crosswalk's stripes
    # 20 m ahead would otherwise bend a straight road to pass through one of them)
    if bent is None or (straight is not None
                        and bent[3] < (1.0 + params.min_bend_gain) * straight[3]):
        bent = straight
    if bent is None:
        return []
    lines, b, c, _ = bent
    # Paint is a bright stripe: most returns on it are bright (dashes: a third). Bright speckle
    # (glass, leaves, reflectors) lines up by chance but the ground along it stays dark.
    all_x, all_y = pts[:, 0], pts[:, 1]
    on_band = np.abs(all_y[:, None] - (lines[None, :] + b * all_x[:, None] + c * all_x[:, None] ** 2)) \
        < params.paint_band_m                                               # (N, K)
    paint_fraction = ((on_band & bright[:, None]) * weight[:, None]).sum(0) \
        / np.maximum((on_band * weight[:, None]).sum(0), 1)
    lines = np.sort(lines[paint_fraction >= params.min_paint_fraction])
    left, right = lines[lines > 0], lines[lines < 0][::-1]     # nearest first on each side
    plausible = (0.3 * lane_width_m, 1.0 * lane_width_m)          # |a| of an ego-lane boundary
    left0 = left[0] if len(left) and plausible[0] <= left[0] <= plausible[1] else None
    right0 = right[0] if len(right) and plausible[0] <= -right[0] <= plausible[1] else None
    if left0 is not None and right0 is not None:
        width = left0 - right0
        if not params.min_lane_width_m <= width <= params.max_lane_width_m:
            # the two are not one lane apart: trust the nearer one and the nominal width
            if abs(left0) <= abs(right0):
                right0 = None
            else:
                left0 = None
    if left0 is None and right0 is None:
        return []
    if left0 is None:
        left0 = right0 + lane_width_m
    if right0 is None:
        right0 = left0 - lane_width_m
    ego_width = float(left0 - right0)
    z_of = _ground_height(pts)
    lanes = [_lane(0, ego_width, 0.5 * (left0 + right0), b, c, z_of, params)]
    for offset, outer_lines, inner in ((+1, left, left0), (-1, right, right0)):
        beyond = outer_lines[np.abs(outer_lines) > abs(inner) + 0.5]
        if len(beyond):
            w = abs(beyond[0] - inner)
            if params.min_lane_width_m <= w <= params.max_lane_width_m:
                lanes.append(_lane(offset, float(w), 0.5 * (inner + beyond[0]), b, c, z_of, params))
    return lanes


def _ground_height(pts):
    """z(x, y) of the least-squares plane through the ground points."""
    design = np.c_[np.ones(len(pts)), pts[:, 0], pts[:, 1]]
    coef, *_ = np.linalg.lstsq(design, pts[:, 2], rcond=None)
    return lambda x, y: coef[0] + coef[1] * x + coef[2] * y


def _lane(offset, width_m, a, b, c, z_of, params: LaneParams) -> Lane:
    x = np.arange(0.0, params.centerline_length_m + 1e-9, params.centerline_step_m)
    y = a + b * x + c * x * x
    return Lane(offset=int(offset), width_m=float(width_m), centerline=np.c_[x, y, z_of(x, y)])
