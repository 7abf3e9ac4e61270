"""How long one gnn-sched decision takes, and where the time goes, as instances grow.

    python benchmarks/bench_gnn.py [--sizes 5x3 20x3 100x20] [--decisions 50]

A decision is one step of ``GnnSched.plan``: the view's features (``GraphView.features``:
every valid pair's start, end and objective increase from the execution model) and
the network's forward over the whole graph. Instances are the paper scenario widened
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
from llmoffload.marl.algorithms.gnn_sched import tensors
from llmoffload.marl.env import OffloadEnv
from llmoffload.marl.graph import GraphView
from llmoffload.model.instance import sample_instance


def decisions(tasks: int, edges: int, count: int) -> list[str]:
    sc = widened(tasks, edges)
    learner = new_learner("gnn-sched", make_config("gnn-sched", {}), OffloadEnv(sc), 0)
    view = GraphView(sample_instance(sc, np.random.default_rng(0)))
    pairs = int(view.valid().sum())
    features, forward = [], []
    with torch.inference_mode():
        for _ in range(min(count, len(view.nodes))):
            began = time.perf_counter()
            state = tensors([view])
            middle = time.perf_counter()
            choice = int(learner.log_pi(view.arcs, state)[0].argmax())
            features.append(middle - began)
            forward.append(time.perf_counter() - middle)
            view.step(*divmod(choice, view.servers))
    total = np.add(features, forward) * 1e3
    return [
        f"{tasks} x {edges}",
        str(len(view.nodes)),
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
    rows = [decisions(*map(int, size.split("x")), args.decisions) for size in args.sizes]
    head = ["tasks x edges", "nodes", "valid pairs", "median ms", "worst ms"]
    print(table([*head, "features ms", "forward ms"], rows))


if __name__ == "__main__":
    main()
