"""What a planner is to the arbiter (fmdrive/planning/arbiter.py): anything with a `source` name and
`plan(scene, instruction, budget_ms) -> PlanResult`. The classical planner is one; the language-model
planner will be the next. A planner must not modify the scene (the arbiter may run two at once on
it) and should answer within `budget_ms` (the arbiter abandons one that does not).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from fmdrive.objects import Plan, Scene


@dataclass
class PlanResult:
    plan: Plan                                  # odom, waypoints every dt_s up to horizon_s
    candidates_evaluated: int
    best_costs: dict                            # cost terms of the chosen candidate (+ 'total')
    status: str                                 # 'ok' | 'no_lane' | 'emergency_stop' | 'degraded'
                                                # | 'budget_stop' | 'invalid_input' | 'error',
                                                # then '; notes'
    dense_plan: Plan | None = None              # the same trajectory every dense_dt_s (odom)
    notes: list = field(default_factory=list)
    debug: dict = field(default_factory=dict)


@runtime_checkable
class Planner(Protocol):
    source: str                                 # what its plans are called: 'llm', 'classical'

    def plan(self, scene: Scene, instruction: str = '', budget_ms: float | None = None) -> PlanResult:
        """A plan for `scene` (+ a human instruction) within budget_ms (None: no budget)."""
        ...
