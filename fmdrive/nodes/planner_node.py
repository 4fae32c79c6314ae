"""planner node: scene description (+ instruction) -> trajectory (nav_msgs/Path) and Plan.

An adapter around fmdrive/planning/arbiter.py, which decides what is published: the primary planner
under the deadline (`primary: llm` = the distilled LM planner of `lm_model`), the safety filter, the
classical planner as fallback. An LM model that is absent or cannot load leaves the classical
planner alone (source 'classical'), said on /diagnostics (`primary`). Instructions are mapped onto
canonical intents by the text encoder when they arrive (fmdrive/planning/lm/intents.py); a refused
one is said on /diagnostics (`instruction`) and in every plan's status while it stands. When
scenes stop coming, a watchdog publishes a safe stopping trajectory (fmdrive/planning/watchdog.py)
at watchdog_period_s until they resume, and says why on /planning/plan and /diagnostics.
"""
from __future__ import annotations

import time

from fmdrive_msgs.msg import Plan as PlanMsg
from fmdrive_msgs.msg import SceneDescription
from nav_msgs.msg import Path
from std_msgs.msg import String

from fmdrive import config, warmup
from fmdrive.msgs import msg_to_scene, plan_to_msg, plan_to_path
from fmdrive.nodes.base import FmdriveNode, run_node
from fmdrive.planning.arbiter import Arbiter, load_instruction_classifier, load_primary
from fmdrive.planning.watchdog import stopping_plan

MAX_INSTRUCTION_CHARS = 500


class PlannerNode(FmdriveNode):
    def __init__(self):
        super().__init__('planner')
        self.primary, self.diag_values['primary'] = load_primary(self.p)
        if self.primary is None and self.p['primary'] == 'llm' and 'cannot run' in self.diag_values['primary']:
            self.warn(f'LM planner unavailable: {self.diag_values["primary"]}', key='primary', period_s=1e9)
        self.instructions, self.diag_values['instructions'] = load_instruction_classifier()
        self.diag_values['instruction'] = 'none'
        self.reconfigure(self.p, {})
        self.instruction = ''
        self.last_scene = self.last_plan = None
        self.last_scene_time = None
        self.pub_plan = self.advertise('plan', PlanMsg)
        self.pub_path = self.advertise('trajectory', Path)
        self.subscribe('instruction', String, self.on_instruction, aged=None, gaps=False)
        self.subscribe('scene', SceneDescription, self.on_scene, queued=True, aged='always')
        self.create_timer(float(self.p['watchdog_period_s']), self.watchdog)

    def reconfigure(self, params: dict, changed: dict) -> None:
        self.arbiter = Arbiter.from_node_params(params, self.primary, self.instructions)  # ValueError refuses

    def warm_up(self) -> None:
        scene = warmup.scene()
        if self.primary is not None:        # its first run, unhurried: not one the arbiter abandons at
            self.primary.plan(scene, '')    # the deadline and is still busy with at the first real scene
        self.arbiter.plan(scene, '')
        self.arbiter.reset()                # a drive begins with the first real scene

    def on_instruction(self, msg: String):
        self.instruction = msg.data[:MAX_INSTRUCTION_CHARS]
        self.arbiter.new_instruction()      # a lane change asked again is a new one
        understood = self.arbiter.classify(self.instruction)     # embedded once, here, not in a frame
        self.diag_values['instruction'] = 'none' if understood is None else understood.describe()[:200]
        if understood is not None and understood.refused:
            self.warn(f'instruction {self.instruction[:60]!r} {understood.refused}', key='instruction')
        self.get_logger().info(f'instruction: {self.instruction[:80]!r} -> {self.diag_values["instruction"]}')

    def on_scene(self, msg: SceneDescription):
        t0 = time.perf_counter()
        scene = msg_to_scene(msg)
        out = self.arbiter.plan(scene, self.instruction)
        if out.source == 'fallback':
            self.warn(out.status, key='fallback')
        if not out.safety.ok:
            self.warn(f'published trajectory failed the safety check: {", ".join(out.safety.reasons)}',
                      key='unsafe')
        self.set_mode(out.mode)
        self.publish(out.plan)
        self.last_scene, self.last_scene_time = scene, time.monotonic()
        self.record((time.perf_counter() - t0) * 1e3, scene.stamp_ns)

    def watchdog(self):
        """No scene for stale_after_s: publish a stop from where the last plan has taken the car."""
        since = self.last_scene_time if self.last_scene_time is not None else self._started
        silent_s = time.monotonic() - since
        if silent_s <= float(self.p['stale_after_s']):
            return
        reason = (f'no scene for {silent_s:.1f} s' if self.last_scene_time is not None
                  else 'no scene received yet') + ' (see /diagnostics for the silent input)'
        with self._lock:
            plan = stopping_plan(self.arbiter.fallback, self.last_scene, self.last_plan, self.now_ns(),
                                 reason)
            self.set_mode(plan.status)
            self.publish(plan)

    def publish(self, plan):
        # the trajectory first: it is what the controller waits for
        self.pub_path.publish(plan_to_path(plan, config.FRAMES['odom']))
        self.pub_plan.publish(plan_to_msg(plan, config.FRAMES['odom']))
        self.last_plan = plan


def main(args=None):
    run_node(PlannerNode, args)


if __name__ == '__main__':
    main()
