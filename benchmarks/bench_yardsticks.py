"""The references every learner is measured against, measured themselves (issue 29).

    python benchmarks/bench_yardsticks.py [--part search exact scale] [--instances 20]
        [--exact-limit 10] [--contended-instances 20] [--contended-limit 60]
        [--scale-instances 3] [--scale-limit 60]
        [--bins 64]

- search: on contended's held-out instances (the stream evaluation draws from, seed 0),
  the local search at 0.5 s and 2 s per instance as a ratio to best classic (target:
  at most 0.88 at 0.5 s), and how many evaluations a second it makes (incremental
  re-timing; target at least 10,000 at 20 tasks) beside full evaluations a second.
- exact: Optimal (CP-SAT hinted by the search, bound the best of CP-SAT's and the LP's)
  on dear-cloud and slow-uplink held-out instances at ``--exact-limit`` s each: how many
  it proves (target: 15 of 20 at 10 s) and the median certified gap; on contended at
  ``--contended-limit`` s the median certified gap (target: at most 5% at 60 s); each
  beside the other formulation (``optimal.FORMULATIONS``: same hint, same bound), the
  comparison the issue asks.
- scale: 100 tasks on 20 edges (bench_speed.widened of paper and of contended): the LP
  bound's seconds at ``--bins`` time bins (target: at most 10) and the median certified
  gap of the best of the search and Optimal at ``--scale-limit`` s each (target: at most
  15% at 60 s).

Timed parts measure wall-clock seconds on this machine: run it on an idle one.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from bench_speed import widened
from tqdm import tqdm

from llmoffload.display import table
from llmoffload.experiments.training import held_out
from llmoffload.model.execution import Tables, evaluate
from llmoffload.model.instance import Instance, sample_instance
from llmoffload.model.scenario import load_scenario
from llmoffload.schedulers import optimal
from llmoffload.schedulers.bound import lp_bound, relaxed_bound
from llmoffload.schedulers.heuristics import best_classic
from llmoffload.schedulers.search import Budget, anneal


def instances(scenario: str, count: int) -> list[Instance]:
    """The held-out instances a seed-0 run is evaluated on."""
    return [inst for *_, inst in held_out(load_scenario(scenario), 0, count)]


def classic_objective(inst: Instance) -> float:
    return evaluate(inst, best_classic(inst, np.random.default_rng(0))).objective


def search_part(count: int) -> list[str]:
    cases = instances("contended", count)
    rows = []
    for seconds in (0.5, 2.0):
        found = [anneal(i, np.random.default_rng(0), Budget(seconds=seconds)) for i in cases]
        ratios = [f.objective / classic_objective(i) for f, i in zip(found, cases, strict=True)]
        rate = sum(f.evaluations for f in found) / sum(f.seconds for f in found)
        better = sum(r < 1 - 1e-9 for r in ratios)
        rows.append(
            [
                f"{seconds:g} s",
                f"{np.mean(ratios):.4f}",
                f"{better} of {len(cases)}",
                f"{rate:,.0f}",
            ]
        )
    tables = Tables(cases[0])
    order = best_classic(cases[0], np.random.default_rng(0))
    began, full = time.perf_counter(), 0
    while time.perf_counter() - began < 1.0:
        evaluate(tables, order)
        full += 1
    per_second = full / (time.perf_counter() - began)
    return [
        f"search on contended, {count} held-out instances (20 tasks), ratio to best classic:",
        table(["budget", "mean ratio", "better than best classic", "evaluations/s"], rows),
        f"full evaluations (execution model, whole sequence): {per_second:,.0f}/s",
    ]


def exact_row(name: str, cases: list[Instance], limit: float, bar: tqdm) -> list[str]:
    out = [name, f"{limit:g} s"]
    span = load_scenario(name).latency == "span"
    for formulation in ("circuits", "intervals") if span else ("intervals", "circuits"):
        proven, gaps, objs = 0, [], []
        for inst in cases:
            sol = optimal.solve(inst, time_limit_s=limit, formulation=formulation)
            proven += sol.proven
            gaps.append(sol.gap)
            objs.append(sol.schedule.objective / classic_objective(inst))
            bar.update()
        out += [formulation, f"{proven} of {len(cases)}", f"{np.median(gaps):.1%}"]
        out.append(f"{np.mean(objs):.4f}")
    return out


def exact_part(count: int, limit: float, contended: int, contended_limit: float) -> list[str]:
    plan = [("dear-cloud", count, limit), ("slow-uplink", count, limit)]
    plan.append(("contended", contended, contended_limit))
    bar = tqdm(total=2 * sum(n for _, n, _ in plan), desc="exact", unit="solve")
    rows = [exact_row(name, instances(name, n), lim, bar) for name, n, lim in plan]
    bar.close()
    head = ["scenario", "limit"]
    for arm in ("used", "other"):
        head += [arm, "proven", "median gap", "x best classic"]
    return [
        f"Optimal on held-out instances ({count} each, {contended} of contended): the "
        "formulation used by default beside the other (same hint, same LP bound):",
        table(head, rows),
    ]


def scale_part(count: int, limit: float, bins: int) -> list[str]:
    rows = []
    for base in ("paper", "contended"):
        sc = widened(100, 20, base)
        for k in range(count):
            inst = sample_instance(sc, np.random.default_rng(k))
            began = time.perf_counter()
            bound = max(lp_bound(inst, bins=bins), relaxed_bound(Tables(inst)))
            bound_s = time.perf_counter() - began
            searched = anneal(inst, np.random.default_rng(0), Budget(seconds=limit))
            solved = optimal.solve(inst, time_limit_s=limit)
            best = min(searched.objective, solved.schedule.objective)
            certified = max(bound, solved.bound)
            rows.append(
                [
                    f"{base} x{k}",
                    f"{bound_s:.2f}",
                    f"{searched.objective / classic_objective(inst):.4f}",
                    f"{solved.schedule.objective / classic_objective(inst):.4f}",
                    f"{(best - certified) / best:.1%}",
                ]
            )
    return [
        f"100 tasks x 20 edges, the search and Optimal at {limit:g} s each:",
        table(
            ["instance", "LP bound s", "search x best classic", "Optimal x best classic", "gap"],
            rows,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", default=["search", "exact", "scale"])
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--exact-limit", type=float, default=10.0)
    parser.add_argument("--contended-instances", type=int, default=20)
    parser.add_argument("--contended-limit", type=float, default=60.0)
    parser.add_argument("--scale-instances", type=int, default=3)
    parser.add_argument("--scale-limit", type=float, default=60.0)
    parser.add_argument("--bins", type=int, default=64, help="the LP's time bins at scale")
    args = parser.parse_args()
    if "search" in args.part:
        print("\n".join(search_part(args.instances)), end="\n\n", flush=True)
    if "exact" in args.part:
        lines = exact_part(
            args.instances, args.exact_limit, args.contended_instances, args.contended_limit
        )
        print("\n".join(lines), end="\n\n", flush=True)
    if "scale" in args.part:
        print("\n".join(scale_part(args.scale_instances, args.scale_limit, args.bins)))


if __name__ == "__main__":
    main()
