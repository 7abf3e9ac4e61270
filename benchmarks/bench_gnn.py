"""How long one gnn-sched decision takes, and where the time goes, as instances grow.

    python benchmarks/bench_gnn.py [--sizes 5x3 20x3 100x20] [--decisions 50]

A decision is one step of ``GnnSched.plan``: the views' features (``GraphView.features``:
every valid pair's start, end and objective increase from the execution model) and
the network's forward over the whole graph, for the greedy schedule alone (one
schedule) and for the greedy one with the default ``samples`` beside it (what ``plan``
builds: all of them at once, one batched forward a step). Instances are the paper scenario widened
to T tasks and E edges (``bench_speed.widened``); the network is untrained (its cost
does not depend on its weights). Reported per size: nodes, valid pairs at the first
step, and the median and worst time of the first ``--decisions`` decisions, split into
features and forward (the first steps are the dearest: the most subtasks are ready).
The issue's target: one decision for 100 tasks x 20 edges in at most 20 ms.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from bench_speed import widened

from llmoffload.display import table
from llmoffload.experiments.training import make_config, new_learner
from llmoffload.marl.algorithms.gnn_sched import GnnSchedConfig, tensors
from llmoffload.marl.env import OffloadEnv
from llmoffload.marl.graph import GraphView
from llmoffload.model.instance import sample_instance


def decisions(tasks: int, edges: int, count: int, schedules: int) -> list[str]:
    sc = widened(tasks, edges)
    learner = new_learner("gnn-sched", make_config("gnn-sched", {}), OffloadEnv(sc), 0)
    instance = sample_instance(sc, np.random.default_rng(0))
    views = [GraphView(instance) for _ in range(schedules)]
    pairs = int(views[0].valid().sum())
    features, forward = [], []
    with torch.inference_mode():
        for _ in range(min(count, len(views[0].nodes))):
            began = time.perf_counter()
            state = tensors(views)
            middle = time.perf_counter()
            choice = learner.log_pi(views[0].arcs, state).argmax(-1).tolist()
            features.append(middle - began)
            forward.append(time.perf_counter() - middle)
            for view, a in zip(views, choice, strict=True):
                view.step(*divmod(a, view.servers))
    total = np.add(features, forward) * 1e3
    return [
        f"{tasks} x {edges}",
        str(schedules),
        str(len(views[0].nodes)),
        str(pairs),
        f"{np.median(total):.2f}",
        f"{total.max():.2f}",
        f"{np.median(features) * 1e3:.2f}",
        f"{np.median(forward) * 1e3:.2f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["5x3", "20x3", "100x20"])
    parser.add_argument("--decisions", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sampled = 1 + GnnSchedConfig().samples
    rows = [
        decisions(*map(int, size.split("x")), args.decisions, schedules)
        for size in args.sizes
        for schedules in (1, sampled)
    ]
    head = ["tasks x edges", "schedules", "nodes", "valid pairs", "median ms", "worst ms"]
    print(table([*head, "features ms", "forward ms"], rows))


if __name__ == "__main__":
    main()
