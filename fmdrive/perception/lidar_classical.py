"""Classical LiDAR perception: ground plane, clusters, oriented boxes with a class, lanes.

ROS-free core of the `lidar_encoder` node's `classical` backend (and the fallback of the learned
one). numpy in, numpy out; scipy.ndimage does the connected components.
The cost follows the crop and a fixed grid, not the sensor: 120k-240k-point sweeps (64-128 beams)
run in tens of milliseconds on one thread.

    detector = ClassicalLidarDetector(ClassicalLidarParams(), T_base_lidar)
    result = detector.detect(points_lidar)          # (N, 4|5) x, y, z, intensity [, ring]
    result = detector.detect(points_lidar, T_base_lidar=T_from_tf)   # mounting of this sweep
    result.objects, result.lanes, result.ground_plane, result.timings_ms, result.warnings

Pipeline (stage names are the keys of `timings_ms`):
  prepare    drop non-finite rows, transform to base_link (float32, column-wise), crop (range
             around the sensor, z band, the ego car's own body); a sweep denser than max_points
             is thinned near the sensor (uniform density per square metre inside a radius)
  ground     RANSAC plane among near-horizontal hypotheses only (a wall holds more returns than
             the road in a street of buildings), all scored in one matrix product on an even
             subsample, least-squares refit on the inliers of a larger one; last resort: the
             calibrated ground z = 0
  cluster    connected components (8-neighbourhood, cells grown by cluster_gap_cells) of a
             bird's-eye occupancy grid of the points above the ground and below z_max_m
  boxes      per-cluster statistics for all clusters at once (np.maximum.at), size/height gates
             (buildings, walls, poles, trees, noise are dropped), then two look-ups along the
             sensor's rays in a min-range image of all non-ground points (including a band of
             context above z_max_m that is never clustered):
             - floating: its lowest return is more than a beam gap above the ground and the ray
               just below it is not blocked by anything nearer: a canopy, a sign, the upper rows
               of a wall split off by the beam spacing -- nothing a road user looks like;
             - continues upward: the ray just above its top hits something at its range or
               nearer: a tree trunk under its canopy, a pole, the bottom rows of a wall, or
               something under an overhang; its visible top is not its top.
             Survivors get an L-shape rectangle for yaw and extent and a class from size (trucks
             and buses up to 18.5 m are 'car'); foliage (returns spread inside the box) and
             trees (taller than a car, narrow at the bottom) are no vehicles. Sides that were
             seen keep their fitted size; hidden ones are completed to the class's nominal size
  lanes      lane centre lines from bright ground returns (fmdrive.perception.lanes), whatever
             the sensor's intensity scale

`detect` never raises on its input: whatever array it gets (empty, NaN, wrong shape, 1e6 points,
huge coordinates) it returns a LidarResult, possibly empty, and says why in `warnings`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from fmdrive.config import UNKNOWN
from fmdrive.objects import Object3D
from fmdrive.perception.boxes import (CLASS_SIZES, classify_by_size, complete_partial_box,
                                      fit_lshape, size_match, surface_spread_m)
from fmdrive.perception.lanes import LaneParams, detect_lanes

# far away a class's top may fall between two beams; never take more than this off its height
MAX_HEIGHT_SLACK_M = 0.5
# a box taller than a car must have returns below 1.2 m along this share of its length
MIN_STANDING_SHARE = 0.5

@dataclass
class ClassicalLidarParams:
    # crop (base_link)
    range_m: float = 60.0                 # horizontal distance from the sensor
    z_min_m: float = -3.0
    z_max_m: float = 4.8                  # above a truck or a double-deck bus's roof
    context_above_m: float = 1.5          # points this far above z_max_m are kept, not clustered:
                                          # they tell a pole/trunk/wall from a road user
    ego_box_m: tuple = (-1.2, 3.8, -1.1, 1.1)   # x_min, x_max, y_min, y_max of the own car body
    # density: a sweep with more points than this after the crop is thinned where it is densest,
    # near the sensor (see _thin_near_field); 64/128-beam sweeps then cost what a 32-beam one does
    max_points: int = 60000
    # ground
    ground_distance_m: float = 0.2        # a point this close to the plane is ground
    ransac_iterations: int = 100
    ransac_max_points: int = 4000         # RANSAC runs on a random subsample of this many points
    max_ground_tilt_deg: float = 15.0     # a plane steeper than this is a wall, not the road
    # clustering: connected components of a bird's-eye occupancy grid
    cluster_cell_m: float = 0.2
    cluster_gap_cells: int = 1            # cells each occupied cell grows by: bridges ~0.4-0.6 m
    max_cluster_points: int = 200000      # more non-ground points: cluster a random subsample
    # boxes
    min_box_points: int = 5               # points in a cluster to make a box of it
    min_object_height_m: float = 0.25     # flatter: curb, debris, ground left-overs
    max_object_height_m: float = 4.5      # taller: building, tree, pole
    max_object_length_m: float = 18.5     # longer: wall, fence, hedge (an articulated bus: 18 m)
    max_object_width_m: float = 3.5
    report_unknown: bool = True           # obstacles of no class (bins, posts) as label 'unknown'
    # ray look-ups (see the module docstring); beam_gap_deg is the coarsest vertical angle
    # between neighbouring beams near the horizon (32 beams over 40 deg: 1.3; Pandar64: 0.17-1)
    beam_gap_deg: float = 1.4
    max_clearance_m: float = 0.4          # lowest return of a standing object, plus a beam gap
    ray_range_margin_m: float = 0.5       # "at its range": within this of its near/far side
    unknown_score_factor: float = 0.3
    # lanes
    detect_lanes: bool = True
    lane_width_m: float = 3.5
    seed: int = 0                         # RANSAC / subsample seed: a sweep always gives one answer

    def __post_init__(self):
        positive = ('range_m', 'cluster_cell_m', 'ground_distance_m', 'lane_width_m',
                    'max_object_height_m', 'max_object_length_m', 'max_object_width_m',
                    'beam_gap_deg', 'max_clearance_m', 'ray_range_margin_m')
        for name in positive:
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f'ClassicalLidarParams.{name} must be a positive number, got '
                                 f'{value!r}')
        for name in ('ransac_iterations', 'ransac_max_points', 'min_box_points',
                     'max_cluster_points', 'max_points'):
            if int(getattr(self, name)) < 1:
                raise ValueError(f'ClassicalLidarParams.{name} must be >= 1, got '
                                 f'{getattr(self, name)!r}')
        if int(self.cluster_gap_cells) < 0:
            raise ValueError(f'ClassicalLidarParams.cluster_gap_cells must be >= 0, got '
                             f'{self.cluster_gap_cells!r}')
        if not (np.isfinite(self.context_above_m) and self.context_above_m >= 0):
            raise ValueError(f'ClassicalLidarParams.context_above_m must be >= 0, got '
                             f'{self.context_above_m!r}')
        if not self.z_min_m < self.z_max_m:
            raise ValueError(f'ClassicalLidarParams: z_min_m ({self.z_min_m}) must be below '
                             f'z_max_m ({self.z_max_m})')
        if not 0 < self.max_ground_tilt_deg < 90:
            raise ValueError('ClassicalLidarParams.max_ground_tilt_deg must be in (0, 90), got '
                             f'{self.max_ground_tilt_deg!r}')
        if len(self.ego_box_m) != 4:
            raise ValueError('ClassicalLidarParams.ego_box_m must be (x_min, x_max, y_min, y_max)')

    @classmethod
    def from_dict(cls, values: dict) -> 'ClassicalLidarParams':
        """From node parameters: known names are taken, the others (backend, qos ...) ignored."""
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in values.items() if k in names})


@dataclass
class LidarResult:
    objects: list = field(default_factory=list)               # list[Object3D] in base_link
    ground_plane: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0, 0.0]))
    ground_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))    # full resolution
    nonground_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # clustered
    timings_ms: dict = field(default_factory=dict)
    lanes: list = field(default_factory=list)                 # list[Lane] in base_link
    warnings: list = field(default_factory=list)
    # ground_plane (a, b, c, d): a x + b y + c z + d = 0 in base_link, unit normal with c > 0, so
    # a x + b y + c z + d is the height above the ground.


class ClassicalLidarDetector:
    """Sweep in the lidar frame -> objects, ground and lanes in base_link."""

    def __init__(self, params: ClassicalLidarParams | None = None, T_base_lidar=None):
        self.params = params or ClassicalLidarParams()
        if T_base_lidar is None:
            raise ValueError('ClassicalLidarDetector needs T_base_lidar (4x4, from '
                             'calibration/extrinsics.yaml, child_frame_id lidar)')
        self.T_base_lidar = _checked_transform(T_base_lidar)
        self.sensor_xyz_base = self.T_base_lidar[:3, 3].copy()
        self._lane_params = LaneParams()

    # ------------------------------------------------------------------ public
    def detect(self, points_lidar, T_base_lidar=None) -> LidarResult:
        """Objects, ground and lanes (base_link) of one sweep (lidar frame).

        T_base_lidar: the mounting at this sweep's stamp (from TF), overriding the constructor's
        for this call; a LiDAR may be rotated (e.g. x right, y forward) or mounted at any height.
        """
        result = LidarResult()
        clock = _StageClock(result.timings_ms)
        try:
            T = self.T_base_lidar if T_base_lidar is None else _checked_transform(T_base_lidar)
            self._detect(points_lidar, T, result, clock)
        except Exception as e:   # noqa: BLE001 - a perception node must survive any sweep
            result.warnings.append(f'classical LiDAR pipeline failed ({type(e).__name__}: {e}); '
                                   f'no objects from this sweep')
            result.objects, result.lanes = [], []
        result.timings_ms['total'] = clock.total_ms()
        return result

    # ------------------------------------------------------------------ stages
    def _detect(self, points_lidar, T_base_lidar, result: LidarResult, clock):
        p = self.params
        origin = T_base_lidar[:3, 3].astype(np.float64)
        cloud = self._prepare(points_lidar, T_base_lidar, result.warnings)
        clock.lap('prepare')
        if len(cloud) == 0:
            return
        plane = self._fit_ground(cloud, result.warnings)
        result.ground_plane = plane
        height = _plane_height(cloud, plane)
        low = cloud[:, 2] <= p.z_max_m
        ground = (np.abs(height) <= p.ground_distance_m) & low
        result.ground_points = cloud[ground]
        # below the plane by more than the band: multipath / noise, never an object
        above_ground = height > p.ground_distance_m
        context = cloud[above_ground, :3]          # for the ray look-ups, incl. the band above
        in_band = above_ground & low
        nonground, nonground_height = cloud[in_band], height[in_band]
        if len(nonground) > p.max_cluster_points:
            result.warnings.append(
                f'{len(nonground)} non-ground points (more than max_cluster_points='
                f'{p.max_cluster_points}); clustering a random subsample of them')
            pick = np.sort(np.random.default_rng(p.seed).choice(len(nonground), p.max_cluster_points,
                                                                replace=False))
            nonground, nonground_height = nonground[pick], nonground_height[pick]
        result.nonground_points = nonground
        clock.lap('ground')
        labels = self._cluster(nonground, origin)
        clock.lap('cluster')
        result.objects = self._boxes(nonground, nonground_height, labels, plane, context, origin)
        clock.lap('boxes')
        if p.detect_lanes:
            result.lanes = detect_lanes(result.ground_points, p.lane_width_m, self._lane_params)
            clock.lap('lanes')

    def _prepare(self, points_lidar, T_base_lidar, warnings) -> np.ndarray:
        """(N, 4) float32 x, y, z, intensity in base_link, finite and cropped."""
        p = self.params
        try:
            arr = np.asarray(points_lidar)
        except Exception as e:  # noqa: BLE001 - ragged lists and the like
            warnings.append(f'points are not an array ({type(e).__name__}); expected (N, 4) or '
                            f'(N, 5) float32 x, y, z, intensity [, ring]')
            return np.zeros((0, 4), np.float32)
        if arr.dtype.kind not in 'fiub' or arr.ndim != 2 or arr.shape[1] < 3:
            warnings.append(f'points have shape {arr.shape} and dtype {arr.dtype}; expected '
                            f'(N, 4) or (N, 5) float32 x, y, z, intensity [, ring]')
            return np.zeros((0, 4), np.float32)
        if len(arr) == 0:
            warnings.append('empty sweep')
            return np.zeros((0, 4), np.float32)
        if arr.shape[1] == 3:
            warnings.append('points have no intensity column: lanes cannot be found')
            arr = np.c_[arr, np.zeros(len(arr), arr.dtype)]
        if arr.dtype != np.float32:
            arr = arr.astype(np.float32)
        R, t = T_base_lidar[:3, :3].astype(np.float32), T_base_lidar[:3, 3].astype(np.float32)
        # column by column: a (N, 3) @ (3, 3) product on a strided float32 view is several times
        # slower than nine multiply-adds, and a level, unrotated mounting skips the rotation
        with np.errstate(over='ignore', invalid='ignore'):
            px, py, pz, intensity = arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3]
            if np.array_equal(R, np.eye(3, dtype=np.float32)):
                x, y, z = px + t[0], py + t[1], pz + t[2]
            else:
                x = R[0, 0] * px + R[0, 1] * py + R[0, 2] * pz + t[0]
                y = R[1, 0] * px + R[1, 1] * py + R[1, 2] * pz + t[1]
                z = R[2, 0] * px + R[2, 1] * py + R[2, 2] * pz + t[2]
            # a NaN/inf anywhere in the row, or a coordinate too large for float32 (fast)
            finite = np.isfinite(x + y + z + intensity)
            n_bad = len(arr) - int(np.count_nonzero(finite))
            if n_bad:
                warnings.append(f'dropped {n_bad} of {len(arr)} non-finite points')
            dx, dy = x - t[0], y - t[1]
            range2 = dx * dx + dy * dy                  # horizontal, from the sensor
            x0, x1, y0, y1 = p.ego_box_m
            keep = finite & (range2 <= np.float32(p.range_m ** 2)) \
                & (z >= p.z_min_m) & (z <= p.z_max_m + p.context_above_m) \
                & ~((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1))
        index = np.flatnonzero(keep)
        if len(index) > p.max_points:
            index = index[_thin_near_field(range2[index], p.max_points)]
        cloud = np.empty((len(index), 4), np.float32)
        for c, column in enumerate((x, y, z, intensity)):
            cloud[:, c] = column[index]
        if len(cloud) == 0:
            warnings.append(f'no points within {p.range_m} m and z in [{p.z_min_m}, {p.z_max_m}] m '
                            f'(base_link)')
        return cloud

    def _fit_ground(self, cloud, warnings) -> np.ndarray:
        """Ground plane (a, b, c, d) in base_link; see LidarResult.ground_plane.

        RANSAC on an even subsample of ransac_max_points (never on all of them): all hypotheses
        are scored at once (one matrix product), and only those within max_ground_tilt_deg of
        horizontal compete, so a wall that holds more returns than the road in a street of
        buildings never wins. The plane is refit by least squares on the inliers of a larger
        subsample; the cost does not grow with the sensor's density."""
        p = self.params
        fallback = np.array([0.0, 0.0, 1.0, 0.0])         # extrinsics put the road at z = 0
        xyz = cloud[:, :3]
        refit = xyz[::-(-len(xyz) // (8 * p.ransac_max_points))]          # ceil: at most 8x
        candidates = refit[::-(-len(refit) // p.ransac_max_points)].astype(np.float64)
        min_cos = np.cos(np.deg2rad(p.max_ground_tilt_deg))
        model = _ransac_level_plane(candidates, p.ground_distance_m, p.ransac_iterations, min_cos,
                                    np.random.default_rng(p.seed))
        if model is None:
            warnings.append(f'no ground plane within {p.max_ground_tilt_deg} deg of horizontal; '
                            f'using the calibrated ground z = 0 (base_link)')
            return fallback
        return self._refit_plane(refit, model, min_cos)

    def _refit_plane(self, xyz, model, min_cos) -> np.ndarray:
        """Least-squares plane through the points near the RANSAC plane (the subsample is noisy)."""
        inlier = np.abs(_plane_height(xyz, model)) <= self.params.ground_distance_m
        pts = xyz[inlier].astype(np.float64)
        if len(pts) < 3:
            return model
        centroid = pts.mean(axis=0)
        scatter = pts.T @ pts - len(pts) * np.outer(centroid, centroid)
        normal = np.linalg.eigh(scatter)[1][:, 0]                  # least-variance direction
        if normal[2] < 0:
            normal = -normal
        if normal[2] < min_cos:
            return model
        return np.r_[normal, -normal @ centroid]

    def _cluster(self, nonground, origin) -> np.ndarray:
        """Cluster labels (-1 = none) from connected components of a bird's-eye occupancy grid.

        Cells of cluster_cell_m are occupied by any point above the ground; occupied cells that
        touch (8-neighbourhood) after growing each by cluster_gap_cells are one object. Heights do
        not take part, so the vertical gap between beams far away never cuts an object into rings,
        and the cost is that of a grid, whatever the sensor's density."""
        p = self.params
        if len(nonground) == 0:
            return np.zeros(0, dtype=np.int64)
        cell = p.cluster_cell_m
        n = int(np.ceil(2 * p.range_m / cell)) + 2
        ij = np.floor((nonground[:, :2] - (origin[:2] - p.range_m).astype(np.float32)) / cell)
        ij = np.clip(ij.astype(np.int64), 0, n - 1)
        flat = ij[:, 0] * n + ij[:, 1]
        occupied = np.zeros(n * n, bool)
        occupied[flat] = True
        occupied = occupied.reshape(n, n)
        grown = occupied
        for _ in range(int(p.cluster_gap_cells)):   # 3x3 dilation: OR of shifted views (fast)
            wide = grown.copy()
            wide[1:] |= grown[:-1]
            wide[:-1] |= grown[1:]
            grown = wide.copy()
            grown[:, 1:] |= wide[:, :-1]
            grown[:, :-1] |= wide[:, 1:]
        grid_labels, _ = ndimage.label(grown, structure=np.ones((3, 3), bool))
        return grid_labels.reshape(-1)[flat].astype(np.int64) - 1

    def _boxes(self, points, height, labels, plane, context, origin) -> list:
        """Oriented, classified boxes of the clusters that can be road users or obstacles."""
        p = self.params
        valid = labels >= 0
        if not valid.any():
            return []
        # cheap per-cluster statistics first (no sort of all points), then only the clusters that
        # can be objects are sorted and fitted
        labels_v = labels[valid]
        n_labels = int(labels_v.max()) + 1
        counts = np.bincount(labels_v, minlength=n_labels)
        pts_v, h_v = points[valid], height[valid]
        top_m = np.full(n_labels, -np.inf, np.float32)
        np.maximum.at(top_m, labels_v, h_v)
        z_top = np.full(n_labels, -np.inf, np.float32)
        np.maximum.at(z_top, labels_v, pts_v[:, 2])
        lo = np.full((n_labels, 2), np.inf, np.float32)
        hi = np.full((n_labels, 2), -np.inf, np.float32)
        for c in range(2):
            np.minimum.at(lo[:, c], labels_v, pts_v[:, c])
            np.maximum.at(hi[:, c], labels_v, pts_v[:, c])
        bev_diagonal = np.hypot(*(hi - lo).T)
        # a cluster cut by the z crop is taller than we can see; far away the highest return
        # below the crop can lie a beam gap under it
        range_c = np.hypot(0.5 * (lo[:, 0] + hi[:, 0]) - origin[0], 0.5 * (lo[:, 1] + hi[:, 1]) - origin[1])
        crop_margin_m = np.maximum(0.3, np.tan(np.deg2rad(p.beam_gap_deg)) * range_c)
        truncated = z_top >= p.z_max_m - crop_margin_m
        keep_label = (counts >= p.min_box_points) & (top_m >= p.min_object_height_m) \
            & (top_m <= p.max_object_height_m) & ~truncated \
            & (bev_diagonal <= np.hypot(p.max_object_length_m, p.max_object_width_m))
        if not keep_label.any():
            return []
        sel = keep_label[labels_v]
        points, height, labels = pts_v[sel], h_v[sel], labels_v[sel]
        order = np.argsort(labels, kind='stable')
        points, height, labels = points[order], height[order], labels[order]
        starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
        counts = np.diff(np.r_[starts, len(labels)])
        top_m = np.maximum.reduceat(height, starts)
        bottom_m = np.minimum.reduceat(height, starts)
        # along the rays: does the cluster stand on the ground, does it end where its top is?
        az, el, r = _polar(points[:, :3], origin.astype(np.float32))
        cluster_of = np.repeat(np.arange(len(starts)), counts)
        mean_xy = np.add.reduceat(points[:, :2].astype(np.float64), starts, axis=0) / counts[:, None]
        az, el, r = az.astype(np.float64), el.astype(np.float64), r.astype(np.float64)
        az_c = np.arctan2(mean_xy[:, 1] - origin[1], mean_xy[:, 0] - origin[0])
        d_az = np.angle(np.exp(1j * (az - az_c[cluster_of])))      # wrap-safe, about the centre
        d_az_lo, d_az_hi = np.minimum.reduceat(d_az, starts), np.maximum.reduceat(d_az, starts)
        el_top, el_bot = np.maximum.reduceat(el, starts), np.minimum.reduceat(el, starts)
        r_near, r_far = np.minimum.reduceat(r, starts), np.maximum.reduceat(r, starts)
        gap_rad = np.deg2rad(p.beam_gap_deg)
        sensor_height_m = max(float(origin @ plane[:3] + plane[3]), 0.1)
        # vertical spacing of two beams at the ground at range r: d(r tan e)/de = r + h^2 / r
        ground_gap_m = np.tan(gap_rad) * (r_near + sensor_height_m ** 2 / np.maximum(r_near, 0.5))
        high_bottom = bottom_m > p.max_clearance_m + ground_gap_m
        rays = _RayImage(context, origin.astype(np.float32))
        # the top beam passes through it: what we see of it ends at the field of view, not at its
        # top. A thin one is a pole or a trunk; a wide one may be a truck next to us.
        bev_extent = np.hypot(np.maximum.reduceat(points[:, 0], starts) - np.minimum.reduceat(points[:, 0], starts),
                              np.maximum.reduceat(points[:, 1], starts) - np.minimum.reduceat(points[:, 1], starts))
        cut_by_fov = (el_top >= rays.top_elevation_rad - 0.5 * gap_rad) & (bev_extent < 1.5) \
            & (top_m > CLASS_SIZES['pedestrian'].max_height_m)
        objects = []
        for i in np.flatnonzero(~cut_by_fov):
            # a thin pole in front of a car covers a column or two of its sector, a wall or a
            # canopy over the cluster the whole of it: evidence must span most of the sector
            sector = (az_c[i] + d_az_lo[i], az_c[i] + d_az_hi[i])
            above = rays.nearest_per_column_m(sector, (el_top[i] + 0.25 * gap_rad,
                                                       el_top[i] + 1.5 * gap_rad))
            if np.mean(above < r_far[i] + p.ray_range_margin_m) >= 0.5:
                continue                # continues upward (wall, trunk, pole) or under an overhang
            if high_bottom[i]:
                below = rays.nearest_per_column_m(sector, (el_bot[i] - 1.5 * gap_rad,
                                                           el_bot[i] - 0.25 * gap_rad))
                if np.mean(below < r_near[i] - p.ray_range_margin_m) < 0.5:
                    continue            # floating: nothing nearer hides what holds it up
            start, count = starts[i], counts[i]
            # the ray above it passed over: its true top lies at most a beam gap higher
            slack_m = min(np.tan(gap_rad) * r_far[i], MAX_HEIGHT_SLACK_M)
            obj = self._box(points[start:start + count], height[start:start + count],
                            float(top_m[i]), plane, origin, slack_m)
            if obj is not None:
                objects.append(obj)
        objects.sort(key=lambda o: float(np.hypot(*(o.center[:2] - origin[:2]))))
        return objects

    def _box(self, cluster, point_heights, height_m, plane, origin, height_slack_m=0.0):
        p = self.params
        xy = cluster[:, :2].astype(np.float64)
        centre_xy, length, width, yaw = fit_lshape(xy)
        if length > p.max_object_length_m or width > p.max_object_width_m:
            return None
        if height_m > CLASS_SIZES['car'].max_height_m and \
                _standing_share(xy, point_heights, yaw, length) < MIN_STANDING_SHARE:
            return None     # taller than a car, narrow at the bottom: a tree (trunk + crown)
        ray = centre_xy - origin[:2]
        view_alignment = abs(np.cos(yaw) * ray[0] + np.sin(yaw) * ray[1]) / max(np.hypot(*ray), 1e-6)
        label = classify_by_size(length, width, height_m, view_alignment, height_slack_m,
                                 surface_spread_m=surface_spread_m(xy, centre_xy, length, width, yaw))
        if label == UNKNOWN and not p.report_unknown:
            return None
        if label != UNKNOWN:
            centre_xy, length, width, yaw = complete_partial_box(
                label, centre_xy, length, width, yaw, origin[:2], height_m)
        ground_z = -(plane[0] * centre_xy[0] + plane[1] * centre_xy[1] + plane[3]) / plane[2]
        # more points = more trust, saturating; a good size match to the class doubles it
        support = 1.0 - np.exp(-len(cluster) / 15.0)
        if label == UNKNOWN:
            score = p.unknown_score_factor * support
        else:
            score = support * (0.4 + 0.6 * size_match(label, length, width, height_m))
        return Object3D(center=[centre_xy[0], centre_xy[1], ground_z + 0.5 * height_m],
                        size=[length, width, height_m], yaw_rad=yaw, label=label,
                        score=float(np.clip(score, 0.0, 1.0)), id=0)


def _ransac_level_plane(xyz, distance_m: float, iterations: int, min_cos: float, rng):
    """The plane (a, b, c, d), unit normal with c >= min_cos, that has the most points of xyz
    (float64) within distance_m, among `iterations` planes through three random points; None if
    no three points span a near-horizontal plane."""
    if len(xyz) < 3:
        return None
    tri = xyz[rng.integers(0, len(xyz), (iterations, 3))]                 # (I, 3, 3)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(normal, axis=1)
    ok = norm > 1e-9
    normal = normal[ok] / norm[ok, None]
    normal *= np.where(normal[:, 2] < 0, -1.0, 1.0)[:, None]
    level = normal[:, 2] >= min_cos
    if not level.any():
        return None
    normal = normal[level]
    d = -np.einsum('ij,ij->i', normal, tri[ok][level, 0])
    points_t = np.ascontiguousarray(xyz.T, dtype=np.float32)              # (3, N)
    heights = normal.astype(np.float32) @ points_t                        # (H, N)
    heights += d.astype(np.float32)[:, None]
    inliers = np.count_nonzero(np.abs(heights) <= np.float32(distance_m), axis=1)
    best = int(np.argmax(inliers))
    if inliers[best] < 3:
        return None
    return np.r_[normal[best], d[best]]


def _thin_near_field(r2, max_points: int, bin_m2: float = 4.0) -> np.ndarray:
    """Indices of about max_points of the points at squared horizontal ranges r2 (m^2) from the
    sensor, thinned where a rotating LiDAR is densest.

    A spinning sensor's returns per square metre of ground fall as 1/r^2, so the near field holds
    most of a dense sweep while every object in it already has hundreds of returns. A point at
    range r is kept with probability min(1, r^2 / R^2): inside R the density becomes that at R
    (uniform per square metre), beyond R every point is kept, so far objects, which have few
    returns, lose none. R is the smallest radius that leaves at most max_points (found on a
    histogram of r^2, one pass), and the draw is a fixed hash of the point's index: one sweep
    always gives one answer and no random state is shared."""
    n = len(r2)
    n_bins = int(np.ceil(float(r2.max()) / bin_m2)) + 1
    counts = np.bincount((r2 * np.float32(1.0 / bin_m2)).astype(np.int64), minlength=n_bins)
    edges = np.arange(1, n_bins + 1) * bin_m2                      # R^2 candidates: upper bin edges
    centres = edges - 0.5 * bin_m2
    inside = np.cumsum(counts)                                    # points with r^2 below each edge
    inside_r2 = np.cumsum(counts * centres)
    kept = inside_r2 / edges + (n - inside)                       # expected kept for R^2 = edge
    fits = np.flatnonzero(kept <= max_points)
    R2 = edges[fits[0]] if len(fits) else edges[-1]
    return np.flatnonzero(_index_draws(n) * np.float32(R2) < r2)


_DRAWS = np.zeros(0, np.float32)


def _index_draws(n: int) -> np.ndarray:
    """A fixed uniform draw in [0, 1) per point index (Knuth's multiplicative hash), cached."""
    global _DRAWS
    if len(_DRAWS) < n:
        index = np.arange(max(n, 2 * len(_DRAWS)), dtype=np.uint64)
        _DRAWS = ((index * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)).astype(np.float32) \
            * np.float32(1.0 / 2 ** 32)
    return _DRAWS[:n]


def _standing_share(xy, heights, yaw_rad, length_m, low_m: float = 1.2) -> float:
    """How much of a cluster's visible length (along yaw_rad) its returns lower than low_m span.

    A vehicle's sides reach down to its wheels all along it; a tree stands on a trunk far narrower
    than its crown, a sign or a canopy on nothing."""
    low = heights < low_m
    if np.count_nonzero(low) < 2 or length_m <= 0:
        return 0.0
    along = xy[low] @ np.array([np.cos(yaw_rad), np.sin(yaw_rad)])
    return float(np.ptp(along) / length_m)


def _plane_height(points, plane) -> np.ndarray:
    """Signed height (float32) of points (N, >=3) above the plane (a, b, c, d), unit normal."""
    a, b, c, d = (np.float32(v) for v in plane)
    return a * points[:, 0] + b * points[:, 1] + c * points[:, 2] + d


def _checked_transform(T_base_lidar) -> np.ndarray:
    T = np.asarray(T_base_lidar, dtype=np.float64)
    if T.shape != (4, 4) or not np.isfinite(T).all() or not np.allclose(T[3], [0, 0, 0, 1]):
        raise ValueError(f'T_base_lidar must be a finite 4x4 homogeneous transform, got shape '
                         f'{T.shape}; read it from calibration/extrinsics.yaml or /tf_static')
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-5):
        raise ValueError('T_base_lidar rotation is not orthonormal; check the quaternion in '
                         'calibration/extrinsics.yaml or /tf_static')
    return T


def _polar(xyz, origin):
    """Azimuth (rad), elevation (rad) and horizontal range (m) of points seen from origin."""
    d = xyz - origin
    r = np.hypot(d[:, 0], d[:, 1])
    return np.arctan2(d[:, 1], d[:, 0]), np.arctan2(d[:, 2], r), r


class _RayImage:
    """The nearest return (horizontal range, m) per (azimuth, elevation) cell seen from the sensor:
    what a ray in a given direction hits first, at the resolution of the cells."""

    AZ_BIN_RAD = np.deg2rad(0.5)
    EL_BIN_RAD = np.deg2rad(0.2)
    EL_MIN_RAD, EL_MAX_RAD = np.deg2rad(-60.0), np.deg2rad(60.0)
    WRAP_BINS = 90                      # columns repeated past 360 deg: sectors up to 45 deg wide

    def __init__(self, xyz, origin):
        self.n_az = int(round(2 * np.pi / self.AZ_BIN_RAD))
        self.n_el = int(round((self.EL_MAX_RAD - self.EL_MIN_RAD) / self.EL_BIN_RAD))
        image = np.full((self.n_az + self.WRAP_BINS, self.n_el), np.inf, np.float32)
        self.top_elevation_rad = np.inf       # highest return of the sweep: its field of view
        if len(xyz):
            az, el, r = _polar(xyz, origin)
            ai = np.floor(az * np.float32(1.0 / self.AZ_BIN_RAD)).astype(np.int64) % self.n_az
            ei = np.clip(np.floor((el - np.float32(self.EL_MIN_RAD))
                                  * np.float32(1.0 / self.EL_BIN_RAD)).astype(np.int64),
                         0, self.n_el - 1)
            np.minimum.at(image.reshape(-1), ai * self.n_el + ei, r.astype(np.float32))
            self.top_elevation_rad = float(el.max())
            image[self.n_az:] = image[:self.WRAP_BINS]
        self.image = image

    def nearest_per_column_m(self, azimuth_rad, elevation_rad) -> np.ndarray:
        """Nearest return of each azimuth column of the sector [az0, az1] within the elevations
        [el0, el1] (radians); inf where a column has none. At least one column."""
        a0 = int(np.floor(azimuth_rad[0] / self.AZ_BIN_RAD))
        width = int(np.clip(np.floor(azimuth_rad[1] / self.AZ_BIN_RAD) - a0 + 1, 1, self.WRAP_BINS))
        a0 %= self.n_az
        e0 = int(np.floor((elevation_rad[0] - self.EL_MIN_RAD) / self.EL_BIN_RAD))
        e1 = int(np.floor((elevation_rad[1] - self.EL_MIN_RAD) / self.EL_BIN_RAD)) + 1
        e0, e1 = max(e0, 0), min(e1, self.n_el)
        if e1 <= e0:
            return np.full(width, np.inf, np.float32)
        return self.image[a0:a0 + width, e0:e1].min(axis=1)


class _StageClock:
    """Milliseconds per pipeline stage, written into a dict as stages finish."""

    def __init__(self, timings_ms: dict):
        self.timings_ms = timings_ms
        self.start = self.last = time.perf_counter()

    def lap(self, stage: str):
        now = time.perf_counter()
        self.timings_ms[stage] = (now - self.last) * 1e3
        self.last = now

    def total_ms(self) -> float:
        return (time.perf_counter() - self.start) * 1e3


__all__ = ['ClassicalLidarParams', 'ClassicalLidarDetector', 'LidarResult', 'CLASS_SIZES']
