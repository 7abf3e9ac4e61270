"""CS-UCB: the constraint filter holds, the UCB index by hand, and learning for real."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_clearly_better, evaluated, greedy_objectives, scenario_with

from llmoffload.experiments.training import (
    TRAIN,
    episode_seed,
    load_run,
    make_config,
    new_learner,
    run_episode,
    train,
)
from llmoffload.marl.algorithms.cs_ucb import CsUcb
from llmoffload.marl.env import OffloadEnv
from llmoffload.marl.learner import Transition
from llmoffload.marl.numerics import Diagnostics
from llmoffload.model.instance import sample_instance


@pytest.fixture(scope="module")
def env() -> OffloadEnv:
    return OffloadEnv(scenario_with(2))


def fresh(env: OffloadEnv, **settings: str) -> CsUcb:
    return new_learner("cs-ucb", make_config("cs-ucb", settings), env, seed=0)


def hand_arms(env: OffloadEnv, i: int) -> np.ndarray:
    """The arm of each of agent i's actions from the instance itself: modality * S + server."""
    s, mods = env.layout.servers, env.scenario.modalities
    subs = env.instance.tasks[i].subtasks
    return np.array(
        [
            mods.index(subs[j].modality) * s + k if j < len(subs) else -1
            for j in range(env.layout.subtasks)
            for k in range(s)
        ]
    )


def mid_episode(env: OffloadEnv, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Observations and masks one step in (first subtask of every task on the cloud),
    where several subtasks are ready at once."""
    env.reset(seed=seed)
    cloud = env.scenario.cloud
    obs, *_ = env.step({a: cloud for a in env.agents})  # action (0, cloud)
    masks = np.stack([obs[a]["action_mask"] for a in env.possible_agents])
    return env.state().reshape(len(env.possible_agents), -1), masks


class Recording:
    """Wraps a learner; checks every chosen action against the mask it was chosen under."""

    def __init__(self, inner: CsUcb) -> None:
        self.inner, self.config, self.progress = inner, inner.config, 0.0
        self.decisions = self.down_seen = 0

    def act(
        self, obs: np.ndarray, active: np.ndarray, masks: np.ndarray, explore: bool
    ) -> np.ndarray:
        actions = self.inner.act(obs, active, masks, explore)
        rows = np.nonzero(active)
        assert (masks[(*rows, actions[rows])] == 1).all()
        assert (actions[~active] == -1).all()
        self.decisions += int(active.sum())
        _, servers, _, _ = self.inner.layout.split(obs)
        self.down_seen += int((servers[..., -1] == 0).any())  # last server feature: up
        return actions

    def observe(self, transition: Transition) -> Diagnostics:
        return self.inner.observe(transition)


def test_never_picks_an_action_its_filter_rejects() -> None:
    """With edges failing 30% of the time, neither training nor greedy episodes ever break
    a constraint, and every task finishes."""
    env = OffloadEnv(scenario_with(3), failure_prob=0.3)
    rec = Recording(fresh(env))
    for e in range(60):
        summary = run_episode(env, rec, episode_seed(0, TRAIN, e), explore=e % 3 != 2)
        for kind in ("repeat", "precedence", "modality", "failure"):
            assert env.violations[kind] == 0, kind
        assert summary["undone"] == 0
    assert rec.decisions > 500 and rec.down_seen > 50  # failures happened while it acted
    assert rec.inner.pulls.sum() > 0


def test_ucb_index_computed_by_hand(env: OffloadEnv) -> None:
    """Over 200 hand-set tables, the pick is the valid action whose arm has the highest
    mean + delta sqrt(ln t / L), and greedy's the highest mean."""
    learner = fresh(env, delta="0.7")
    obs, masks = mid_episode(env, seed=0)
    assert (masks.sum(-1) > 2).all()  # a real choice among several valid actions
    rng = np.random.default_rng(1)
    arms = [hand_arms(env, i) for i in range(2)]
    bonus_decided = 0
    for _ in range(200):
        learner.means = rng.uniform(1.0, 2.0, learner.means.shape)
        learner.pulls = rng.integers(1, 40, learner.pulls.shape)
        t = learner.pulls.sum()
        chosen = learner.act(obs, np.array([True, True]), masks, explore=True)
        greedy = learner.act(obs, np.array([True, True]), masks, explore=False)
        for i in range(2):
            valid = np.flatnonzero(masks[i])
            mean, pulls = learner.means[arms[i][valid]], learner.pulls[arms[i][valid]]
            ucb = [m + 0.7 * math.sqrt(math.log(t) / n) for m, n in zip(mean, pulls, strict=True)]
            assert chosen[i] == valid[int(np.argmax(ucb))]
            assert greedy[i] == valid[int(np.argmax(mean))]
            bonus_decided += chosen[i] != greedy[i]
        assert learner.pulls.sum() == t  # acting learns nothing
    assert bonus_decided > 40  # the exploration term changed the pick often


def test_untried_arms_first_then_the_lowest_index_on_ties(env: OffloadEnv) -> None:
    learner = fresh(env)
    obs, masks = mid_episode(env, seed=0)
    arms = hand_arms(env, 0)
    valid = np.flatnonzero(masks[0])
    learner.pulls[:] = 5
    learner.means[:] = 1.0
    learner.means[arms[valid[0]]] = 100.0  # a tried arm far ahead of the others
    untried = valid[-1]
    assert arms[untried] != arms[valid[0]]
    learner.pulls[arms[untried]] = 0
    both = np.array([True, False])
    assert list(learner.act(obs, both, masks, explore=True)) == [untried, -1]
    assert learner.act(obs, both, masks, explore=False)[0] == valid[0]  # greedy: no bonus
    # all tried, equal statistics: the lowest valid action index wins
    learner.pulls[:], learner.means[:] = 5, 1.0
    assert learner.act(obs, both, masks, explore=True)[0] == valid[0]
    learner.pulls[:] = 0  # all untried: again the lowest index
    assert learner.act(obs, both, masks, explore=True)[0] == valid[0]


def test_observe_keeps_a_running_mean_per_arm_pooled_across_agents(env: OffloadEnv) -> None:
    learner = fresh(env)
    obs, masks = mid_episode(env, seed=0)
    cloud = env.scenario.cloud  # subtask 0 of both tasks is text: one shared arm
    arm = hand_arms(env, 0)[cloud]
    assert arm == hand_arms(env, 1)[cloud]
    for rewards in ([1.0, 2.0], [4.0, 0.0]):
        learner.observe(
            Transition(
                state=obs.ravel(),
                actions=np.array([cloud, cloud]),
                active=np.array([True, True]),
                masks=masks,
                rewards=np.array(rewards),
                next_state=obs.ravel(),
                next_active=np.array([True, True]),
                next_masks=masks,
                terminal=False,
            )
        )
    assert learner.pulls[arm] == 4 and learner.pulls.sum() == 4
    assert learner.means[arm] == pytest.approx(7.0 / 4)


def test_learning_is_real_and_the_run_round_trips(env: OffloadEnv, tmp_path: Path) -> None:
    """After 200 training episodes the greedy policy beats its untrained self (which sends
    every subtask to the lowest-index server that serves it: the edges) by at least 30% on
    20 held-out instances; observed: about 48%."""
    config = make_config("cs-ucb", {})
    rows = train("cs-ucb", env.scenario, 200, 0, tmp_path, config, progress=False)
    assert all(r["violations_modality"] == r["violations_precedence"] == 0 for r in rows)
    ckpt, trained, loaded_env = load_run(tmp_path)
    assert ckpt["config"] == {"delta": math.sqrt(2.0)}
    instances = (
        sample_instance(env.scenario, np.random.default_rng(episode_seed(0, TRAIN, e)))
        for e in range(200)
    )  # every decision dispatches one subtask, so t counts the instances' subtasks
    assert trained.pulls.sum() == sum(len(t.subtasks) for i in instances for t in i.tasks)
    after = greedy_objectives(loaded_env, trained, 20)
    before = greedy_objectives(loaded_env, fresh(loaded_env), 20)
    assert_clearly_better(after, before, margin=0.3)
    first = evaluated(tmp_path, 3)
    assert evaluated(tmp_path, 3) == first
    assert all(np.isfinite(r["objective"]) for r in first)


def test_an_active_agent_without_a_valid_action_is_an_error(env: OffloadEnv) -> None:
    """Never a silent pick of a rejected action: the env guarantees a valid one (the cloud)."""
    obs, masks = mid_episode(env, seed=0)
    masks[1] = 0
    learner = fresh(env)
    assert learner.act(obs, np.array([True, False]), masks, explore=True)[1] == -1
    with pytest.raises(ValueError, match="no valid action"):
        learner.act(obs, np.array([True, True]), masks, explore=False)
