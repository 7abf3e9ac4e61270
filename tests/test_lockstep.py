"""Episodes in lockstep (``training.run_episodes``): what playing K episodes through one
forward guarantees, against playing them one at a time."""

from __future__ import annotations

from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest
from helpers import scenario_with

from llmoffload.experiments.training import (
    TRAIN,
    episode_seed,
    make_config,
    new_learner,
    run_episodes,
    train,
)
from llmoffload.marl.env import OffloadEnv
from llmoffload.marl.learner import Learner, Transition
from llmoffload.marl.numerics import Diagnostics
from llmoffload.marl.registry import LEARNERS
from llmoffload.model.scenario import load_scenario

SEEDS = [episode_seed(3, TRAIN, e) for e in range(5)]


def envs(k: int, tasks: int = 3) -> list[OffloadEnv]:
    return [OffloadEnv(scenario_with(tasks), failure_prob=0.2) for _ in range(k)]


# every learner that acts in the env, Random aside (it draws even when greedy)
ACTING = [m for m, spec in LEARNERS.items() if not spec.config.planner and m != "random"]


@pytest.mark.parametrize("algo", ACTING)
def test_greedy_episodes_play_the_same_together_or_alone(algo: str) -> None:
    """Greedy, every draw of an episode (instance, failures, step order) comes from its
    own seed, and one forward over K episodes gives each the actions it gets alone."""
    together = envs(len(SEEDS))
    learner = new_learner(algo, make_config(algo, {}), together[0], seed=1)
    batch = run_episodes(together, learner, SEEDS, explore=False)
    alone = [run_episodes(envs(1), learner, [s], explore=False)[0] for s in SEEDS]
    assert batch == alone
    runs = [env.ex.runs for env in together]
    single = envs(1)
    for seed, want in zip(SEEDS, runs, strict=True):
        run_episodes(single, learner, [seed], explore=False)
        assert single[0].ex.runs == want


class Recorder:
    """Acts greedily (so that acting does not depend on the batch) and keeps every
    transition it is given, in the order given."""

    def __init__(self, inner: Learner) -> None:
        self.inner, self.config, self.progress = inner, inner.config, 0.0
        self.seen: list[Transition] = []

    def act(
        self, obs: np.ndarray, active: np.ndarray, masks: np.ndarray, explore: bool
    ) -> np.ndarray:
        return self.inner.act(obs, active, masks, False)

    def observe(self, transition: Transition) -> Diagnostics:
        self.seen.append(transition)
        return {}


def same(a: Transition, b: Transition) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(astuple(a)[:-1], astuple(b)[:-1], strict=True))


@pytest.mark.parametrize("protocol", ["paper", "masked"])
def test_each_episode_gets_its_own_transitions_step_by_step(protocol: str) -> None:
    """The transitions of lockstep episode e, tagged ``env=e``, are those it gives alone
    (under the paper protocol, with its own memory of refused actions); within a step
    they come in episode order; an episode that ended gives none."""
    together = envs(len(SEEDS), tasks=1)
    config = make_config("ucb-coma", {}, protocol)
    inner = new_learner("ucb-coma", config, together[0], seed=2)
    batch = Recorder(inner)
    summaries = run_episodes(together, batch, SEEDS, explore=True)
    for e, seed in enumerate(SEEDS):
        alone = Recorder(inner)
        run_episodes(envs(1, tasks=1), alone, [seed], explore=True)
        mine = [t for t in batch.seen if t.env == e]
        assert len(mine) == len(alone.seen) == summaries[e]["steps"]
        assert all(same(a, b) for a, b in zip(mine, alone.seen, strict=True))
    order = [t.env for t in batch.seen]
    step = [order[:i].count(e) for i, e in enumerate(order)]  # the step each belongs to
    assert list(zip(step, order, strict=True)) == sorted(zip(step, order, strict=True))
    if protocol == "masked":  # greedy on valid actions: as many steps as its DAG's nodes
        assert len({s["steps"] for s in summaries}) > 1


def test_mappo_keeps_one_trajectory_per_episode_and_updates_between_batches() -> None:
    """GAE runs along one episode: MAPPO keeps each lockstep episode's steps apart, and
    updates only when no episode is under way (here: after all three)."""
    together = envs(3)
    learner = new_learner("mappo", make_config("mappo", {"rollout_steps": "1000"}), together[0], 0)
    summaries = run_episodes(together, learner, SEEDS[:3], explore=True)
    assert sorted(learner.rollouts) == [0, 1, 2]
    for e, steps in learner.rollouts.items():
        assert len(steps) == summaries[e]["steps"]
        assert [s["end"] for s in steps] == [0.0] * (len(steps) - 1) + [1.0]
    eager = new_learner("mappo", make_config("mappo", {"rollout_steps": "1"}), together[0], 0)
    run_episodes(together, eager, SEEDS[:3], explore=True)
    assert eager.updates == 1 and eager.rollouts == {}


def test_training_in_lockstep_writes_every_episode_in_order(tmp_path: Path) -> None:
    """11 episodes 4 at a time: blocks of 4, 4 and 3, each episode's own seed."""
    sc = load_scenario("paper")
    rows = train(
        "cs-ucb", sc, 11, 5, tmp_path, make_config("cs-ucb", {}), progress=False, lockstep=4
    )
    assert [r["episode"] for r in rows] == list(range(11))
    assert '"lockstep": 4' in (tmp_path / "config.json").read_text()
