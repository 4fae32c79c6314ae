"""fmdrive.rate_gate: frames above a node's max_rate_hz are shed at the door, jitter is absorbed."""
import numpy as np
import pytest

from fmdrive.rate_gate import RateGate


def admitted(gate, arrivals_s):
    return [gate.admit(t) for t in arrivals_s]


def test_a_5x_replay_of_a_10hz_lidar_is_thinned_to_the_cap():
    arrivals = 100.0 + np.arange(500) / 50.0                      # 10 s at 50 Hz
    n = sum(admitted(RateGate(12.0), arrivals))
    assert 120 <= n <= 121
    idx = np.flatnonzero(admitted(RateGate(12.0), arrivals))   # evenly spread, no long holes
    assert np.diff(idx).max() <= 5


def test_live_data_below_the_cap_always_passes_even_with_jitter():
    rng = np.random.default_rng(0)
    arrivals = 0.1 * np.arange(600) + rng.uniform(0.0, 0.09, 600)    # 10 Hz, up to 90 ms late
    assert all(admitted(RateGate(12.0), arrivals))
    # exactly at the cap, a little burst absorbs jitter too
    arrivals = np.cumsum(np.tile([0.05, 0.15], 300))             # average 10 Hz, pairs 50 ms apart
    assert all(admitted(RateGate(10.0), arrivals))
    late = 0.1 * np.arange(100)
    late[50] += 0.095                                            # one frame 95 ms late, the next on time
    assert all(admitted(RateGate(12.0), late))


def test_no_cap_passes_everything_and_a_changed_cap_applies_at_once():
    gate = RateGate(0.0)
    assert all(admitted(gate, 100.0 + np.arange(100) / 1000.0))
    gate.max_hz = 5.0
    assert sum(admitted(gate, 101.0 + np.arange(100) / 100.0)) in (5, 6)
    with pytest.raises(ValueError):
        RateGate(5.0, burst=-1.0)
