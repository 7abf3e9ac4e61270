"""gnn-sched and the expert's warm start: the replay is the expert's schedule, cloning
reaches it on a tiny scenario, the policy only ever dispatches validly, and a seed fixes
a run's every number."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from filelock import FileLock
from helpers import scenario_with
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from llmoffload.cli.app import app
from llmoffload.errors import OffloadError
from llmoffload.experiments import expert
from llmoffload.experiments.expert import demonstrations
from llmoffload.experiments.training import (
    TRAIN,
    episode_seed,
    expert_seeds,
    make_config,
    new_learner,
    train,
    trained_policy,
)
from llmoffload.marl.env import OffloadEnv
from llmoffload.marl.graph import GraphView
from llmoffload.marl.imitation import agent_states, clone_actors
from llmoffload.model.execution import evaluate
from llmoffload.model.instance import load_instance, sample_instance
from llmoffload.model.scenario import Scenario, load_scenario, parse_scenario, with_reward
from llmoffload.model.validate import check
from llmoffload.schedulers.optimal import solve

TINY = with_reward(scenario_with(2), "objective")


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test solves its own expert instances into its own cache."""
    monkeypatch.setenv("LLMOFFLOAD_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def seeds(n: int) -> list[int]:
    return [episode_seed(0, TRAIN, e) for e in range(n)]


def test_the_expert_replay_is_the_cp_sat_schedule(cache: Path) -> None:
    (instance, order), *_ = demonstrations(TINY, seeds(2), 5.0, progress=False)
    solution = solve(instance, time_limit_s=5.0)
    assert solution.proven  # so the search was not cut and is the same every time
    assert order == solution.schedule.order
    assert evaluate(instance, order) == solution.schedule  # same runs, times, objective
    view = GraphView(instance)  # gnn-sched's view steps the same model
    runs = [view.step(view.node_of(d.task, d.subtask), d.server) for d in order]
    assert runs == solution.schedule.runs
    env = OffloadEnv(TINY)  # the per-agent replay of the paper's learners: the same
    agent_states(env, [(instance, order)])
    assert env.ex.schedule() == solution.schedule
    assert len(list(cache.glob("expert/*.json"))) == 2
    again = demonstrations(TINY, seeds(2), 5.0, progress=False)  # from the cache
    assert again[0][1] == order


def test_runs_started_at_once_share_the_expert_solves(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While another run holds an instance's lock, this one solves the next instance and
    then waits for the other's file instead of solving that instance again."""
    first, second = seeds(2)
    path = expert.cache_dir() / f"{expert.key(TINY.model_dump(mode='json'), first, 5.0)}.json"
    path.parent.mkdir(parents=True)
    held, original = threading.Event(), expert.expert_order

    def other_run() -> None:  # holds ``first``'s lock while it solves it
        with FileLock(f"{path}.lock"):
            held.set()
            time.sleep(1.0)
            order = original(TINY.model_dump(mode="json"), first, 5.0)
            path.write_text(json.dumps({"format": expert.EXPERT_FORMAT, "order": order}))

    solved_here = []
    monkeypatch.setattr(
        expert,
        "expert_order",
        lambda sc, seed, limit: solved_here.append(seed) or original(sc, seed, limit),
    )
    threading.Thread(target=other_run).start()
    held.wait()
    demos = demonstrations(TINY, [first, second], 5.0, progress=False)
    assert solved_here == [second]
    assert demos[0][1] == solve(demos[0][0], time_limit_s=5.0).schedule.order


def test_the_experts_budget_counts_dispatch_decisions() -> None:
    """The expert solves the training stream's first instances until their subtasks reach
    the budget: a scenario of 20 tasks gets about a quarter as many as one of 5."""
    found = {}
    for name in ("paper", "contended"):
        sc = load_scenario(name)
        chosen = expert_seeds(sc, 0, 600)
        assert chosen == seeds(len(chosen))
        instances = [sample_instance(sc, np.random.default_rng(s)) for s in chosen]
        sizes = [sum(len(t.subtasks) for t in inst.tasks) for inst in instances]
        assert sum(sizes[:-1]) < 600 <= sum(sizes)
        found[name] = len(chosen)
    assert 3 <= found["paper"] / found["contended"] <= 5


def test_bc_clones_the_expert_on_a_tiny_scenario() -> None:
    demos = demonstrations(TINY, seeds(6), 5.0, progress=False)
    config = make_config("gnn-sched", {"bc_epochs": "150", "bc_lr": "3e-3"})
    learner = new_learner("gnn-sched", config, OffloadEnv(TINY), 0)
    agreement = learner.imitate(demos)
    assert agreement > 0.95
    learner.config.samples = 0  # the greedy schedule alone, no sampling search
    for instance, order in demos:
        expert = evaluate(instance, order).objective
        assert evaluate(instance, learner.plan(instance)).objective == pytest.approx(expert)


def test_planning_keeps_the_best_of_greedy_and_sampled_schedules() -> None:
    """With ``samples`` draws beside it the plan is never worse than the greedy one, is
    the same every time, and leaves the training generator alone; an untrained policy
    (near uniform) finds something better by sampling on most instances."""
    sc = scenario_with(8)
    learner = new_learner("gnn-sched", make_config("gnn-sched", {}), OffloadEnv(sc), 0)
    state = learner.generator.get_state()
    better = 0
    for seed in range(5):
        instance = sample_instance(sc, np.random.default_rng(seed))
        learner.config.samples = 0
        greedy = evaluate(instance, learner.plan(instance)).objective
        learner.config.samples = 16
        sampled = learner.plan(instance)
        assert sampled == learner.plan(instance)
        assert evaluate(instance, sampled).objective <= greedy
        better += evaluate(instance, sampled).objective < greedy
    assert better >= 3
    assert torch.equal(learner.generator.get_state(), state)


def test_bc_warm_starts_the_paper_learners_per_agent() -> None:
    demos = demonstrations(TINY, seeds(4), 5.0, progress=False)
    env = OffloadEnv(TINY)
    states = agent_states(env, demos)
    _, masks, labels = states
    acting = labels >= 0
    # every label is a valid action of its agent, and each step has one per acting agent
    assert masks[(*acting.nonzero(), labels[acting])].all()
    assert (acting.sum(1) >= 1).all()
    for algo in ("ucb-coma-bc", "mappo-bc"):
        config = make_config(algo, {"bc_epochs": "200"}, "masked")
        learner = new_learner(algo, config, env, 0)
        untrained = replace(config, bc_epochs=1, bc_lr=1e-9)  # agreement as it starts
        before = clone_actors(learner.actors, states, untrained, learner.generator)
        after = clone_actors(learner.actors, states, config, learner.generator)
        assert after > 0.9 > before


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), tasks=st.integers(1, 8))
def test_the_policy_never_dispatches_invalidly(seed: int, tasks: int) -> None:
    sc = scenario_with(tasks)
    learner = new_learner("gnn-sched", make_config("gnn-sched", {}), OffloadEnv(sc), seed)
    instance = sample_instance(sc, np.random.default_rng(seed))
    order = learner.plan(instance)  # Execution.dispatch raises on an invalid pair
    check(instance, evaluate(instance, order))  # and the validator agrees, by its own code
    learner.train_on(instance)  # sampling, too, stays on valid pairs (it would raise)


def test_same_seed_same_csv_and_the_run_schedules(tmp_path: Path) -> None:
    settings_ = {"expert_decisions": "9", "bc_epochs": "3", "group": "4"}
    config = make_config("gnn-sched", settings_)
    for out in ("a", "b"):
        train("gnn-sched", TINY, 8, 3, tmp_path / out, config, progress=False, plot=False)
    csv = (tmp_path / "a" / "episodes.csv").read_text()
    assert csv == (tmp_path / "b" / "episodes.csv").read_text()
    assert len(csv.splitlines()) == 1 + 8
    policy = trained_policy(tmp_path / "a")
    bigger = sample_instance(scenario_with(7), np.random.default_rng(1))  # any task count
    check(bigger, policy(bigger))


def test_a_learner_without_warm_start_refuses_init() -> None:
    with pytest.raises(OffloadError, match="maddpg has no such setting"):
        make_config("maddpg", {"init": "bc"})
    with pytest.raises(OffloadError, match="init=clone: choose from none, bc"):
        new_learner("ucb-coma", make_config("ucb-coma", {"init": "clone"}), OffloadEnv(TINY), 0)


def test_a_trained_run_schedules_from_the_command_line(tmp_path: Path) -> None:
    run, inst = tmp_path / "run", tmp_path / "inst.json"
    runner = CliRunner()
    args = ["train", "--algo", "gnn-sched", "--episodes", "4", "--out", str(run)]
    args += ["--set", "expert_decisions=1", "--set", "bc_epochs=2", "--workers", "1"]
    assert runner.invoke(app, args).exit_code == 0
    made = runner.invoke(
        app, ["instance", "--scenario", "paper", "--seed", "4", "--out", str(inst)]
    )
    assert made.exit_code == 0
    result = runner.invoke(app, ["schedule", str(inst), "--policy", str(run), "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    instance = load_instance(inst)
    expected = evaluate(instance, trained_policy(run)(instance).order)
    assert shown["objective"] == pytest.approx(expected.objective)
    assert [tuple(d) for d in shown["order"]] == [tuple(d) for d in expected.order]
    # trained with 4 servers, it plans a deployment of 13 (12 edges and a 2-slot cloud)
    wide = sample_instance(twelve_edges(), np.random.default_rng(0), 8)
    schedule = trained_policy(run)(wide)
    check(wide, schedule)
    assert len({r.server for r in schedule.runs}) > 4


def twelve_edges() -> Scenario:
    """contended with each of its three edges four times over."""
    data = load_scenario("contended").model_dump(mode="json")
    edges = [s for s in data["servers"] if s["kind"] == "edge"]
    data["servers"] = [{**edges[k % 3], "name": f"edge-{k}"} for k in range(12)] + [
        data["servers"][-1]
    ]
    return parse_scenario(data, "twelve edges")
