"""Every scheduler and every learner the registries hold, checked by name: a new one runs
these checks with no edit here (docs/architecture.md, "Where to add")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmoffload.model.instance import sample_instance
from llmoffload.model.scenario import BUILTIN, load_scenario
from llmoffload.model.validate import check
from llmoffload.schedulers.registry import SCHEDULERS, classic


@pytest.mark.parametrize("name", [s for s in SCHEDULERS if s != "optimal"])
@pytest.mark.parametrize("scenario", BUILTIN)
def test_every_scheduler_schedules_validly_and_repeats_itself(name: str, scenario: str) -> None:
    """On an instance of every built-in scenario its schedule passes the validator, which
    re-derives every number by separate code; the same seed gives the same schedule."""
    inst = sample_instance(load_scenario(scenario), np.random.default_rng(11), 3)
    run = classic(name, time_limit_s=1.0)
    first = run(inst, np.random.default_rng(5)).schedule
    check(inst, first)
    assert run(inst, np.random.default_rng(5)).schedule.order == first.order


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scenario") / "small.yaml"
    path.write_text("base: paper\nname: small\nworkload: {tasks: 2}\n")
    return path


# a warm start's expert kept to a few CP-SAT solves and one pass of cloning
CHEAP = {"expert_decisions": "10", "expert_time_limit_s": "0.5", "bc_epochs": "1"}


def learner_names() -> list[str]:
    pytest.importorskip("torch")
    from llmoffload.marl.registry import LEARNERS

    return list(LEARNERS)


@pytest.mark.parametrize("algo", learner_names())
def test_every_learner_trains_and_schedules_validly(algo: str, small: Path, tmp_path: Path) -> None:
    """Two episodes of training, then, as a policy, a schedule of a held-out instance the
    validator accepts (masked: two episodes teach no learner which actions are valid)."""
    from llmoffload.experiments.training import make_config, train, trained_policy
    from llmoffload.marl.ranges import settings_of
    from llmoffload.marl.registry import LEARNERS

    known = settings_of(LEARNERS[algo].config)
    config = make_config(algo, {k: v for k, v in CHEAP.items() if k in known}, "masked")
    sc = load_scenario(small)
    rows = train(algo, sc, 2, 0, tmp_path, config, progress=False, plot=False)
    assert len(rows) == 2
    inst = sample_instance(sc, np.random.default_rng(99))
    check(inst, trained_policy(tmp_path)(inst))
