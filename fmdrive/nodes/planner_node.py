"""planner node: scene description (+ instruction) -> trajectory (nav_msgs/Path) and Plan.

For now the classical sampling planner (fmdrive/planning/classical.py) under the safety check; the
distilled LLM planner arrives later and will run first with this one as its fallback.
"""
from __future__ import annotations

import time

from fmdrive_msgs.msg import Plan as PlanMsg
from fmdrive_msgs.msg import SceneDescription
from nav_msgs.msg import Path
from std_msgs.msg import String

from fmdrive import config
from fmdrive.msgs import msg_to_scene, plan_to_msg, plan_to_path
from fmdrive.nodes.base import FmdriveNode, make_qos, run_node
from fmdrive.planning.classical import ClassicalPlanner, PlannerParams
from fmdrive.planning.safety import check_trajectory


class PlannerNode(FmdriveNode):
    def __init__(self):
        super().__init__('planner')
        known = PlannerParams.__dataclass_fields__
        self.params = PlannerParams(**{k: v for k, v in self.p.items() if k in known})
        self.planner = ClassicalPlanner(self.params)
        self.instruction = ''
        self.pub_plan = self.create_publisher(PlanMsg, config.TOPICS['plan'], make_qos('reliable'))
        self.pub_path = self.create_publisher(Path, config.TOPICS['trajectory'], make_qos('reliable'))
        self.subscribe('instruction', String, self.on_instruction)
        self.subscribe('scene', SceneDescription, self.on_scene, queued=True)

    def on_instruction(self, msg: String):
        self.instruction = msg.data[:500]
        self.get_logger().info(f'instruction: {self.instruction!r}')

    def on_scene(self, msg: SceneDescription):
        t0 = time.perf_counter()
        scene = msg_to_scene(msg)
        result = self.planner.plan(scene, self.instruction)
        plan = result.plan
        safety = check_trajectory(plan.poses, plan.t_s, plan.speeds_mps, scene, self.params)
        if not safety.ok:
            plan.status = f'{plan.status}; unsafe: {", ".join(safety.reasons)}'
            self.warn(f'planned trajectory failed the safety check: {", ".join(safety.reasons)}', key='unsafe')
        plan.planning_time_ms = (time.perf_counter() - t0) * 1e3
        plan.deadline_met = plan.planning_time_ms <= float(self.p['deadline_ms'])
        self.set_mode('ok' if result.status.split(';')[0].split()[0] in ('ok', 'no_lane') else result.status)
        # the trajectory first: it is what the controller waits for
        self.pub_path.publish(plan_to_path(plan, config.FRAMES['odom']))
        self.pub_plan.publish(plan_to_msg(plan, config.FRAMES['odom']))
        self.record(plan.planning_time_ms, scene.stamp_ns)


def main(args=None):
    run_node(PlannerNode, args)


if __name__ == '__main__':
    main()
