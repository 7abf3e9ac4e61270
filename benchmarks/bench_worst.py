"""Worst cases: per scenario, the instance where gnn-sched and the search are furthest
above best classic and above each other, found by an adversarial search (issue 29).

    python benchmarks/bench_worst.py [--study-out runs/beyond] [--steps 40]
        [--search-budget 2000] [--out runs/worst]

gnn-sched is the study's seed-0 run on each scenario (``reproduce --study beyond``, its
study.json in ``--study-out``); the search runs with a budget of evaluations, so every
ratio is the same on any machine. From the scenario's first held-out instance,
``experiments.worst.worst_case`` anneals ``--steps`` instances per pair and writes the
worst to ``--out``: ``llmoffload schedule FILE --policy A`` over ``--policy B`` (the
search with ``--budget``, gnn-sched with its run directory) gives the ratio again.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from llmoffload.display import table
from llmoffload.experiments.policies import resolve_policy
from llmoffload.experiments.study import plan, scenario_of
from llmoffload.experiments.study_report import read_study
from llmoffload.experiments.training import held_out
from llmoffload.experiments.worst import worst_case
from llmoffload.files import write_text_atomic
from llmoffload.model.scenario import load_scenario
from llmoffload.schedulers.search import Budget

PAIRS = (
    ("gnn-sched", "best-classic"),
    ("search", "best-classic"),
    ("gnn-sched", "search"),
    ("search", "gnn-sched"),
)


def gnn_runs(study_out: Path) -> dict[str, Path]:
    """The study's seed-0 gnn-sched run per scenario, where it finished."""
    study = read_study(study_out)
    runs = {}
    for spec in plan(study):
        path = study_out / "runs" / spec.name
        if spec.method == "gnn-sched" and spec.seed == 0 and (path / "result.json").is_file():
            runs[scenario_of(spec)] = path
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study-out", type=Path, default=Path("runs/beyond"))
    parser.add_argument("--scenario", nargs="+", default=["dear-cloud", "slow-uplink", "contended"])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--search-budget", default="2000")
    parser.add_argument("--out", type=Path, default=Path("runs/worst"))
    args = parser.parse_args()
    runs = gnn_runs(args.study_out)
    budget = Budget.parse(args.search_budget)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    bar = tqdm(total=len(args.scenario) * len(PAIRS) * args.steps, desc="worst", unit="inst")
    for name in args.scenario:
        policies = {
            "best-classic": resolve_policy("best-classic", 1.0),
            "search": resolve_policy("search", 1.0, budget),
        }
        if name in runs:
            policies["gnn-sched"] = resolve_policy(str(runs[name]), 1.0)
        (_, seed, start), *_ = held_out(load_scenario(name), 0, 1)
        for a, b in PAIRS:
            if a not in policies or b not in policies:
                rows.append([name, a, b, "n/a", "n/a", "0", "no gnn-sched run of the study"])
                bar.update(args.steps)
                continue
            found = worst_case(
                start, policies[a], policies[b], np.random.default_rng(seed), args.steps, bar.update
            )
            path = args.out / f"{name}-{a}-over-{b}.json"
            write_text_atomic(path, found.instance.dumps())
            ratios = [f"{found.start:.4f}", f"{found.ratio:.4f}"]
            rows.append([name, a, b, *ratios, str(found.tried), str(path)])
    bar.close()
    print(f"search: {budget} evaluations; gnn-sched: the study's seed-0 runs, {args.study_out}")
    print(table(["scenario", "A", "B", "A/B at start", "worst A/B", "instances", "file"], rows))


if __name__ == "__main__":
    main()
