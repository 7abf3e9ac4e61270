"""UCB-COMA and COMA: action selection, the critic, runs on disk, and learning for real."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import assert_clearly_better, evaluated, greedy_objectives, scenario_with
from typer.testing import CliRunner

from llmoffload.cli.app import app
from llmoffload.experiments.training import (
    EVAL,
    episode_seed,
    load_run,
    make_config,
    new_learner,
    run_episode,
    train,
)
from llmoffload.marl.algorithms.coma import Coma, ComaConfig
from llmoffload.marl.env import OffloadEnv
from llmoffload.marl.learner import Learner, ProtocolMask, Transition
from llmoffload.marl.numerics import Diagnostics
from llmoffload.marl.registry import LEARNERS
from llmoffload.model.execution import evaluate
from llmoffload.model.instance import sample_instance
from llmoffload.schedulers.heuristics import random_valid


@pytest.fixture(scope="module")
def env() -> OffloadEnv:
    return OffloadEnv(scenario_with(2))


def ucb_scores_by_hand(learner: Coma, per_agent: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """log pi(a) + eps sqrt(2 ln N_i / (n_i(a) + 1)) per agent and action, with eps
    linear from eps_start to eps_end over training (the config's real end points)."""
    c = learner.config
    eps = c.eps_start + (c.eps_end - c.eps_start) * learner.progress
    scores = []
    for i in range(len(per_agent)):
        with torch.no_grad():
            logp = learner.actors.agent(i, torch.as_tensor(per_agent[i])).numpy().astype(float)
        total = counts[i].sum()
        scores.append(
            [
                logp[a] + eps * math.sqrt(2 * math.log(total) / (counts[i][a] + 1))
                for a in range(len(logp))
            ]
        )
    return np.array(scores)


@pytest.mark.parametrize("progress", [0.25, 1.0])  # eps 0.775, then the real eps_end 0.1
def test_argmax_selection_picks_the_highest_score_computed_by_hand(
    env: OffloadEnv, progress: float
) -> None:
    learner = new_learner("ucb-coma", make_config("ucb-coma", {"select": "argmax"}), env, seed=0)
    assert (learner.config.eps_start, learner.config.eps_end) == (1.0, 0.1)  # as documented
    learner.progress = progress
    counts = np.random.default_rng(1).integers(0, 30, size=learner.counts.shape).astype(float)
    learner.counts = counts.copy()
    env.reset(seed=3)
    per_agent = env.state().reshape(2, -1)
    expected = list(ucb_scores_by_hand(learner, per_agent, counts).argmax(-1))
    idle = np.ones((2, env.layout.actions), np.int8)
    chosen = learner.act(per_agent, np.array([True, True]), idle, explore=True)
    assert list(chosen) == expected
    for i in range(2):  # the tried pair's count went up by one, nothing else moved
        diff = learner.counts[i] - counts[i]
        assert diff[expected[i]] == 1 and diff.sum() == 1


def test_default_selection_samples_the_softmax_of_the_scores(env: OffloadEnv) -> None:
    """Frequencies of 4000 draws match softmax(log pi + eps * bonus) computed by hand."""
    learner = new_learner("ucb-coma", make_config("ucb-coma", {}), env, seed=0)
    learner.progress = 0.5
    counts = np.random.default_rng(2).integers(0, 5, size=learner.counts.shape).astype(float)
    env.reset(seed=3)
    per_agent = env.state().reshape(2, -1)
    scores = ucb_scores_by_hand(learner, per_agent, counts)
    expected = np.exp(scores - scores.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    draws = 4000
    seen = np.zeros_like(expected)
    idle = np.ones((2, env.layout.actions), np.int8)
    for _ in range(draws):
        learner.counts = counts.copy()
        chosen = learner.act(per_agent, np.array([True, True]), idle, explore=True)
        seen[[0, 1], chosen] += 1
    # each frequency within 4.5 binomial standard errors of its probability
    se = np.sqrt(expected * (1 - expected) / draws)
    assert np.all(np.abs(seen / draws - expected) <= 4.5 * se + 1e-9)


def test_greedy_respects_the_mask_and_skips_inactive_agents(env: OffloadEnv) -> None:
    learner = new_learner("coma", make_config("coma", {}), env, seed=0)
    obs, _ = env.reset(seed=4)
    per_agent = env.state().reshape(2, -1)
    masks = np.stack([obs[a]["action_mask"] for a in env.possible_agents])
    chosen = learner.act(per_agent, np.array([True, False]), masks, explore=False)
    assert chosen[1] == -1
    assert masks[0, chosen[0]] == 1
    with torch.no_grad():
        logp = learner.actors.agent(0, torch.as_tensor(per_agent[0])).numpy()
    valid = np.flatnonzero(masks[0])
    assert chosen[0] == valid[np.argmax(logp[valid])]


def test_actor_is_a_product_of_subtask_and_location_heads(env: OffloadEnv) -> None:
    learner = new_learner("coma", make_config("coma", {}), env, seed=0)
    env.reset(seed=5)
    obs = torch.as_tensor(env.state().reshape(2, -1)[0])
    with torch.no_grad():
        joint = learner.actors.agent(0, obs).exp().reshape(env.layout.subtasks, env.layout.servers)
    assert float(joint.sum()) == pytest.approx(1.0, abs=1e-6)
    outer = joint.sum(1, keepdim=True) * joint.sum(0, keepdim=True)
    assert torch.allclose(joint, outer, atol=1e-6)


def test_critic_rows_ignore_own_action_and_see_the_others() -> None:
    env3 = OffloadEnv(scenario_with(3))
    learner = Coma(env3.layout, 3, ComaConfig(), np.random.default_rng(0))
    env3.reset(seed=0)
    state = torch.as_tensor(env3.state()).unsqueeze(0)
    base = learner.critic(state, torch.tensor([[1, 2, 3]]))
    own = learner.critic(state, torch.tensor([[7, 2, 3]]))  # agent 0 changes its action
    assert torch.equal(base[0, 0], own[0, 0])  # Q(S, (., A^-0)) does not see a_0
    assert not torch.equal(base[0, 1], own[0, 1])  # agent 1 sees it among A^-1
    gone = learner.critic(state, torch.tensor([[1, 2, -1]]))  # agent 2 inactive
    assert not torch.equal(base[0, 0], gone[0, 0])


def test_same_seed_same_csv_and_resume_evaluates_identically(tmp_path: Path) -> None:
    sc = scenario_with(2)
    config = make_config("ucb-coma", {"batch_size": "16"})
    a, b = tmp_path / "a", tmp_path / "b"
    train("ucb-coma", sc, 12, 7, a, config, progress=False)
    train("ucb-coma", sc, 12, 7, b, config, progress=False)
    assert (a / "episodes.csv").read_bytes() == (b / "episodes.csv").read_bytes()
    for name in ("checkpoint.pt", "reward_curve.png", "config.json"):
        assert (a / name).is_file()
    first = evaluated(a, 4)
    assert evaluated(a, 4) == first
    assert evaluated(b, 4) == first
    _, loaded, _ = load_run(a)
    _, twin, _ = load_run(b)
    assert loaded.steps == twin.steps > 0
    assert np.array_equal(loaded.counts, twin.counts)
    assert all(
        torch.equal(p, q)
        for p, q in zip(loaded.actors.parameters(), twin.actors.parameters(), strict=True)
    )


@pytest.mark.parametrize("algo", ["ucb-coma", "coma"])
def test_learning_is_real(algo: str, tmp_path: Path) -> None:
    """After 200 episodes on a 2-task paper scenario the greedy policy beats its untrained
    self and the valid-random scheduler by at least 15% on 20 held-out instances."""
    sc = scenario_with(2)
    config = make_config(algo, {})
    train(algo, sc, 200, 0, tmp_path, config, progress=False)
    _, trained, env = load_run(tmp_path)
    untrained = new_learner(algo, config, env, seed=0)
    after = greedy_objectives(env, trained, 20)
    before = greedy_objectives(env, untrained, 20)
    rand = []
    for e in range(20):
        inst = sample_instance(sc, np.random.default_rng(episode_seed(0, EVAL, e)))
        rand.append(evaluate(inst, random_valid(inst, np.random.default_rng(e))).objective)
    assert_clearly_better(after, before, margin=0.15)
    assert_clearly_better(after, np.array(rand), margin=0.15)


class Watched(OffloadEnv):
    """The env, keeping the longest run of one agent choosing the same refused action."""

    worst = 0

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        self.streak = [(-1, 0)] * len(self.possible_agents)  # (action, times in a row)
        return super().reset(seed, options)

    def play(self, actions: np.ndarray) -> tuple[np.ndarray, list[dict]]:
        out = super().play(actions)
        for i, info in enumerate(out[1]):
            if info:  # the agent acted
                last, times = self.streak[i]
                refused = info["run"] is None
                self.streak[i] = (
                    (actions[i], times + 1 if last == actions[i] else 1) if refused else (-1, 0)
                )
                self.worst = max(self.worst, self.streak[i][1])
        return out


@dataclass
class Frozen:
    """A learner that acts as in training but learns nothing."""

    learner: Learner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.learner, name)

    def observe(self, transition: Transition) -> Diagnostics:
        return {}


def exploring_episodes(learner: Learner, episodes: int) -> tuple[np.ndarray, int]:
    """Each held-out episode's reward on the 2-task scenario with the learner acting as in
    training (exploring, on the actions its protocol allows) but learning nothing, and
    the longest run of one agent choosing the same refused action step after step."""
    env = Watched(scenario_with(2))
    rewards = [
        run_episode(env, Frozen(learner), episode_seed(0, EVAL, e), True)["reward"]
        for e in range(episodes)
    ]
    return np.array(rewards), env.worst


# the learners that learn validity from the penalties under the paper protocol (their
# ``mask`` setting follows --protocol), each from scratch
PENALISED = [
    m
    for m, spec in LEARNERS.items()
    if issubclass(spec.config, ProtocolMask) and spec.defaults.get("init", "none") == "none"
]


@pytest.mark.parametrize("algo", PENALISED)
def test_no_learner_repeats_a_refused_action(algo: str, tmp_path: Path) -> None:
    """A trained policy acting as in training never picks the same refused action more
    than 3 times in a row, on 20 held-out instances: under the paper protocol an agent
    does not retry an action refused in the state it is still in."""
    train(algo, scenario_with(2), 30, 0, tmp_path, make_config(algo, {}), progress=False)
    _, trained, _ = load_run(tmp_path)
    assert exploring_episodes(trained, 20)[1] <= 3


def test_the_loop_check_can_fail(env: OffloadEnv) -> None:
    """A learner that ignores every mask and always asks for the last subtask, whose
    predecessors never run, is refused until the step limit: the check above sees it."""
    stubborn = new_learner("random", make_config("random", {}), env, 0)
    stubborn.act = lambda obs, active, masks, explore: np.where(active, masks.shape[1] - 1, -1)
    assert exploring_episodes(stubborn, 2)[1] == env.max_steps


def test_ucb_coma_beats_its_untrained_self_and_random_on_reward(tmp_path: Path) -> None:
    """After 150 episodes on a 2-task paper scenario (at most ~19 reward an episode),
    UCB-COMA's exploring reward on 20 held-out instances is at least 15 above its
    untrained self's and the paper's Random's (each about -30)."""
    train("ucb-coma", scenario_with(2), 150, 0, tmp_path, make_config("ucb-coma", {}), False)
    _, trained, env = load_run(tmp_path)
    after = exploring_episodes(trained, 20)[0]
    for algo in ("ucb-coma", "random"):
        before = exploring_episodes(new_learner(algo, make_config(algo, {}), env, 0), 20)[0]
        gain = after - before
        assert gain.mean() > 15.0
        assert gain.mean() > 2 * gain.std(ddof=1) / math.sqrt(len(gain))


def test_cli_train_evaluate_and_schedule_with_a_run(tmp_path: Path) -> None:
    runner = CliRunner()
    run = tmp_path / "run"
    sc_file = tmp_path / "two.yaml"
    sc_file.write_text(scenario_with(2).model_dump_json())  # JSON is valid YAML
    args = ["--algo", "coma", "--scenario", sc_file, "--episodes", 6, "--seed", 1, "--out", run]
    result = runner.invoke(app, ["train", *map(str, args), "--set", "batch_size=8"])
    assert result.exit_code == 0, result.output
    assert "trained coma for 6 episodes" in result.output
    lines = (run / "episodes.csv").read_text().splitlines()
    assert lines[0].startswith("episode,reward,steps,undone") and len(lines) == 7
    result = runner.invoke(app, ["evaluate", str(run), "--episodes", "3", "--time-limit", "5"])
    assert result.exit_code == 0, result.output
    assert "ratio to Optimal" in result.output
    inst = tmp_path / "inst.json"
    assert (
        runner.invoke(app, ["instance", "--scenario", str(sc_file), "--out", str(inst)]).exit_code
        == 0
    )
    result = runner.invoke(app, ["schedule", str(inst), "--policy", str(run), "--json"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["train", "--out", "X", "--set", "nonsense=1"], "no such setting"),
        (["train", "--out", "X", "--set", "lr=fast"], "not a float"),
        (["train", "--out", "X", "--set", "mask=maybe"], "not a bool"),
        (["train", "--out", "X", "--algo", "dqn"], "unknown algorithm"),
        (["evaluate", "missing-run"], "no trained run"),
    ],
)
def test_cli_learning_errors(tmp_path: Path, args: list[str], fragment: str) -> None:
    args = [str(tmp_path / a) if a in ("X", "missing-run") else a for a in args]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert fragment in result.output
    assert not (tmp_path / "X").exists()
