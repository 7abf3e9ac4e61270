"""The learner contracts (``marl/learner.py``), the shared numerics (``marl/numerics.py``)
and the updates' diagnostics written beside a run's episodes.

Parametrised over the registry: a learner added there is checked without editing this file.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from llmoffload.experiments.training import is_planner, make_config, new_learner, train
from llmoffload.marl.env import OffloadEnv
from llmoffload.marl.learner import Imitation, LearnerConfig, ProtocolMask
from llmoffload.marl.numerics import (
    descend,
    entropy,
    explained_variance,
    masked_one_hot,
    ppo_diagnostics,
)
from llmoffload.marl.ranges import settings_of
from llmoffload.marl.registry import LEARNERS
from llmoffload.model.scenario import load_scenario

TINY = load_scenario("paper").model_copy(
    update={"workload": load_scenario("paper").workload.model_copy(update={"tasks": 2})}
)


@pytest.mark.parametrize("algo", list(LEARNERS))
def test_each_learner_offers_what_its_config_declares(algo: str) -> None:
    """A planner plans and trains on instances; any other acts and observes; a config that
    warm-starts offers imitate; the protocol sets the mask of a ProtocolMask config only;
    a declaration is never a setting."""
    cls = LEARNERS[algo].config
    assert issubclass(cls, LearnerConfig)
    assert "planner" not in settings_of(cls)
    for protocol in ("paper", "masked"):
        config = make_config(algo, {}, protocol)
        want = protocol == "masked" if isinstance(config, ProtocolMask) else True
        assert config.masked is want
    learner = new_learner(algo, make_config(algo, {}), OffloadEnv(TINY), 0)
    kind = ("plan", "train_on", "imitate") if cls.planner else ("act", "observe")
    assert is_planner(learner) is cls.planner
    assert all(callable(getattr(learner, name)) for name in kind)
    if issubclass(cls, Imitation):
        assert callable(learner.imitate)  # pyright: ignore[reportAttributeAccessIssue]


def test_init_is_checked_when_the_config_is_made() -> None:
    with pytest.raises(Exception, match="init=clone: choose from none, bc"):
        make_config("coma", {"init": "clone"})


def test_entropy_and_one_hot_by_hand() -> None:
    """Uniform over 4: log 4; a sure action: 0. Action -1 (inactive): a zero row."""
    logp = torch.log(torch.tensor([[0.25] * 4, [1.0, 0.0, 0.0, 0.0]]))
    h = entropy(logp.exp(), logp.clamp(min=-1e9))
    assert h.tolist() == pytest.approx([math.log(4), 0.0])
    assert masked_one_hot(torch.tensor([2, -1]), 3).tolist() == [[0, 0, 1], [0, 0, 0]]


def test_ppo_diagnostics_by_hand() -> None:
    """Ratios 1, e^0.5, e^-0.5 with clip 0.2: the last two are cut; KL = mean of
    (r - 1) - log r. The second sample weighted out: only the others count."""
    old = torch.zeros(3)
    new = torch.tensor([0.0, 0.5, -0.5])
    kl = [(math.exp(x) - 1) - x for x in (0.0, 0.5, -0.5)]
    out = ppo_diagnostics(new, old, 0.2)
    assert out["approx_kl"] == pytest.approx(sum(kl) / 3)
    assert out["clip_fraction"] == pytest.approx(2 / 3)
    out = ppo_diagnostics(new, old, 0.2, torch.tensor([1.0, 0.0, 1.0]))
    assert out["approx_kl"] == pytest.approx((kl[0] + kl[2]) / 2)
    assert out["clip_fraction"] == pytest.approx(1 / 2)


def test_explained_variance_by_hand() -> None:
    target = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(target, target) == 1.0
    assert explained_variance(torch.full((4,), 2.5), target) == pytest.approx(0.0)
    # residuals (0.5, -0.5, 0.5, -0.5): variance 0.25 of the targets' 1.25
    assert explained_variance(
        target - torch.tensor([0.5, -0.5, 0.5, -0.5]), target
    ) == pytest.approx(0.8)
    assert math.isnan(explained_variance(target, torch.ones(4)))


def test_unclipped_descend_is_a_plain_adam_step() -> None:
    """grad_clip=None: exactly zero_grad, backward, step (behaviour cloning's step)."""
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    x = torch.randn(5, 3) * 100  # a large gradient, which a clip would have cut
    opt_a, opt_b = torch.optim.Adam(a.parameters()), torch.optim.Adam(b.parameters())
    descend(opt_a, a(x).square().sum(), None)
    opt_b.zero_grad()
    b(x).square().sum().backward()
    opt_b.step()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize(
    ("algo", "keys"),
    [
        ("ucb-coma", ["critic_loss", "actor_loss", "entropy", "explained_variance"]),
        ("mappo", ["actor_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"]),
        ("maddpg", ["critic_loss", "actor_loss", "entropy"]),
        ("cs-ucb", []),
    ],
)
def test_updates_csv_has_a_row_per_update(tmp_path: Path, algo: str, keys: list[str]) -> None:
    """updates.csv: one row per update the learner counted, its episode and its keys."""
    settings = {"rollout_steps": "20"} if algo == "mappo" else {}
    train(algo, TINY, 12, 0, tmp_path, make_config(algo, settings), progress=False, plot=False)
    with open(tmp_path / "updates.csv") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        assert reader.fieldnames is not None
        assert reader.fieldnames[: 1 + len(keys)] == ["episode", *keys]
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert len(rows) == ckpt["learner"].get("updates", 0)
    episodes = [int(r["episode"]) for r in rows]
    assert episodes == sorted(episodes) and all(0 <= e < 12 for e in episodes)
    if keys:
        assert all(np.isfinite(float(r["actor_loss"])) for r in rows)
        assert 0 < float(rows[0]["entropy"]) <= math.log(TINY_ACTIONS)


TINY_ACTIONS = OffloadEnv(TINY).layout.actions
