"""Benchmark the environment and the learners on the paper scenario.

    python benchmarks/bench_learning.py [--algos ucb-coma coma ...] [--seeds 0 1 2]
        [--episodes 700] [--eval-episodes 50] [--out runs/bench]

Prints env steps per second, the decision latency of one joint action, and,
per method, the wall time of a training run and its greedy objective on
held-out instances as ratios to HEFT and to Optimal (mean and spread over seeds).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from llmoffload.env import OffloadEnv
from llmoffload.methods import LEARNERS
from llmoffload.scenario import load_scenario
from llmoffload.training import evaluate_run, make_config, new_learner, train


def env_steps_per_second(seconds: float = 3.0) -> float:
    """Joint steps per second with uniformly random valid actions (5 agents)."""
    env = OffloadEnv(load_scenario("paper"))
    rng = np.random.default_rng(0)
    steps, began = 0, time.perf_counter()
    obs, _ = env.reset(seed=0)
    while time.perf_counter() - began < seconds:
        if not env.agents:
            obs, _ = env.reset()
        actions = {a: int(rng.choice(np.flatnonzero(obs[a]["action_mask"]))) for a in env.agents}
        obs, *_ = env.step(actions)
        steps += 1
    return steps / (time.perf_counter() - began)


def decision_ms(algo: str, repeats: int = 300) -> float:
    """Milliseconds for one joint action of the paper's 5 agents (exploring)."""
    env = OffloadEnv(load_scenario("paper"))
    learner = new_learner(algo, make_config(algo, {}), env, seed=0)
    obs, _ = env.reset(seed=0)
    state = env.state().reshape(len(env.possible_agents), -1)
    masks = np.stack([obs[a]["action_mask"] for a in env.possible_agents])
    active = np.ones(len(env.possible_agents), bool)
    began = time.perf_counter()
    for _ in range(repeats):
        learner.act(state, active, masks, True)
    return (time.perf_counter() - began) / repeats * 1e3


def spread(values: list[float]) -> str:
    """Mean ± sd over seeds; NaN when a method leaves episodes undone (the paper's Random)."""
    if any(np.isnan(values)):
        return "NaN (undone)"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {sd:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=list(LEARNERS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=700)
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--time-limit", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = parser.parse_args()

    print(f"env: {env_steps_per_second():,.0f} joint steps/s (5 agents, random valid actions)")
    for algo in args.algos:
        print(f"{algo}: {decision_ms(algo):.2f} ms per joint action (5 agents)")

    scenario = load_scenario("paper")
    print(
        f"\n{args.episodes} training episodes, {args.eval_episodes} held-out episodes, "
        f"seeds {args.seeds}"
    )
    print("| method | train s (mean) | last-50 reward | ratio to HEFT | ratio to Optimal |")
    print("|---|---:|---:|---:|---:|")
    for algo in args.algos:
        walls, rewards, to_heft, to_opt = [], [], [], []
        for seed in args.seeds:
            run = args.out / f"{algo}-seed{seed}"
            began = time.perf_counter()
            rows = train(algo, scenario, args.episodes, seed, run, make_config(algo, {}))
            walls.append(time.perf_counter() - began)
            rewards.append(statistics.fmean(r["reward"] for r in rows[-50:]))
            ev = evaluate_run(run, args.eval_episodes, args.time_limit)
            to_heft.append(float(np.mean([r["objective"] / r["heft"] for r in ev])))
            to_opt.append(float(np.mean([r["objective"] / r["optimal"] for r in ev])))
        print(
            f"| {algo} | {statistics.fmean(walls):.0f} | {spread(rewards)} "
            f"| {spread(to_heft)} | {spread(to_opt)} |"
        )


if __name__ == "__main__":
    main()
