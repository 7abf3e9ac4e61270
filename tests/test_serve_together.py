"""Work queued before t = 0 (``Instance.busy_s``) in the model (issue 15, part c).

The model's numbers are worked by hand on test_execution's CHAIN task (paper servers):
on edge-text its subtask a uploads 1200 bits at 6 Mbps (0.0002 s) and computes
2.28e6 cycles at 2 GHz (0.00114 s); b uploads 2400 bits (0.0004 s) and computes
4.56e6 cycles (0.00228 s).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import approx, scenario_with
from hypothesis import given, settings
from hypothesis import strategies as st
from test_execution import CHAIN, CLOUD, PAPER, TEXT
from test_optimal import TICK_SLOP, exhaustive, tiny_instances

from llmoffload.marl.env import OffloadEnv
from llmoffload.model.execution import Execution, evaluate
from llmoffload.model.instance import Instance
from llmoffload.model.scenario import Scenario
from llmoffload.model.validate import violations
from llmoffload.schedulers.optimal import solve
from llmoffload.schedulers.registry import SCHEDULERS

BUSY = [[0.5], [0.0], [0.0], []]  # edge-text busy until 0.5 s; the cloud has no slots
A_TEXT, B_TEXT = 0.0002 + 0.00114, 0.0004 + 0.00228


def chain(busy: list[list[float]] | None = BUSY) -> Instance:
    return Instance(scenario=PAPER, tasks=[CHAIN], busy_s=busy)


def test_a_busy_edge_delays_its_first_subtask_and_the_queue_behind_it() -> None:
    schedule = evaluate(chain(), [(0, 0, TEXT), (0, 1, TEXT)])
    a, b = schedule.runs
    assert (a.start, a.end) == (approx(0.5), approx(0.5 + A_TEXT))
    assert (b.start, b.end) == (approx(0.5 + A_TEXT), approx(0.5 + A_TEXT + B_TEXT))
    assert violations(chain(), schedule) == []
    # the paper's span latency counts from the first start: the wait is not in it
    assert schedule.tasks[0].latency == approx(
        evaluate(chain(None), schedule.order).tasks[0].latency
    )


def test_busy_times_leave_other_servers_and_the_unlimited_cloud_alone() -> None:
    ex = Execution(chain())
    assert ex.free == [0.5, 0.0, 0.0, 0.0]
    assert ex.timing(0, 0, CLOUD)[0] == 0.0


def test_a_server_with_k_slots_takes_the_slot_that_frees_first() -> None:
    data = PAPER.model_dump()
    data["servers"][CLOUD]["slots"] = 2
    scenario, free = Scenario.model_validate(data), [[0.0], [0.0], [0.0], [0.3, 0.1]]
    busy = Instance(scenario=scenario, tasks=[CHAIN, CHAIN], busy_s=free)
    ex = Execution(busy)
    first, second = ex.dispatch(0, 0, CLOUD), ex.dispatch(1, 0, CLOUD)
    assert first.start == 0.1  # the slot that frees first; it frees again before the other
    assert second.start == first.end < 0.3
    assert ex.slot_free[CLOUD] == [0.3, second.end]


def test_the_validator_flags_a_start_before_a_busy_time() -> None:
    idle = evaluate(chain(None), [(0, 0, TEXT), (0, 1, TEXT)])  # starts at 0
    problems = violations(chain(), idle)
    assert any("busy until 0.5" in p for p in problems), problems


def test_busy_times_must_fit_the_slots_and_are_not_dumped_when_absent() -> None:
    with pytest.raises(ValueError, match="one time per slot"):
        chain([[0.5], [0.0], [0.0], [1.0]])  # the paper's cloud has no slots
    assert "busy_s" not in chain(None).dumps()
    assert Instance.model_validate_json(chain().dumps()) == chain()


def test_every_classic_scheduler_plans_around_a_busy_edge() -> None:
    for name, scheduler in SCHEDULERS.items():
        if name != "optimal":
            schedule = evaluate(chain(), scheduler(chain(), np.random.default_rng(0)))
            assert violations(chain(), schedule) == [], name


@settings(max_examples=10, deadline=None)
@given(tiny_instances(), st.lists(st.sampled_from([0.0, 0.001, 0.01, 0.1]), min_size=3, max_size=3))
def test_optimal_respects_busy_times_and_equals_exhaustive(instance: Instance, busy: list) -> None:
    instance = Instance(
        scenario=instance.scenario, tasks=instance.tasks, busy_s=[[b] for b in busy] + [[]]
    )
    solution = solve(instance, time_limit_s=30)
    best = exhaustive(instance)
    assert solution.proven
    assert violations(instance, solution.schedule) == []
    assert solution.schedule.objective >= best - 1e-12
    assert solution.schedule.objective == pytest.approx(best, abs=TICK_SLOP)


def test_the_env_observes_busy_servers_as_queue_delay() -> None:
    env = OffloadEnv(scenario_with(1))
    obs, _ = env.reset(seed=0, options={"instance": chain()})
    _, servers, _, _ = env.layout.split(obs["task_0"]["observation"])
    assert servers[:, -2].tolist() == [0.5, 0.0, 0.0, 0.0]
