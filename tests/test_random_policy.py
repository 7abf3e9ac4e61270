"""The paper's Random: uniform over all actions (invalid ones included), reproducible,
and worse than a trained method on reward."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from helpers import scenario_with
from typer.testing import CliRunner

from llmoffload.cli.app import app
from llmoffload.errors import OffloadError
from llmoffload.experiments.training import (
    TRAIN,
    episode_seed,
    load_run,
    make_config,
    new_learner,
    run_episode,
    train,
)
from llmoffload.marl.env import OffloadEnv
from llmoffload.marl.learner import Learner, Transition
from llmoffload.marl.numerics import Diagnostics
from llmoffload.model.scenario import load_scenario


@pytest.fixture(scope="module")
def env() -> OffloadEnv:
    return OffloadEnv(scenario_with(2))


def random_policy(env: OffloadEnv, seed: int = 0) -> Learner:
    return new_learner("random", make_config("random", {}), env, seed)


class Recording:
    """Wraps a learner; keeps every action of the active agents and whether the env
    would have executed it."""

    def __init__(self, inner: Learner, env: OffloadEnv) -> None:
        self.inner, self.env, self.config, self.progress = inner, env, inner.config, 0.0
        self.actions: list[int] = []
        self.valid: list[int] = []

    def act(
        self, obs: np.ndarray, active: np.ndarray, masks: np.ndarray, explore: bool
    ) -> np.ndarray:
        actions = self.inner.act(obs, active, masks, explore)
        rows = np.flatnonzero(active[0])  # run_episode: one episode, lockstep row 0
        self.actions += actions[0, rows].tolist()
        self.valid += self.env.masks()[rows, actions[0, rows]].tolist()
        return actions

    def observe(self, transition: Transition) -> Diagnostics:
        return self.inner.observe(transition)


@pytest.mark.parametrize("explore", [True, False])
def test_uniform_over_all_actions_in_both_modes(env: OffloadEnv, explore: bool) -> None:
    """20 000 draws over A = 20 actions: each frequency within 0.01 of 1/20 (about 6.5
    standard errors), whatever the masks say; inactive agents get -1."""
    learner = random_policy(env)
    actions = env.layout.actions
    masks = np.zeros((5, actions), np.int8)
    masks[:, 0] = 1  # only action 0 valid: Random must not care
    active = np.array([True, True, True, True, False])
    obs = np.zeros((5, env.layout.size), np.float32)
    draws = np.stack([learner.act(obs, active, masks, explore) for _ in range(5000)])
    assert (draws[:, 4] == -1).all()
    freq = np.bincount(draws[:, :4].ravel(), minlength=actions) / draws[:, :4].size
    assert len(freq) == actions and (freq > 0).all()
    assert np.abs(freq - 1 / actions).max() < 0.01


def test_it_takes_invalid_actions_and_pays_for_them(env: OffloadEnv) -> None:
    """In real episodes most of Random's actions are invalid (masked), they are penalised as
    violations, and greedy episodes too can end with subtasks undone (objective NaN)."""
    rec = Recording(random_policy(env), env)
    summaries = [
        run_episode(env, rec, episode_seed(0, TRAIN, e), explore=e % 2 == 0) for e in range(20)
    ]
    invalid = 1 - np.mean(rec.valid)
    assert 0.3 < invalid < 1.0  # it draws from all actions: valid ones too, but not mostly
    assert sum(s["violations_repeat"] + s["violations_precedence"] for s in summaries) > 0
    undone = [s for s in summaries[1::2] if s["undone"] > 0]  # greedy (explore=False) episodes
    assert undone and all(math.isnan(s["objective"]) for s in undone)


def test_same_seed_same_actions_and_a_checkpoint_resumes_the_stream(env: OffloadEnv) -> None:
    masks = np.ones((2, env.layout.actions), np.int8)
    obs = np.zeros((2, env.layout.size), np.float32)
    active = np.array([True, True])

    def draws(learner: Learner, n: int = 50) -> np.ndarray:
        return np.stack([learner.act(obs, active, masks, True) for _ in range(n)])

    a, b = random_policy(env, seed=3), random_policy(env, seed=3)
    assert np.array_equal(draws(a), draws(b))
    assert not np.array_equal(draws(random_policy(env, seed=4)), draws(random_policy(env, seed=3)))
    state = a.state_dict()
    restored = random_policy(env, seed=99)
    restored.load_state_dict(state)
    assert np.array_equal(draws(restored), draws(a))


def test_its_reward_is_below_a_trained_cs_ucb(tmp_path: Path) -> None:
    """Paper scenario (5 tasks), 30 episodes each: Random's mean episode reward lies below
    that of CS-UCB's last 30 of 100 training episodes by more than 50 (observed: about -100
    vs +45) and more than 4 standard errors."""
    sc = load_scenario("paper")
    rows = train("cs-ucb", sc, 100, 0, tmp_path / "cs", make_config("cs-ucb", {}), progress=False)
    trained = np.array([r["reward"] for r in rows[-30:]])
    env = OffloadEnv(sc)
    learner = random_policy(env)
    rand = np.array(
        [run_episode(env, learner, episode_seed(0, TRAIN, e), True)["reward"] for e in range(30)]
    )
    gap = trained.mean() - rand.mean()
    se = math.sqrt(trained.var(ddof=1) / 30 + rand.var(ddof=1) / 30)
    assert gap > 50 and gap > 4 * se


def test_train_load_and_evaluate_a_random_run(tmp_path: Path) -> None:
    """Random trains (learning nothing) and evaluates without crashing; its unfinished
    episodes show as NaN objectives and ratios."""
    sc_file = tmp_path / "two.yaml"
    sc_file.write_text(scenario_with(2).model_dump_json())
    run = tmp_path / "run"
    runner = CliRunner()
    args = ["train", "--algo", "random", "--scenario", str(sc_file), "--episodes", "5"]
    result = runner.invoke(app, [*args, "--out", str(run)])
    assert result.exit_code == 0, result.output
    ckpt, learner, _ = load_run(run)
    assert ckpt["config"] == {"mask": False} and set(learner.state_dict()) == {"rng"}
    result = runner.invoke(app, ["evaluate", str(run), "--episodes", "3", "--time-limit", "5"])
    assert result.exit_code == 0, result.output
    assert "ratio to Optimal" in result.output and "nan" in result.output


def test_set_on_random_is_a_clear_error() -> None:
    with pytest.raises(OffloadError, match="random has no such setting"):
        make_config("random", {"lr": "0.1"})
