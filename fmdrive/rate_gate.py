"""Admission of heavy sensor frames at no more than a rate, decided at the door (ROS-free).

A node whose frames cost tens of milliseconds cannot keep up when its input comes faster than it
was sized for (a bag replayed at 5x, a sensor set to 20 Hz on a 2-core computer). Queuing the
excess builds latency; dropping it from a full queue still pays for every frame and lets all nodes
fight for the cores. A gate in front of the queue sheds the excess for the price of a comparison,
so the frames that are processed see about the latency they would at the rate the node was sized
for. A token bucket absorbs delivery jitter: frames arriving unevenly at an average below the cap
all pass (with the default burst of one frame, a frame up to a whole period late followed by one on
time, at a cap 20% above the sensor rate).

The cap is wall-time: a replay restamps every message to its publish time, exactly as a live
sensor stamps it, so a node cannot tell a 5x replay of a 10 Hz LiDAR from a 50 Hz LiDAR and the cap
has to be a number (the node's `max_rate_hz`).
"""
from __future__ import annotations

import math


class RateGate:
    """admit(now_s) -> bool: at most max_hz on average (max_hz <= 0: every frame passes)."""

    def __init__(self, max_hz: float = 0.0, burst: float = 1.0):
        if burst < 0:
            raise ValueError(f'RateGate: burst must be >= 0, got {burst}')
        self.max_hz, self.burst = float(max_hz), float(burst)
        self._tokens = 1.0 + self.burst
        self._last: float | None = None

    def admit(self, now_s: float) -> bool:
        full = 1.0 + self.burst
        if not self.max_hz > 0 or not math.isfinite(self.max_hz):
            self._tokens, self._last = full, now_s
            return True
        if self._last is not None:
            self._tokens = min(full, self._tokens + max(0.0, now_s - self._last) * self.max_hz)
        self._last = now_s
        if self._tokens >= 1.0 - 1e-6:     # (float sums of exact periods fall just short)
            self._tokens -= 1.0
            return True
        return False
