"""MADDPG: the straight-through Gumbel-softmax, the per-agent gradient, target updates,
masks, checkpoints, determinism, and learning for real."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_clearly_better, evaluated, greedy_objectives, scenario_with

from llmoffload.experiments.training import (
    EVAL,
    episode_seed,
    load_run,
    make_config,
    new_learner,
    run_episode,
    train,
)
from llmoffload.marl.algorithms.maddpg import Maddpg, MaddpgConfig, gumbel_softmax_hard
from llmoffload.marl.env import OffloadEnv
from llmoffload.marl.numerics import masked_one_hot
from llmoffload.marl.registry import LEARNERS
from llmoffload.model.execution import evaluate
from llmoffload.model.instance import sample_instance
from llmoffload.schedulers.heuristics import random_valid


@pytest.fixture(scope="module")
def env3() -> OffloadEnv:
    return OffloadEnv(scenario_with(3))


def states(env: OffloadEnv, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` global states and masks met along random-valid episodes, as a batch."""
    rng = np.random.default_rng(0)
    seen, masks = [], []
    seed = 0
    while len(seen) < count:
        obs, _ = env.reset(seed=seed)
        seed += 1
        while env.agents and len(seen) < count:
            seen.append(env.state())
            masks.append(np.stack([env.action_mask(i) for i in range(len(env.possible_agents))]))
            step = {a: int(rng.choice(np.flatnonzero(obs[a]["action_mask"]))) for a in env.agents}
            obs, *_ = env.step(step)
    return torch.as_tensor(np.stack(seen)), torch.as_tensor(np.stack(masks))


def test_registered_with_its_settings() -> None:
    assert LEARNERS["maddpg"].config is MaddpgConfig
    config = make_config("maddpg", {"reg": "0.1", "mask": "true", "target_update": "5"})
    assert (config.reg, config.mask, config.target_update) == (0.1, True, 5.0)


def test_gumbel_softmax_is_torchs_straight_through_estimator() -> None:
    """Same noise as torch.nn.functional.gumbel_softmax(hard=True): the same one-hot
    forward value and the same gradient, which is the soft sample's."""
    logits = torch.randn(64, 20, generator=torch.Generator().manual_seed(1)).requires_grad_()
    weights = torch.randn(64, 20, generator=torch.Generator().manual_seed(2))
    mine = gumbel_softmax_hard(logits, torch.Generator().manual_seed(7), temperature=0.5)
    with torch.random.fork_rng():
        torch.manual_seed(7)
        theirs = torch.nn.functional.gumbel_softmax(logits, tau=0.5, hard=True)
    assert torch.equal(mine, theirs)
    assert set(mine.unique().tolist()) == {0.0, 1.0} and torch.equal(mine.sum(-1), torch.ones(64))
    (grad_mine,) = torch.autograd.grad((mine * weights).sum(), logits)
    (grad_theirs,) = torch.autograd.grad((theirs * weights).sum(), logits)
    noise = torch.empty_like(logits).exponential_(generator=torch.Generator().manual_seed(7))
    soft = torch.softmax((logits - noise.log()) / 0.5, -1)  # Gumbel noise is -log Exp(1)
    (grad_soft,) = torch.autograd.grad((soft * weights).sum(), logits)
    assert grad_mine.abs().sum() > 0
    assert torch.allclose(grad_mine, grad_theirs) and torch.allclose(grad_mine, grad_soft)
    assert torch.equal(mine, torch.nn.functional.one_hot(soft.argmax(-1), 20).float())


def test_gumbel_samples_follow_pi() -> None:
    """The hard sample of log-probabilities is a draw from pi (Gumbel-max)."""
    pi = torch.tensor([0.6, 0.3, 0.1])
    draws = gumbel_softmax_hard(pi.log().expand(20000, 3), torch.Generator().manual_seed(0))
    assert torch.allclose(draws.mean(0), pi, atol=0.015)


def test_only_the_own_action_carries_gradient(env3: OffloadEnv) -> None:
    """Agent i's loss moves agent i's actor only, though the critic sees every action."""
    learner = new_learner("maddpg", MaddpgConfig(), env3, seed=0)
    state, masks = states(env3, 16)
    active = torch.ones(16, 3)
    for i in range(3):
        learner.actors.zero_grad(set_to_none=True)
        learner.actor_losses(state, active, masks)[0][:, i].sum().backward()
        for j in range(3):  # agent j's slice of every stacked weight
            grads = [p.grad[j] for p in learner.actors.parameters() if p.grad is not None]
            moved = sum(float(g.abs().sum()) for g in grads)
            assert (moved > 0) == (i == j), (i, j)


def test_the_critic_sees_every_action_and_the_state(env3: OffloadEnv) -> None:
    learner = new_learner("maddpg", MaddpgConfig(), env3, seed=0)
    state, _ = states(env3, 2)
    base = learner.critic(state, learner.rows(masked_one_hot(torch.tensor([[1, 2, 3]] * 2), 20)))
    other = learner.critic(state, learner.rows(masked_one_hot(torch.tensor([[1, 2, 4]] * 2), 20)))
    gone = learner.critic(state, learner.rows(masked_one_hot(torch.tensor([[1, 2, -1]] * 2), 20)))
    assert base.shape == (2, 3)
    assert (base != other).all() and (base != gone).all()  # every row sees agent 2's action
    assert (base[0] != base[1]).all()  # and the state
    assert torch.equal(
        masked_one_hot(torch.tensor([[-1, 2]]), 4), torch.tensor([[[0.0] * 4, [0, 0, 1, 0]]])
    )


def perturbed(learner: Maddpg) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Move the online networks away from their targets; return (targets, online) copies."""
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in [*learner.actors.parameters(), *learner.critic.parameters()]:
            p.add_(torch.randn(p.shape, generator=gen))
    targets = [*learner.target_actors.parameters(), *learner.target_critic.parameters()]
    online = [*learner.actors.parameters(), *learner.critic.parameters()]
    return [t.detach().clone() for t in targets], [p.detach().clone() for p in online]


def test_soft_target_update_by_hand(env3: OffloadEnv) -> None:
    learner = new_learner("maddpg", MaddpgConfig(target_update=0.01), env3, seed=0)
    before, online = perturbed(learner)
    learner.update_targets()
    after = [*learner.target_actors.parameters(), *learner.target_critic.parameters()]
    assert len(after) == len(online) > 0
    for t0, p, t1 in zip(before, online, after, strict=True):
        assert not torch.allclose(t0, p)
        assert torch.allclose(t1, 0.99 * t0 + 0.01 * p, rtol=0, atol=1e-6)


def test_hard_target_update_every_n_updates(env3: OffloadEnv) -> None:
    learner = new_learner("maddpg", MaddpgConfig(target_update=3), env3, seed=0)
    before, online = perturbed(learner)
    targets = [*learner.target_actors.parameters(), *learner.target_critic.parameters()]
    for updates in (1, 2):
        learner.updates = updates
        learner.update_targets()
        assert all(torch.equal(t, t0) for t, t0 in zip(targets, before, strict=True))
    learner.updates = 3
    learner.update_targets()
    assert all(torch.equal(t, p) for t, p in zip(targets, online, strict=True))


def test_sampling_never_picks_a_disallowed_action(env3: OffloadEnv) -> None:
    """Every explored and learned-from sample lies in the allowed actions; allowed every
    action, some samples fall outside the same masks (so the check has teeth)."""
    learner = new_learner("maddpg", MaddpgConfig(), env3, seed=0)
    state, _ = states(env3, 40)
    rng = np.random.default_rng(1)
    masks = torch.as_tensor((rng.random((40, 3, 20)) < 0.15).astype(np.int8))
    masks[:, :, 0] = torch.as_tensor(rng.random((40, 3)) < 0.5, dtype=torch.int8)
    masks[masks.sum(-1) == 0, 5] = 1  # at least one valid action per agent

    def outside(allowed: torch.Tensor) -> int:
        """Samples outside ``masks`` when acting and learning on ``allowed``."""
        count = 0
        for _ in range(10):
            for obs, m, ok in zip(state.view(40, 3, -1), masks, allowed, strict=True):
                chosen = learner.act(obs.numpy(), np.ones(3, bool), ok.numpy(), explore=True)
                count += int((m[torch.arange(3), torch.as_tensor(chosen)] == 0).sum())
            logits = learner.actors.log_pi(state.view(40, 3, -1), allowed)
            sample = gumbel_softmax_hard(logits, learner.generator).argmax(-1)
            count += int((masks.gather(-1, sample.unsqueeze(-1)) == 0).sum())
        return count

    assert outside(masks) == 0
    assert outside(torch.ones_like(masks)) > 0


def test_greedy_acts_on_valid_actions_and_skips_inactive_agents(env3: OffloadEnv) -> None:
    learner = new_learner("maddpg", MaddpgConfig(), env3, seed=0)
    obs, _ = env3.reset(seed=4)
    per_agent = env3.state().reshape(3, -1)
    masks = np.stack([obs[a]["action_mask"] for a in env3.possible_agents])
    chosen = learner.act(per_agent, np.array([True, True, False]), masks, explore=False)
    assert chosen[2] == -1
    for i in range(2):
        with torch.no_grad():
            logp = learner.actors.agent(i, torch.as_tensor(per_agent[i])).numpy()
        valid = np.flatnonzero(masks[i])
        assert chosen[i] == valid[np.argmax(logp[valid])]


def test_a_loaded_learner_evaluates_identically(tmp_path: Path) -> None:
    env = OffloadEnv(scenario_with(2))
    config = MaddpgConfig(batch_size=16, update_every=4)
    learner = new_learner("maddpg", config, env, seed=3)
    for e in range(6):
        run_episode(env, learner, e, True)
    assert learner.updates > 0
    torch.save(learner.state_dict(), tmp_path / "maddpg.pt")
    twin = new_learner("maddpg", config, env, seed=99)
    twin.load_state_dict(torch.load(tmp_path / "maddpg.pt", weights_only=False))
    assert (twin.steps, twin.updates) == (learner.steps, learner.updates)
    for name in ("actors", "critic", "target_actors", "target_critic"):
        mine, theirs = getattr(learner, name).state_dict(), getattr(twin, name).state_dict()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert np.array_equal(greedy_objectives(env, twin, 4), greedy_objectives(env, learner, 4))


def test_same_seed_same_csv(tmp_path: Path) -> None:
    sc = scenario_with(2)
    config = make_config("maddpg", {"batch_size": "16", "update_every": "4"})
    a, b = tmp_path / "a", tmp_path / "b"
    train("maddpg", sc, 8, 7, a, config, progress=False)
    train("maddpg", sc, 8, 7, b, config, progress=False)
    assert (a / "episodes.csv").read_bytes() == (b / "episodes.csv").read_bytes()
    assert evaluated(a, 2) == evaluated(b, 2)
    _, loaded, _ = load_run(a)
    assert loaded.updates > 0


def test_learning_is_real(tmp_path: Path) -> None:
    """After 200 episodes on a 2-task paper scenario the greedy policy beats its untrained
    self and the valid-random scheduler by at least 15% on 20 held-out instances."""
    sc = scenario_with(2)
    config = make_config("maddpg", {})
    train("maddpg", sc, 200, 0, tmp_path, config, progress=False)
    _, trained, env = load_run(tmp_path)
    untrained = new_learner("maddpg", config, env, seed=0)
    after = greedy_objectives(env, trained, 20)
    before = greedy_objectives(env, untrained, 20)
    rand = []
    for e in range(20):
        inst = sample_instance(sc, np.random.default_rng(episode_seed(0, EVAL, e)))
        rand.append(evaluate(inst, random_valid(inst, np.random.default_rng(e))).objective)
    assert_clearly_better(after, before, margin=0.15)
    assert_clearly_better(after, np.array(rand), margin=0.15)
