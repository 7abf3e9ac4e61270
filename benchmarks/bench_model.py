"""Benchmark the system model and the classic schedulers on the paper scenario.

    python benchmarks/bench_model.py [--instances 100] [--time-limit 10]
        [--scenario paper [dear-cloud ...]] [--ratios-only]

Prints execution-model throughput, HEFT/Optimal solve time and Optimal's proven
gap at 1, 2 and 5 tasks per episode, then per ``--scenario`` every scheduler's
objective as a ratio to Optimal, "best-classic" among them (on each instance the
best classic schedule: the bar a learner must clear), and Optimal's lower bound.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from tqdm import tqdm

from llmoffload.model.execution import Execution, Tables, evaluate
from llmoffload.model.instance import sample_instance
from llmoffload.model.scenario import Scenario, load_scenario
from llmoffload.schedulers.heuristics import heft
from llmoffload.schedulers.optimal import solve
from llmoffload.schedulers.registry import SCHEDULERS


def throughput(seconds: float = 3.0) -> float:
    """Subtask dispatches per second, stepping the model one dispatch at a time."""
    instance = sample_instance(load_scenario("paper"), np.random.default_rng(0), 50)
    tables = Tables(instance)
    order = heft(instance, np.random.default_rng(0))
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        ex = Execution(tables)
        for d in order:
            ex.timing(*d)  # what a scheduler or environment asks before committing
            ex.dispatch(*d)
        ex.schedule()
        done += len(order)
    return done / (time.perf_counter() - began)


def solve_times(sizes: tuple[int, ...], repeats: int, time_limit: float) -> None:
    print("\n| tasks | subtasks | HEFT ms | Optimal s (mean / max) | proven | max gap |")
    print("|---:|---:|---:|---:|---:|---:|")
    scenario = load_scenario("paper")
    for n in sizes:
        heft_ms, opt_s, proven, gaps, subtasks = [], [], 0, [], []
        for seed in range(repeats):
            inst = sample_instance(scenario, np.random.default_rng(seed), n)
            subtasks.append(sum(len(t.subtasks) for t in inst.tasks))
            began = time.perf_counter()
            heft(inst, np.random.default_rng(seed))
            heft_ms.append((time.perf_counter() - began) * 1e3)
            sol = solve(inst, time_limit_s=time_limit)
            opt_s.append(sol.wall_s)
            proven += sol.proven
            gaps.append(sol.gap)
        print(
            f"| {n} | {statistics.fmean(subtasks):.1f} | {statistics.fmean(heft_ms):.2f} "
            f"| {statistics.fmean(opt_s):.2f} / {max(opt_s):.2f} | {proven}/{repeats} "
            f"| {max(gaps):.2%} |"
        )


def ratios(scenario: Scenario, instances: int, time_limit: float) -> None:
    """Every classic scheduler's objective as a ratio to Optimal's (the best schedule
    CP-SAT finds in ``time_limit``), and Optimal's lower bound as one too."""
    names = [n for n in SCHEDULERS if n != "optimal"]
    objective: dict[str, list[float]] = {n: [] for n in [*names, "optimal", "lower bound"]}
    proven = 0
    for seed in tqdm(range(instances), desc=scenario.name, unit="inst"):
        inst = sample_instance(scenario, np.random.default_rng(10_000 + seed))
        sol = solve(inst, time_limit_s=time_limit)
        proven += sol.proven
        objective["optimal"].append(sol.schedule.objective)
        objective["lower bound"].append(sol.bound)
        for name in names:
            order = SCHEDULERS[name](inst, np.random.default_rng(seed))
            objective[name].append(evaluate(inst, order).objective)
    print(
        f"\n{instances} {scenario.name} instances ({scenario.workload.tasks} tasks each), "
        f"CP-SAT {time_limit:g} s, {proven} proven"
    )
    print("| scheduler | objective mean ± sd | ratio to Optimal: mean ± sd | min | max |")
    print("|---|---:|---:|---:|---:|")
    for name, values in objective.items():
        r = [v / o for v, o in zip(values, objective["optimal"], strict=True)]
        print(
            f"| {name} | {statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f} "
            f"| {statistics.fmean(r):.4f} ± {statistics.stdev(r):.4f} | {min(r):.4f} "
            f"| {max(r):.4f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=10, help="instances per size")
    parser.add_argument("--time-limit", type=float, default=10.0)
    parser.add_argument(
        "--scenario", nargs="+", default=["paper"], help="built-in names or YAML files"
    )
    parser.add_argument("--ratios-only", action="store_true", help="skip the first two tables")
    args = parser.parse_args()
    if not args.ratios_only:
        print(f"execution model: {throughput():,.0f} subtask dispatches/s")
        solve_times((1, 2, 5), args.repeats, args.time_limit)
    for name in args.scenario:
        ratios(load_scenario(name), args.instances, args.time_limit)


if __name__ == "__main__":
    main()
