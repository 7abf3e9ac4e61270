"""The token compute model (``compute: tokens``, docs/model.md §3), and ``cycles`` unchanged.

A tokens-mode subtask on server a computes for (call_ms + prefill_ms_per_token * prompt +
decode_ms_per_token * output) / 1000 s and costs that many seconds times the server's GHz
times its $/GHz. The hand-worked numbers below use the built-in ``tokens`` scenario:

    edge-text  2.0 GHz, 0.01 $/GHz, call 30 ms, prefill 1.0 ms/token, decode 25 ms/token
    cloud     10.0 GHz, 0.03 $/GHz, call 200 ms, prefill 0.05 ms/token, decode 10 ms/token
    wireless  as the paper's: r = 6e6 log2(1 + SNR); wired as the paper's
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import approx, distance_for_snr, sub
from hypothesis import given, settings
from hypothesis import strategies as st
from test_env import random_walk
from test_hardening_inputs import assert_refused, cli
from test_optimal import TICK_SLOP, TINY_FLOWS, exhaustive
from test_properties import floats, scenarios, tasks

from llmoffload.marl.env import OffloadEnv, layout_of
from llmoffload.model.execution import Execution, Tables, evaluate
from llmoffload.model.instance import Instance, Subtask, Task, load_instance, sample_instance
from llmoffload.model.scenario import Scenario, load_scenario
from llmoffload.model.validate import check, violations
from llmoffload.runtime.deployment import load_deployment
from llmoffload.runtime.executor import Request, build_instance
from llmoffload.schedulers.heuristics import valid_dispatches
from llmoffload.schedulers.optimal import solve
from llmoffload.schedulers.registry import SCHEDULERS

TOKENS = load_scenario("tokens")
TEXT, IMAGE, CLOUD = 0, 1, 3


def counted(s: Subtask, prompt: int, output: int) -> Subtask:
    return s.model_copy(update={"prompt_tokens": prompt, "output_tokens": output})


# -- a schedule worked out by hand ---------------------------------------------------------

# Both tasks sit where the uplink SNR to edge-text is 15: r_ul = 6e6 log2(16) = 24 Mbps,
# r_dl = 6e6 log2(1 + 15 * 0.8 / 0.3) = 6e6 log2(41).
D = [distance_for_snr(15), distance_for_snr(3), distance_for_snr(7)]
R_DL_TEXT = 6e6 * math.log2(41)
CHAIN = Task(  # analyse(text) -> perceive(image) -> aggregate(text)
    workflow="chain",
    distances_m=D,
    subtasks=[
        counted(sub("analyse", "text", 2400, 1200, []), 200, 40),
        counted(sub("perceive", "image", 240_000, 3000, [0]), 500, 30),
        counted(sub("aggregate", "text", 1600, 2000, [1]), 300, 60),
    ],
)
SOLO = Task(
    workflow="solo", distances_m=D, subtasks=[counted(sub("ask", "text", 1200, 800, []), 100, 20)]
)
ORDER = [(0, 0, TEXT), (1, 0, TEXT), (0, 1, CLOUD), (0, 2, TEXT)]

# 1. analyse on edge-text: start 0, upload 2400 / 24e6 = 1e-4,
#    compute (30 + 1.0 * 200 + 25 * 40) / 1000 = 1.23, end 1.2301, cost 1.23 * 2.0 * 0.01 = 0.0246
# 2. ask on edge-text: queued behind analyse, start 1.2301, upload 1200 / 24e6 = 5e-5,
#    compute (30 + 100 + 25 * 20) / 1000 = 0.63, end 1.86015, cost 0.63 * 0.02 = 0.0126
#    latency 5e-5 + 0.63 + 800 / r_dl
# 3. perceive on the cloud: analyse's 1200 bits edge -> cloud at 12 Mbps = 1e-4: start 1.2302,
#    upload 240000 / 3e6 = 0.08, compute (200 + 0.05 * 500 + 10 * 30) / 1000 = 0.525,
#    end 1.8352, cost 0.525 * 10 * 0.03 = 0.1575
# 4. aggregate on edge-text: perceive's 3000 bits cloud -> edge = 2.5e-4, ready 1.83545, but
#    the edge is busy until 1.86015: start 1.86015, upload 1600 / 24e6, compute
#    (30 + 300 + 25 * 60) / 1000 = 1.83, cost 1.83 * 0.02 = 0.0366
#    latency (span, from 0) 1.86015 + 1600 / 24e6 + 1.83 + 2000 / r_dl
HAND_COMPUTE = [1.23, 0.63, 0.525, 1.83]
HAND_COST = [0.0246, 0.0126, 0.1575, 0.0366]
LATENCY_CHAIN = 1.86015 + 1600 / 24e6 + 1.83 + 2000 / R_DL_TEXT
LATENCY_SOLO = 5e-5 + 0.63 + 800 / R_DL_TEXT
OBJECTIVE = 0.5 * (LATENCY_CHAIN + 0.0246 + 0.1575 + 0.0366) + 0.5 * (LATENCY_SOLO + 0.0126)


def test_a_tokens_schedule_by_hand() -> None:
    instance = Instance(scenario=TOKENS, tasks=[CHAIN, SOLO])
    schedule = evaluate(instance, ORDER)
    assert [r.compute for r in schedule.runs] == [approx(c) for c in HAND_COMPUTE]
    assert [r.cost for r in schedule.runs] == [approx(c) for c in HAND_COST]
    assert [r.start for r in schedule.runs] == [
        0.0,
        approx(1.2301),
        approx(1.2302),
        approx(1.86015),
    ]
    assert schedule.tasks[0].latency == approx(LATENCY_CHAIN)
    assert schedule.tasks[1].latency == approx(LATENCY_SOLO)
    assert schedule.objective == approx(OBJECTIVE)
    assert violations(instance, schedule) == []


def test_the_validator_reads_the_token_counts() -> None:
    """One more output token on edge-text is 25 ms more compute: the schedule no longer fits."""
    instance = Instance(scenario=TOKENS, tasks=[CHAIN, SOLO])
    schedule = evaluate(instance, ORDER)
    longer = SOLO.model_copy(update={"subtasks": [counted(SOLO.subtasks[0], 100, 21)]})
    problems = violations(Instance(scenario=TOKENS, tasks=[CHAIN, longer]), schedule)
    assert any("task 1 subtask 0): compute 0.63" in p for p in problems), problems


# -- the validator, the execution model and the schedulers on random tokens instances ------


@st.composite
def token_instances(draw: st.DrawFn) -> Instance:
    """test_properties' random scenarios and DAGs, timed by tokens."""
    data = draw(scenarios()).model_dump()
    data["compute"] = "tokens"
    for server in data["servers"]:
        server["call_ms"] = draw(floats(0.0, 500.0))
        server["prefill_ms_per_token"] = draw(floats(0.0, 5.0))
        server["decode_ms_per_token"] = draw(floats(0.0, 60.0))
    for sizes in data["workload"]["sizes"].values():
        sizes["prompt_tokens"], sizes["output_tokens"] = [1, 1000], [1, 200]
    scenario = Scenario.model_validate(data)
    edges = sum(s.kind == "edge" for s in scenario.servers)
    drawn = [
        task.model_copy(
            update={
                "subtasks": [
                    counted(s, draw(st.integers(1, 2000)), draw(st.integers(1, 300)))
                    for s in task.subtasks
                ]
            }
        )
        for task in draw(st.lists(tasks(edges), min_size=1, max_size=3))
    ]
    return Instance(scenario=scenario, tasks=drawn)


@settings(max_examples=100, deadline=None)
@given(token_instances(), st.data())
def test_random_valid_tokens_schedules_pass_the_validator(
    instance: Instance, data: st.DataObject
) -> None:
    ex = Execution(instance)
    while not ex.done:
        options = valid_dispatches(ex)
        ex.dispatch(*options[data.draw(st.integers(0, len(options) - 1))])
    schedule = ex.schedule()
    assert violations(instance, schedule) == []
    k = data.draw(st.integers(0, len(schedule.runs) - 1))
    run = schedule.runs[k]
    wrong = dataclasses.replace(run, compute=run.compute * 1.01 + 1e-3, end=run.end + 1e-3)
    assert violations(instance, dataclasses.replace(schedule, runs=[*schedule.runs[:k], wrong]))


@settings(max_examples=30, deadline=None)
@given(token_instances(), st.integers(0, 2**32))
def test_classic_tokens_schedules_pass_the_validator(instance: Instance, seed: int) -> None:
    for name in (n for n in SCHEDULERS if n != "optimal"):
        check(instance, evaluate(instance, SCHEDULERS[name](instance, np.random.default_rng(seed))))


@pytest.mark.parametrize("seed", range(6))
def test_optimal_validates_and_beats_every_classic_scheduler(seed: int) -> None:
    scenario = TOKENS.model_copy(update={"latency": ("span", "arrival")[seed % 2]})
    instance = sample_instance(scenario, np.random.default_rng(seed), 1 + seed % 3)
    solution = solve(instance, time_limit_s=30)
    assert solution.proven
    check(instance, solution.schedule)
    for name in (n for n in SCHEDULERS if n != "optimal"):
        order = SCHEDULERS[name](instance, np.random.default_rng(seed))
        assert solution.schedule.objective <= evaluate(instance, order).objective + TICK_SLOP


@st.composite
def tiny_token_instances(draw: st.DrawFn) -> Instance:
    """One or two tiny tasks on the tokens scenario, where the edges can win."""
    base = TOKENS.model_dump()
    base["workflows"] = TINY_FLOWS
    base["workload"]["workflows"] = list(TINY_FLOWS)
    base["gamma"] = draw(st.sampled_from([0.2, 0.5, 0.9]))
    base["latency"] = draw(st.sampled_from(["span", "arrival"]))
    base["servers"][CLOUD]["usd_per_ghz"] = draw(st.sampled_from([0.03, 0.3, 3.0]))
    base["servers"][CLOUD]["call_ms"] = draw(st.sampled_from([20.0, 200.0, 2000.0]))
    scenario = Scenario.model_validate(base)
    rng = np.random.default_rng(draw(st.integers(0, 2**32)))
    return sample_instance(scenario, rng, draw(st.integers(1, 2)))


@settings(max_examples=8, deadline=None)
@given(tiny_token_instances())
def test_optimal_equals_exhaustive_with_tokens(instance: Instance) -> None:
    solution = solve(instance, time_limit_s=30)
    best = exhaustive(instance)
    assert solution.proven
    assert solution.schedule.objective == pytest.approx(best, abs=TICK_SLOP)


# -- instances ---------------------------------------------------------------------------


def test_tokens_are_drawn_after_everything_else() -> None:
    """A tokens instance holds exactly the cycles instance of the same seed, plus tokens,
    each count inside its modality's range."""
    plain = TOKENS.model_dump()
    del plain["compute"]
    for server in plain["servers"]:
        for field in ("call_ms", "prefill_ms_per_token", "decode_ms_per_token"):
            del server[field]
    for sizes in plain["workload"]["sizes"].values():
        del sizes["prompt_tokens"], sizes["output_tokens"]
    cycles = Scenario.model_validate(plain)
    for seed in range(5):
        timed = sample_instance(TOKENS, np.random.default_rng(seed))
        untimed = sample_instance(cycles, np.random.default_rng(seed))
        for a, b in zip(timed.tasks, untimed.tasks, strict=True):
            stripped = [
                s.model_copy(update={"prompt_tokens": None, "output_tokens": None})
                for s in a.subtasks
            ]
            assert a.model_copy(update={"subtasks": stripped}) == b
            for s in a.subtasks:
                sizes = TOKENS.workload.sizes[s.modality]
                assert sizes.prompt_tokens.low <= s.prompt_tokens <= sizes.prompt_tokens.high
                assert sizes.output_tokens.low <= s.output_tokens <= sizes.output_tokens.high


def test_a_tokens_instance_file_round_trips(tmp_path: Path) -> None:
    instance = sample_instance(TOKENS, np.random.default_rng(4))
    path = tmp_path / "i.json"
    path.write_text(instance.dumps())
    assert load_instance(path) == instance
    assert '"compute": "tokens"' in instance.dumps()


# -- cycles, as before ---------------------------------------------------------------------

# Recorded from the commit before the token model (452b86d): the instance file of seed 7,
# HEFT's objective on it (generator seeded 0), the scenario's dump, and the env's first
# observations after reset(seed=3).
BEFORE = {
    "paper": (
        "23444853da2d0f6025b63de175740e3c5912a38e9f6ab935b94a6a40f78a438c",
        1.0045949136581427,
        "697c1f4e0b78716aed51e7882d430dd7be69778ad07de9e1f08e60e1dc6182da",
        "fe27716dbb2e6993f635df863ec853ac1c5acccf1ebad6298a83d0c91acc1c67",
    ),
    "contended": (
        "9bcade41eaec3184a6de7cb939201c6aac95db0b399a7a25bdbb5f428d12e95a",
        21.35798655714357,
        "9a97dee2a502ba88073d522ebe9b79c8966fc2bb6419953d86247db5482602d7",
        "b8fffafa8a43b259eb3f5fae5704ddaa94aa48abb17e0781b3103d78c37bcaec",
    ),
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("name", list(BEFORE))
def test_cycles_scenarios_are_byte_for_byte_as_before(name: str) -> None:
    instance_sha, heft_objective, scenario_sha, observation_sha = BEFORE[name]
    scenario = load_scenario(name)
    instance = sample_instance(scenario, np.random.default_rng(7))
    assert sha(instance.dumps().encode()) == instance_sha
    heft = SCHEDULERS["heft"](instance, np.random.default_rng(0))
    assert evaluate(instance, heft).objective == heft_objective  # exactly
    assert sha(json.dumps(scenario.model_dump(mode="json")).encode()) == scenario_sha
    env = OffloadEnv(scenario)
    env.reset(seed=3)
    assert sha(env.observations().tobytes()) == observation_sha


def test_cycles_tables_are_the_cycles_formula_exactly() -> None:
    sc = load_scenario("paper")
    instance = sample_instance(sc, np.random.default_rng(2))
    t = Tables(instance)
    for i, task in enumerate(instance.tasks):
        for j, s in enumerate(task.subtasks):
            for k, server in enumerate(sc.servers):
                if t.supports(i, j, k):
                    assert t.compute[i][j][k] == s.cycles * (1 / (server.ghz * 1e9))
                    assert t.cost[i][j][k] == s.cycles * (server.usd_per_ghz / 1e9)


# -- the environment -----------------------------------------------------------------------


def test_an_env_episode_in_tokens_mode() -> None:
    """Same observation width as the paper's; the work feature is the compute seconds on
    the cloud; a finished episode is a valid schedule."""
    env = OffloadEnv(TOKENS)
    assert layout_of(TOKENS) == layout_of(load_scenario("paper"))
    obs, _ = env.reset(seed=5)
    assert all(o["observation"].shape == (env.layout.size,) for o in obs.values())
    _, _, nodes, _ = env.layout.split(env.observations())
    t = env.ex.tables
    for i, task in enumerate(env.instance.tasks):
        for j in range(len(task.subtasks)):
            assert nodes[i, j, -2] == np.float32(t.compute[i][j][TOKENS.cloud])
    rng = np.random.default_rng(0)
    while env.agents:
        obs, *_ = env.step(random_walk(env, obs, rng))
    assert env.summary()["undone"] == 0
    assert violations(env.instance, env.ex.schedule()) == []


# -- errors through the command line ---------------------------------------------------------

BAD = {
    "a server without its timing": (
        "base: tokens\nservers:\n"
        "  - {name: edge-text, kind: edge, ghz: 2.0, usd_per_ghz: 0.01, modalities: [text],\n"
        "     prefill_ms_per_token: 1.0, decode_ms_per_token: 25}\n"
        "  - {name: cloud, kind: cloud, ghz: 10.0, usd_per_ghz: 0.03,\n"
        "     modalities: [text, image, audio, image+text, audio+text],\n"
        "     call_ms: 200, prefill_ms_per_token: 0.05, decode_ms_per_token: 10}\n",
        "compute 'tokens': server 'edge-text' needs call_ms",
    ),
    "a modality without its token ranges": (
        "base: tokens\nworkload:\n  sizes:\n    image: {output_tokens: null}\n",
        "compute 'tokens': modality 'image' needs output_tokens",
    ),
    "token timings with compute cycles": (
        "base: tokens\ncompute: cycles\n",
        "server 'edge-text' gives call_ms, prefill_ms_per_token, decode_ms_per_token, which "
        "only compute 'tokens' uses",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_scenario_show_refuses_in_one_line(case: str, tmp_path: Path) -> None:
    text, fragment = BAD[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert_refused(cli("scenario", "show", path), f"{path}: {fragment}")


def test_schedule_refuses_a_tokens_instance_without_counts(tmp_path: Path) -> None:
    data = json.loads(sample_instance(TOKENS, np.random.default_rng(0)).dumps())
    del data["tasks"][0]["subtasks"][0]["prompt_tokens"]
    path = tmp_path / "i.json"
    path.write_text(json.dumps(data))
    name = data["tasks"][0]["subtasks"][0]["name"]
    assert_refused(
        cli("schedule", path, "--policy", "heft"),
        f"task 0 subtask '{name}': compute 'tokens' needs its prompt_tokens and output_tokens",
    )


def test_the_runtime_sizes_a_request_in_tokens(tmp_path: Path) -> None:
    """A subtask's prompt is its rendered prompt at 4 bytes a token plus max_tokens per
    predecessor output; its output is max_tokens; the plan's compute follows the tokens."""
    example = Path(__file__).parents[1] / "examples" / "deployment.yaml"
    path = tmp_path / "deployment.yaml"
    path.write_text(example.read_text().replace("scenario: paper ", "scenario: tokens "))
    bound = load_deployment(path)
    text, cap = "Is the valve open?", bound.deployment.max_tokens
    instance = build_instance(bound, [Request(workflow="vqa", text=text)])
    (task,) = instance.tasks
    analysis = f"Plan the steps for this request.\nRequest: {text}\n"  # the default template
    assert task.subtasks[0].prompt_tokens == math.ceil(len(analysis.encode()) / 4)
    for s in task.subtasks:
        assert s.prompt_tokens == math.ceil(s.input_bits / 32)  # bytes / 4, outputs in
        assert s.prompt_tokens >= cap * len(s.preds) and s.output_tokens == cap
    edge = bound.scenario.servers[0]
    ms = edge.call_ms + edge.prefill_ms_per_token * task.subtasks[0].prompt_tokens
    assert Tables(instance).compute[0][0][0] == approx((ms + edge.decode_ms_per_token * cap) / 1e3)
