"""benchmarks.transport: the figures are computed from what really crossed between processes."""
import pytest

from benchmarks import transport


def test_loss_and_latency_figures_are_computed_from_received_messages():
    figures = transport._figures({'image': (4, [1.0, 2.0, 3.0]), 'cloud': (2, [])}, '_x')
    assert figures['image_loss_pct_x'] == 25.0
    assert figures['image_latency_ms_x'] == 2.0 and figures['image_latency_p50_ms_x'] == 2.0
    assert figures['cloud_loss_pct_x'] == 100.0 and figures['cloud_latency_ms_x'] is None


def test_images_and_clouds_cross_between_two_processes_with_the_large_message_profile(ros_domain):
    result = transport._run_pair(n_images=6, n_clouds=3, profile=True, timeout_s=20)
    for kind, count in (('image', 6), ('cloud', 3)):
        sent, latencies_ms = result[kind]
        assert sent == count and len(latencies_ms) == count
        assert all(latency > 0 for latency in latencies_ms)  # stamped before it was sent


def test_schedule_interleaves_both_streams_in_time_order():
    events = transport._schedule(60, 30)
    assert [kind for _, kind in events].count('image') == 60
    assert [kind for _, kind in events].count('cloud') == 30
    assert [t for t, _ in events] == sorted(t for t, _ in events)
    assert events[-1] == (pytest.approx(29 / 10 + 0.5 / 30), 'cloud')  # 10 Hz, half a frame late
