"""Scenario simulator: specs, world & agents, expert ego, camera renderer, LiDAR ray-caster, GT.

    spec = generate_scenario('cut_in', seed=3)            # or ScenarioSpec.from_yaml(path)
    sim = Simulator(spec, K, width, height, T_base_camera, T_base_lidar)
    for frame in sim.frames(): ...                         # SimFrame at 10 Hz
    gt = sim.ground_truth()
"""
from fmdrive.sim.scenario import (SCENARIO_KINDS, AgentSpec, CameraSpec, EgoSpec, LidarSpec,
                                  RoadSpec, ScenarioError, ScenarioSpec, generate_scenario)
from fmdrive.sim.simulator import START_STAMP_NS, SimFrame, Simulator

__all__ = ['SCENARIO_KINDS', 'AgentSpec', 'CameraSpec', 'EgoSpec', 'LidarSpec', 'RoadSpec',
           'ScenarioError', 'ScenarioSpec', 'generate_scenario', 'SimFrame', 'Simulator',
           'START_STAMP_NS']
