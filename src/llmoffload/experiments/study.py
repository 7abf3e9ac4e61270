"""The study beyond the paper: every learner, masked and rewarded by the objective itself,
on each scenario where scheduling matters, against the best classic scheduler and Optimal.

The paper's scenario leaves nothing to learn (a cost-blind scheduler is within 0.4% of
Optimal), so the study asks its question where classic schedulers fall short. Its runs
are sweep runs (``sweep.RunSpec``, cached and resumable alike); what it adds is the
statistics: per (seed, held-out instance) the objective as a ratio to Optimal's and to
the best classic's on the same instance, summarised by the interquartile mean (IQM)
with stratified-bootstrap 95% intervals (Agarwal et al., NeurIPS 2021) via rliable.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from llmoffload.errors import require
from llmoffload.experiments.sweep import REFERENCES, Budget, RunSpec, check_runs
from llmoffload.experiments.training import LOCKSTEP
from llmoffload.marl.registry import LEARNERS
from llmoffload.model.scenario import load_scenario, with_reward

SCENARIOS = ("dear-cloud", "slow-uplink", "contended")  # where scheduling matters
# Training episodes per scenario, for about the same number of agent decisions as the
# paper's 700 episodes of 5 tasks (~17,500): a contended episode is 20 tasks arriving
# one at a time, about 92 decisions in 92 steps, 18 times the steps of a 5-task episode.
EPISODES = {"dear-cloud": 700, "slow-uplink": 700, "contended": 190}
PROTOCOL = "masked"  # the learners act on valid actions only: the study is about placement
REWARD = "objective"  # the reward that pays what Optimal minimises
BOOTSTRAP_SEED = 0  # the same results give the same intervals
TARGET = 1.03  # the bar: the best learner's IQM ratio to Optimal at most this


@dataclass(frozen=True)
class Study:
    """What the study runs; the defaults are the full study."""

    scenarios: tuple[str, ...] = SCENARIOS
    methods: tuple[str, ...] = tuple(m for m in LEARNERS if m != "random")  # it learns nothing
    seeds: tuple[int, ...] = (0, 1, 2)
    episodes: int | None = None  # per scenario; None: EPISODES's (700 for a file)
    lockstep: int = LOCKSTEP
    eval_episodes: int = 50
    time_limit_s: float = 10.0  # Optimal, per held-out instance
    reps: int = 2000  # bootstrap resamples per interval: seconds, not minutes


QUICK_STUDY = Study(seeds=(0, 1), episodes=50, eval_episodes=5, time_limit_s=1.0, reps=500)


def plan(study: Study) -> list[RunSpec]:
    """Per scenario and seed, each learner under the masked protocol and each reference,
    at the scenario's own W and T_max; checked before any run starts."""
    specs = []
    for name in study.scenarios:
        budget = Budget(
            study.methods,
            study.seeds,
            episodes(study, name),
            study.lockstep,
            study.eval_episodes,
            study.time_limit_s,
        )
        check_runs(budget)
        scenario = with_reward(load_scenario(name), REWARD)
        # the scenario's own key order: it decides the instances drawn (see sweep.plan)
        base = json.dumps(scenario.model_dump(mode="json"))
        setting = (scenario.network.bandwidth_mhz, scenario.t_max_s, 0.0)
        specs += [
            RunSpec.of(method, PROTOCOL, setting, seed, budget, base)
            for seed in study.seeds
            for method in (*study.methods, *REFERENCES)
        ]
    return specs


def episodes(study: Study, scenario: str) -> int:
    """Training episodes on ``scenario``: the study's, else the scenario's default."""
    return study.episodes or EPISODES.get(scenario, 700)


def scenario_of(spec: RunSpec) -> str:
    """The name of the scenario a study run is on (W and T_max alone do not tell them apart)."""
    return json.loads(spec.scenario)["name"]


# -- the statistics -------------------------------------------------------------------------

Scores = dict[str, np.ndarray]  # method -> (seeds, held-out instances)


@dataclass(frozen=True)
class Estimate:
    """An interquartile mean and its 95% bootstrap interval."""

    iqm: float
    low: float
    high: float


Held = dict[str, dict[int, np.ndarray]]  # method -> seed -> one value per held-out instance


def held(results: list[dict[str, Any]], key: str = "objective") -> Held:
    """Per method and seed, what each run recorded under ``key`` for each held-out
    instance, in the seed's order (runs that did not record it left out)."""
    out: Held = {}
    for result in results:
        spec = result["spec"]
        if key in result["held_out"]:
            out.setdefault(spec["method"], {})[spec["seed"]] = np.array(result["held_out"][key])
    return out


def ratios(objs: Held, reference: str | Held) -> Scores:
    """Each method's objective over a reference's on the same (seed, instance): another
    method's (``reference`` names it) or each method's own yardstick (a ``Held`` of the
    same shape, e.g. the search its run ran beside it). A row per seed that both have;
    runs of one seed share their held-out instances, so the ratio is paired and the
    spread between instances drops out."""
    refs = {m: objs.get(reference, {}) for m in objs} if isinstance(reference, str) else reference
    out = {}
    for method, by_seed in objs.items():
        ref = refs.get(method, {})
        rows = [by_seed[seed] / ref[seed] for seed in sorted(by_seed) if seed in ref]
        if rows:
            out[method] = np.array(rows)
    return out


def rliable() -> tuple[ModuleType, ModuleType]:
    """rliable's library and metrics, imported only when the study needs them."""
    require("study", "--study")
    from rliable import library, metrics

    return library, metrics


@contextmanager
def seeded() -> Iterator[None]:
    """rliable 1.2 draws its resamples from numpy's global generator (its ``random_state``
    does not reach them): seed that for the call, and put it back after."""
    state = np.random.get_state()
    np.random.seed(BOOTSTRAP_SEED)
    try:
        yield
    finally:
        np.random.set_state(state)


def iqm_intervals(scores: Scores, reps: int) -> dict[str, Estimate]:
    """Per method, the IQM over all (seed, instance) ratios with its stratified-bootstrap
    95% interval. The held-out instances are a sample of the scenario, not a fixed
    benchmark, so the instance slots are resampled too (``task_bootstrap``), and the seeds
    within each slot."""
    library, metrics = rliable()
    with seeded():
        points, cis = library.get_interval_estimates(
            scores, lambda s: np.array([metrics.aggregate_iqm(s)]), task_bootstrap=True, reps=reps
        )
    return {
        m: Estimate(float(points[m][0]), float(cis[m][0, 0]), float(cis[m][1, 0])) for m in scores
    }


def profiles(
    scores: Scores, taus: np.ndarray, reps: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per method, the fraction of (seed, instance) runs whose ratio is at most tau, at each
    of ``taus``, and its 95% bootstrap band (2, len(taus))."""
    library, _ = rliable()
    with seeded():
        return library.create_performance_profile(
            scores,
            taus,
            custom_profile_func=lambda s, t: (s.reshape(-1, 1) <= t).mean(axis=0),
            task_bootstrap=True,
            reps=reps,
        )
