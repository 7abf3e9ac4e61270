"""Benchmark the learners on a scenario (default: the paper's), under both protocols.

    python benchmarks/bench_learning.py [--algos ucb-coma coma ...] [--seeds 0 1 2]
        [--protocols paper masked] [--episodes 700] [--eval-episodes 50]
        [--lockstep 8] [--scenario paper] [--workers 2] [--out runs/bench]

Per protocol and method, over the seeds (on ``--scenario``, a built-in name or a
file): the wall time of a training run, the mean reward of its last 50 episodes
(mean ± sd, and the worst seed), the change over training (least-squares trend,
seeds pooled, with its 95% interval), undone subtasks per episode in the last 50,
and the greedy objective on held-out instances as ratios to HEFT and to Optimal.
Runs go to a process pool: with more than one worker the wall times include the
others' load. The speed of the environment and of acting is
``benchmarks/bench_speed.py``'s.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from llmoffload.experiments.stats import trend
from llmoffload.experiments.training import PROTOCOLS, evaluate_run, make_config, train
from llmoffload.marl.registry import LEARNERS
from llmoffload.model.scenario import load_scenario


def one_run(algo: str, protocol: str, seed: int, args: argparse.Namespace) -> dict:
    """Train and evaluate one run; its numbers."""
    torch.set_num_threads(1)
    run = args.out / f"{algo}-{protocol}-seed{seed}"
    began = time.perf_counter()
    config = make_config(algo, {}, protocol)
    rows = train(
        algo,
        load_scenario(args.scenario),
        args.episodes,
        seed,
        run,
        config,
        progress=False,
        lockstep=args.lockstep,
    )
    wall = time.perf_counter() - began
    ev = evaluate_run(run, args.eval_episodes, args.time_limit, progress=False)
    return {
        "wall": wall,
        "curve": [r["reward"] for r in rows],
        "undone": statistics.fmean(r["undone"] for r in rows[-50:]),
        "to_heft": float(np.mean([r["objective"] / r["heft"] for r in ev])),
        "to_opt": float(np.mean([r["objective"] / r["optimal"] for r in ev])),
    }


def spread(values: list[float], digits: int = 4) -> str:
    """Mean ± sd over seeds; NaN when a method leaves episodes undone (the paper's Random)."""
    if any(np.isnan(values)):
        return "undone"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {sd:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=list(LEARNERS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    parser.add_argument("--episodes", type=int, default=700)
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--time-limit", type=float, default=10.0)
    parser.add_argument("--lockstep", type=int, default=1, help="episodes played at once")
    parser.add_argument("--scenario", default="paper", help="built-in name or YAML file")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = parser.parse_args()

    cases = [(a, p, s) for p in args.protocols for a in args.algos for s in args.seeds]
    with ProcessPoolExecutor(args.workers) as pool:
        futures = {case: pool.submit(one_run, *case, args) for case in cases}
        done = {case: future.result() for case, future in futures.items()}

    print(
        f"{args.episodes} training episodes, {args.eval_episodes} held-out episodes, "
        f"seeds {args.seeds}, {args.lockstep} at once, {args.workers} worker(s), "
        f"scenario {args.scenario}"
    )
    for protocol in args.protocols:
        print(f"\n### protocol: {protocol}\n")
        print(
            "| method | train s | last-50 reward | worst seed | change over training "
            "| undone (last 50) | ratio to HEFT | ratio to Optimal |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for algo in args.algos:
            runs = [done[(algo, protocol, s)] for s in args.seeds]
            last = [statistics.fmean(r["curve"][-50:]) for r in runs]
            change, half = trend(np.array([r["curve"] for r in runs]))
            print(
                f"| {algo} | {statistics.fmean(r['wall'] for r in runs):.0f} "
                f"| {spread(last, 1)} | {min(last):.1f} | {change:.1f} ± {half:.1f} "
                f"| {statistics.fmean(r['undone'] for r in runs):.2f} "
                f"| {spread([r['to_heft'] for r in runs])} "
                f"| {spread([r['to_opt'] for r in runs])} |"
            )


if __name__ == "__main__":
    main()
