"""A short history of ego states (odom frame) to look up the ego pose at any sensor stamp.

Odometry arrives at ~50 Hz, possibly late, out of order or with gaps, while LiDAR frames arrive at
~10 Hz with their own stamps. `OdometryBuffer.at(stamp_ns)` interpolates between the two samples that
bracket the stamp, or extrapolates a little (constant speed and yaw rate) past either end.
ROS-free: the fusion node feeds it `(stamp_ns, EgoState)` pairs converted from nav_msgs/Odometry.
"""
from __future__ import annotations

import bisect
import math

from fmdrive.objects import EgoState

NS_PER_S = 1_000_000_000


def _wrap(a: float) -> float:
    return (a + math.pi) % (2.0 * math.pi) - math.pi


def _is_finite_state(ego: EgoState) -> bool:
    return all(math.isfinite(v) for v in (ego.x, ego.y, ego.yaw_rad, ego.speed_mps, ego.yaw_rate_rps))


def interpolate_ego(a: EgoState, b: EgoState, alpha: float) -> EgoState:
    """State a fraction alpha (0 = a, 1 = b) of the way from a to b; yaw takes the short way round."""
    return EgoState(
        x=a.x + alpha * (b.x - a.x),
        y=a.y + alpha * (b.y - a.y),
        yaw_rad=_wrap(a.yaw_rad + alpha * _wrap(b.yaw_rad - a.yaw_rad)),
        speed_mps=a.speed_mps + alpha * (b.speed_mps - a.speed_mps),
        yaw_rate_rps=a.yaw_rate_rps + alpha * (b.yaw_rate_rps - a.yaw_rate_rps))


def extrapolate_ego(ego: EgoState, dt_s: float) -> EgoState:
    """Move ego by dt_s (may be negative) at constant speed along its heading and constant yaw rate."""
    v, w, yaw = ego.speed_mps, ego.yaw_rate_rps, ego.yaw_rad
    yaw_end = yaw + w * dt_s
    if abs(w) > 1e-6:  # arc of a circle
        dx = v / w * (math.sin(yaw_end) - math.sin(yaw))
        dy = v / w * (math.cos(yaw) - math.cos(yaw_end))
    else:
        dx = v * dt_s * math.cos(yaw)
        dy = v * dt_s * math.sin(yaw)
    return EgoState(ego.x + dx, ego.y + dy, _wrap(yaw_end), v, w)


class OdometryBuffer:
    """Time-ordered ego states of the last `max_age_s` seconds.

    add():   duplicates and samples older than the buffer are ignored (and counted); a stamp more
             than `reset_backwards_s` older than the newest one means time restarted (a looped bag,
             a restarted simulator): the buffer is cleared and add() returns True.
    at():    linear interpolation between bracketing samples (no more than `max_gap_s` apart),
             otherwise extrapolation from the nearest end by at most `max_extrapolation_s`,
             otherwise None.
    """

    def __init__(self, max_age_s: float = 5.0, max_extrapolation_s: float = 0.2,
                 max_gap_s: float = 1.0, reset_backwards_s: float = 1.0):
        if not max_age_s > 0:
            raise ValueError(f'OdometryBuffer max_age_s must be > 0, got {max_age_s}; '
                             'use a few seconds (default 5.0)')
        self.max_age_ns = int(max_age_s * NS_PER_S)
        self.max_extrapolation_ns = int(max_extrapolation_s * NS_PER_S)
        self.max_gap_ns = int(max_gap_s * NS_PER_S)
        self.reset_backwards_ns = int(reset_backwards_s * NS_PER_S)
        self._stamps: list[int] = []
        self._states: list[EgoState] = []
        # Counters for /diagnostics.
        self.n_duplicates = 0
        self.n_too_old = 0
        self.n_invalid = 0
        self.n_resets = 0

    def __len__(self) -> int:
        return len(self._stamps)

    def clear(self) -> None:
        self._stamps.clear()
        self._states.clear()

    def add(self, stamp_ns: int, ego: EgoState) -> bool:
        """Insert one sample. Returns True if the buffer was reset because time went backwards."""
        stamp_ns = int(stamp_ns)
        if not _is_finite_state(ego):
            self.n_invalid += 1
            return False
        reset = False
        if self._stamps:
            newest = self._stamps[-1]
            if stamp_ns < newest - self.reset_backwards_ns:
                self.clear()
                self.n_resets += 1
                reset = True
            elif stamp_ns < newest - self.max_age_ns:
                self.n_too_old += 1
                return False
        i = bisect.bisect_left(self._stamps, stamp_ns)
        if i < len(self._stamps) and self._stamps[i] == stamp_ns:
            self.n_duplicates += 1
            return reset
        self._stamps.insert(i, stamp_ns)
        self._states.insert(i, EgoState(ego.x, ego.y, ego.yaw_rad, ego.speed_mps, ego.yaw_rate_rps))
        # Forget what is older than max_age_s behind the newest sample.
        cut = bisect.bisect_left(self._stamps, self._stamps[-1] - self.max_age_ns)
        if cut:
            del self._stamps[:cut]
            del self._states[:cut]
        return reset

    def at(self, stamp_ns: int) -> EgoState | None:
        """Ego state at stamp_ns, or None if no sample is close enough."""
        if not self._stamps:
            return None
        stamp_ns = int(stamp_ns)
        i = bisect.bisect_left(self._stamps, stamp_ns)
        n = len(self._stamps)
        if i < n and self._stamps[i] == stamp_ns:
            return self._copy(self._states[i])
        if 0 < i < n:
            t0, t1 = self._stamps[i - 1], self._stamps[i]
            if t1 - t0 <= self.max_gap_ns:
                return interpolate_ego(self._states[i - 1], self._states[i], (stamp_ns - t0) / (t1 - t0))
            # A gap in the odometry: extrapolate from the nearer side if close enough.
            j = i - 1 if stamp_ns - t0 <= t1 - stamp_ns else i
        else:
            j = 0 if i == 0 else n - 1
        dt_ns = stamp_ns - self._stamps[j]
        if abs(dt_ns) > self.max_extrapolation_ns:
            return None
        return extrapolate_ego(self._states[j], dt_ns / NS_PER_S)

    def latest(self) -> EgoState | None:
        """The newest ego state (a copy), or None if the buffer is empty."""
        return self._copy(self._states[-1]) if self._states else None

    @property
    def latest_stamp_ns(self) -> int | None:
        return self._stamps[-1] if self._stamps else None

    @staticmethod
    def _copy(ego: EgoState) -> EgoState:
        return EgoState(ego.x, ego.y, ego.yaw_rad, ego.speed_mps, ego.yaw_rate_rps)
