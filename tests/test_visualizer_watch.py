"""The visualizer takes what only its overlay needs (image, points, camera objects, /tf) while someone
watches the overlay, and gives it up only after UNWATCHED_PAUSE_S without a watcher: not at start,
before discovery has found the watcher (seen in the load series: a restarted visualizer unsubscribed
from every lazy input within milliseconds and subscribed again when the watcher showed up)."""
import pytest

from fmdrive import config
from fmdrive.graph import GRAPH


class Watchers:
    """Stands in for the overlay publisher's subscription count."""

    def __init__(self, publisher):
        self.publisher, self.count = publisher, 0

    def get_subscription_count(self):
        return self.count

    def __getattr__(self, name):
        return getattr(self.publisher, name)


@pytest.fixture
def visualizer(ros_domain):
    import rclpy
    owner = not rclpy.ok()
    if owner:
        rclpy.init()
    from fmdrive.nodes.visualizer_node import VisualizerNode
    node = VisualizerNode()
    yield node
    node.destroy_node()
    if owner:
        rclpy.try_shutdown()


def test_lazy_inputs_are_kept_until_the_overlay_has_been_unwatched_for_a_while(visualizer):
    from fmdrive.nodes.visualizer_node import UNWATCHED_PAUSE_S
    node = visualizer
    lazy = [config.TOPICS[k] for k in next(n.lazy_inputs for n in GRAPH if n.name == 'visualizer')]
    assert lazy

    def paused():
        return {t for t in lazy if node._inputs[t].paused}
    node.pub_overlay = Watchers(node.pub_overlay)
    t0 = node.unwatched_since
    node.check_watched(t0 + 0.1)             # just started: nobody found yet, nothing given up
    assert paused() == set() and node.tf_wanted()
    node.check_watched(t0 + UNWATCHED_PAUSE_S + 0.1)
    assert paused() == set(lazy) and not node.tf_wanted()
    assert node.diag_values['overlay'] == 'not drawn (nobody watches it)'
    node.pub_overlay.count = 1               # a watcher: served at once
    node.check_watched(t0 + UNWATCHED_PAUSE_S + 0.2)
    assert paused() == set() and node.diag_values['overlay'] == 'drawn (watched)'
    node.pub_overlay.count = 0               # gone for a moment (a recorder restarting): kept
    node.check_watched(t0 + UNWATCHED_PAUSE_S + 0.3)
    node.check_watched(t0 + 2 * UNWATCHED_PAUSE_S)
    assert paused() == set()
    node.check_watched(t0 + 2 * UNWATCHED_PAUSE_S + 0.4)
    assert paused() == set(lazy)
