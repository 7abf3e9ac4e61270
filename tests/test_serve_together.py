"""Work queued before t = 0 (``Instance.busy_s``) in the model, and the service that plans
concurrent requests against each other's queued work (issue 15, part c).

The model's numbers are worked by hand on test_execution's CHAIN task (paper servers):
on edge-text its subtask a uploads 1200 bits at 6 Mbps (0.0002 s) and computes
2.28e6 cycles at 2 GHz (0.00114 s); b uploads 2400 bits (0.0004 s) and computes
4.56e6 cycles (0.00228 s).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from helpers import approx, scenario_with
from hypothesis import given, settings
from hypothesis import strategies as st
from test_execution import CHAIN, CLOUD, PAPER, TEXT
from test_hardening_runtime import write_deployment
from test_optimal import TICK_SLOP, exhaustive, tiny_instances
from test_runtime import SERVERS, assert_one_line_error, cli, edgy_scenario

from llmoffload.marl.env import OffloadEnv
from llmoffload.model.execution import Execution, Schedule, evaluate
from llmoffload.model.instance import Instance
from llmoffload.model.scenario import Scenario
from llmoffload.model.validate import violations
from llmoffload.runtime.deployment import Bound, load_deployment
from llmoffload.runtime.executor import Batch, Executor, Planner, Request, planner
from llmoffload.runtime.ledger import Ledger
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


# --- the runtime: a ledger of queued work, planned against and served FIFO ---------------


def test_the_ledger_replays_each_queue_from_now_and_corrects_it_by_reality() -> None:
    ledger = Ledger([1, None])
    assert ledger.book(1, ready=0.0, duration=1.0, now=0.0) is None  # no slot limit
    a = ledger.book(0, ready=0.0, duration=1.0, now=0.0)
    b = ledger.book(0, ready=1.5, duration=2.0, now=0.0)
    assert a is not None and b is not None
    assert ledger.busy_s(0.0) == [[3.5], []]  # a 0-1, b waits for its inputs: 1.5-3.5
    assert a.first.is_set() and not b.first.is_set()
    a.started = 0.2  # sent late, to end at 1.2: b still waits for its inputs
    assert ledger.busy_s(0.5) == [[3.0], []]
    assert ledger.busy_s(1.6) == [[approx(2.0)], []]  # a overdue ends now at the earliest
    ledger.finish(a)  # and really ended at 1.6: b's turn
    assert b.first.is_set() and ledger.busy_s(1.6) == [[approx(2.0)], []]
    ledger.finish(b)
    ledger.finish(b)  # a second finish does nothing
    assert ledger.busy_s(9.0) == [[0.0], []]


TEXTS = {"A": "request-A", "B": "request-B"}


class Fake:
    """OpenAI-compatible endpoints behind ``httpx.MockTransport``: each server answers
    after its delay (or fails with HTTP 500), and the log keeps every call in the order
    it was sent: (server, which request, start, end)."""

    def __init__(self, delays: dict[str, float], failing: tuple[str, ...] = ()) -> None:
        self.delays = delays
        self.failing = failing
        self.log: list[tuple[str, str, float, float]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        server = SERVERS[request.url.port - PORT]
        prompt = json.loads(request.content)["messages"][0]["content"]
        who = next(k for k, text in TEXTS.items() if text in prompt)
        start = time.perf_counter()
        await asyncio.sleep(self.delays[server])
        self.log.append((server, who, start, time.perf_counter()))
        if server in self.failing:
            return httpx.Response(500, text="down")
        reply = {"choices": [{"message": {"content": "ok"}}], "usage": {}}
        return httpx.Response(200, json=reply)

    def calls(self, server: str) -> list[str]:
        return [who for s, who, *_ in sorted(self.log, key=lambda c: c[2]) if s == server]


PORT = 9000


@pytest.fixture
def slow_model(tmp_path: Path) -> Bound:
    """The runtime tests' edgy scenario with 1000 times the cycles per bit: a subtask takes
    seconds in the model, so queued work is large beside the milliseconds the test takes
    between two plans; the fake endpoints answer in milliseconds all the same."""
    path = edgy_scenario(tmp_path / "slow.yaml")
    data = yaml.safe_load(path.read_text())
    data["workload"]["cycles_per_bit"] *= 1000
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    urls = {name: f"http://127.0.0.1:{PORT + k}" for k, name in enumerate(SERVERS)}
    return load_deployment(write_deployment(tmp_path / "d.yaml", urls, scenario=str(path)))


def run_two(bound: Bound, fake: Fake, plan: Planner, together: bool, a: str, b: str) -> list:
    """Requests A then B on one executor, at once: A is planned and booked first."""

    async def go() -> list[Batch]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(fake)) as client:
            ex = Executor(bound, plan, client, together=together)
            batches = [
                ex.run([Request(workflow=w, text=TEXTS[k])]) for k, w in (("A", a), ("B", b))
            ]
            done = await asyncio.wait_for(asyncio.gather(*batches), timeout=10)
            if ex.ledger is not None:  # nothing stays booked once every batch is over
                assert ex.ledger.busy_s(time.perf_counter()) == [[0.0], [0.0], [0.0], []]
            return done

    return asyncio.run(go())


def test_two_concurrent_requests_are_planned_around_each_others_queued_work(
    slow_model: Bound,
) -> None:
    fake = Fake(dict.fromkeys(SERVERS, 0.001))
    heft = planner("heft", slow_model)
    text = SERVERS.index("edge-text")
    alone = run_two(slow_model, fake, heft, False, "text-analysis", "text-analysis")
    for batch in alone:  # alone, both plan every subtask on an idle edge-text
        assert batch.instance.busy_s is None
        assert [s.planned for s in batch.steps] == [text] * 4
        assert batch.steps[0].predicted_start == 0.0
    first, second = run_two(slow_model, fake, heft, True, "text-analysis", "text-analysis")
    assert first.instance.busy_s == [[0.0], [0.0], [0.0], []]
    queued = max(s.predicted_end for s in first.steps if s.planned == text)
    assert queued > 1.0  # seconds of model time on edge-text
    assert second.instance.busy_s[text][0] == pytest.approx(queued, rel=1e-3)
    head = second.steps[0]
    assert head.planned != text or head.predicted_start >= queued * (1 - 1e-3)
    assert all(r.error is None for batch in (first, second) for r in batch.results)


def edges_first(instance: Instance) -> Schedule:
    """Every subtask on the first server serving its modality (an edge where one can),
    whatever is queued: a plan that sends both requests' text work to edge-text."""
    servers = instance.scenario.servers
    return evaluate(
        instance,
        [
            (i, j, next(k for k, s in enumerate(servers) if sub.modality in s.modalities))
            for i, task in enumerate(instance.tasks)
            for j, sub in enumerate(task.subtasks)
        ],
    )


DELAYS = {"edge-text": 0.01, "edge-image": 0.01, "edge-audio": 0.01, "cloud": 0.3}


def test_an_edge_serves_requests_in_the_order_they_were_planned(slow_model: Bound) -> None:
    # A (vqa) queues analyse, question and aggregate on edge-text; aggregate waits for the
    # slow cloud. B (text-analysis) comes next: its subtasks are ready long before A's
    # aggregate, but may not pass it.
    fake = Fake(DELAYS)
    run_two(slow_model, fake, edges_first, True, "vqa", "text-analysis")
    assert fake.calls("edge-text") == ["A"] * 3 + ["B"] * 4
    a_ends = max(end for s, who, _, end in fake.log if who == "A" and s == "edge-text")
    assert min(start for s, who, start, _ in fake.log if who == "B") >= a_ends
    fake = Fake(DELAYS)  # planned alone, B's ready subtasks jump ahead, as before
    run_two(slow_model, fake, edges_first, False, "vqa", "text-analysis")
    assert fake.calls("edge-text")[-1] == "A"


def test_a_subtask_whose_predecessor_failed_does_not_block_the_edge(slow_model: Bound) -> None:
    fake = Fake(DELAYS, failing=("cloud",))  # A's answer fails: only the cloud serves it
    a, b = run_two(slow_model, fake, edges_first, True, "vqa", "text-analysis")
    (failed,), (served,) = a.results, b.results
    assert failed.error is not None and "'answer' failed on every server" in failed.error
    assert served.error is None and fake.calls("edge-text") == ["A"] * 2 + ["B"] * 4


def test_a_cancelled_request_frees_its_queued_slots(slow_model: Bound) -> None:
    fake = Fake({**DELAYS, "cloud": 30.0})

    async def go() -> list[list[float]]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(fake)) as client:
            ex = Executor(slow_model, edges_first, client)
            stuck = asyncio.ensure_future(ex.run([Request(workflow="vqa", text=TEXTS["A"])]))
            await asyncio.sleep(0.2)  # A's aggregate is queued on edge-text behind the cloud
            assert ex.ledger is not None and ex.ledger.busy_s(time.perf_counter())[0][0] > 0
            stuck.cancel()
            await asyncio.gather(stuck, return_exceptions=True)
            return ex.ledger.busy_s(time.perf_counter())

    assert asyncio.run(go()) == [[0.0], [0.0], [0.0], []]


def test_serve_refuses_an_unknown_plan_mode(tmp_path: Path) -> None:
    assert_one_line_error(
        cli("serve", "--deployment", tmp_path / "d.yaml", "--plan", "jointly"),
        "--plan must be together or alone, not 'jointly'",
    )
