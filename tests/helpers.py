"""Shared test helpers: small scenarios and statistical checks that learning happened."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from llmoffload.experiments.sweep import YARDSTICKS
from llmoffload.experiments.training import EVAL, episode_seed, evaluate_run, run_episode
from llmoffload.marl.env import OffloadEnv
from llmoffload.marl.learner import Learner
from llmoffload.model.instance import Subtask, sample_instance
from llmoffload.model.scenario import Scenario, load_scenario


def evaluated(run: Path, episodes: int) -> list[dict[str, float]]:
    """A run's held-out evaluation (CP-SAT 5 s) less what it times (planning seconds and
    the search given them), which moves with the machine's load: what a rerun repeats."""
    timed = {"plan_s", *YARDSTICKS}
    rows = evaluate_run(run, episodes, time_limit_s=5, progress=False)
    return [{k: v for k, v in row.items() if k not in timed} for row in rows]


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


SIGMA2_W = 10**-7.3  # -43 dBm, the paper's noise


def approx(value: float) -> object:
    return pytest.approx(value, rel=1e-12, abs=1e-12)


def distance_for_snr(snr: float) -> float:
    """d with 0.3 W * d^-3 / sigma2 == snr, i.e. d = (0.3 / (sigma2 snr))^(1/3)."""
    return (0.3 / (SIGMA2_W * snr)) ** (1 / 3)


def sub(name: str, modality: str, d_bits: float, r_bits: float, preds: list[int]) -> Subtask:
    """A hand-made subtask with the paper's 1900 cycles per input bit."""
    return Subtask(
        name=name,
        modality=modality,
        input_bits=d_bits,
        output_bits=r_bits,
        cycles=1900 * d_bits,
        preds=preds,
    )
