"""Shared test helpers: small scenarios and statistical checks that learning happened."""

from __future__ import annotations

import math

import numpy as np

from llmoffload.env import OffloadEnv
from llmoffload.instance import sample_instance
from llmoffload.learner import Learner
from llmoffload.scenario import Scenario, load_scenario
from llmoffload.training import EVAL, episode_seed, run_episode


def scenario_with(tasks: int) -> Scenario:
    sc = load_scenario("paper")
    return sc.model_copy(update={"workload": sc.workload.model_copy(update={"tasks": tasks})})


def greedy_objectives(env: OffloadEnv, learner: Learner, episodes: int) -> np.ndarray:
    """Objective of the greedy policy (over valid actions) on held-out instances."""
    out = []
    for e in range(episodes):
        seed = episode_seed(0, EVAL, e)
        inst = sample_instance(env.scenario, np.random.default_rng(seed))
        out.append(run_episode(env, learner, seed, False, inst)["objective"])
    return np.array(out)


def assert_clearly_better(better: np.ndarray, worse: np.ndarray, margin: float) -> None:
    """Paired check: mean gain above ``margin`` of the worse mean and above 2 standard errors."""
    gain = worse - better
    assert gain.mean() > margin * worse.mean()
    assert gain.mean() > 2 * gain.std(ddof=1) / math.sqrt(len(gain))
