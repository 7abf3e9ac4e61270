"""Benchmark the dense GCN task encoder against its PyTorch Geometric equivalent.

    python benchmarks/bench_encoder.py [--threads 1] [--seconds 0.5]

Both encoders read padded observations of the paper environment (tasks of 4 or
5 subtasks, padded to J = 5) at batch sizes 1 (one agent), 5 (one joint action
of the paper's 5 agents) and 64 (a training batch). Timed per call, in µs:

- dense: ``TaskEncoder`` on the padded batch, split out of the flat observations;
- PyG batch+fwd: building a ``Batch`` from the same padded observations (one
  ``Data`` per graph with its real nodes and edge list, ``Batch.from_data_list``)
  and running GCNConv x2 + ``global_mean_pool`` + Linear on it; this conversion
  is the cost the dense encoder avoids;
- PyG vec+fwd: the same, but the batch is built with vectorised tensor ops
  (masking and ``nonzero`` over the whole batch), a lower bound on conversion;
- PyG fwd: the PyG model alone on a prebuilt batch.

"fwd+bwd" adds ``out.sum().backward()``. The speed-ups are PyG time / dense time.
Single-threaded by default (``torch.set_num_threads(1)``): at these sizes extra
intra-op threads mostly add overhead, and a rollout worker typically gets one core.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.nn import GCNConv, global_mean_pool

from llmoffload.marl.encoder import TaskEncoder
from llmoffload.marl.env import Layout, OffloadEnv
from llmoffload.model.scenario import load_scenario

BATCHES = (1, 5, 64)


class PygEncoder(torch.nn.Module):
    """GCNConv x2 -> global_mean_pool -> Linear, with a TaskEncoder's weights."""

    def __init__(self, dense: TaskEncoder) -> None:
        super().__init__()
        f, hidden = dense.gcn1.lin.in_features, dense.gcn1.lin.out_features
        self.conv1 = GCNConv(f, hidden)
        self.conv2 = GCNConv(hidden, hidden)
        self.head = torch.nn.Linear(hidden, dense.head.out_features)
        with torch.no_grad():
            for conv, layer in ((self.conv1, dense.gcn1), (self.conv2, dense.gcn2)):
                conv.lin.weight.copy_(layer.lin.weight)
                conv.bias.copy_(layer.bias)
            self.head.load_state_dict(dense.head.state_dict())

    def forward(self, batch: Batch) -> torch.Tensor:
        h = torch.relu(self.conv1(batch.x, batch.edge_index))
        h = torch.relu(self.conv2(h, batch.edge_index))
        return self.head(global_mean_pool(h, batch.batch, size=batch.num_graphs))


def batch_from_list(layout: Layout, obs: torch.Tensor) -> Batch:
    """Padded flat observations -> a PyG Batch, one Data per graph (the usual way)."""
    _, _, nodes, adj = layout.split(obs)
    graphs = []
    for x, a in zip(nodes, adj, strict=True):
        n = int(x[:, 0].sum())  # real nodes come first
        graphs.append(Data(x=x[:n], edge_index=a[:n, :n].nonzero().t()))
    return Batch.from_data_list(graphs)


def batch_vectorised(layout: Layout, obs: torch.Tensor) -> Batch:
    """Padded flat observations -> a PyG Batch with whole-batch tensor ops."""
    _, _, nodes, adj = layout.split(obs)
    b, j = nodes.shape[:2]
    real = nodes[..., 0] > 0.5
    g, p, q = adj.nonzero(as_tuple=True)
    index = torch.cumsum(real.flatten(), 0).view(b, j) - 1  # padded slot -> packed node
    edge_index = torch.stack([index[g, p], index[g, q]])
    graph = torch.arange(b).unsqueeze(1).expand(b, j)[real]
    batch = Batch(x=nodes[real], edge_index=edge_index, batch=graph)
    batch._num_graphs = b
    return batch


def observations(count: int) -> tuple[Layout, torch.Tensor]:
    """``count`` observations of the paper env, 5 agents per reset, mixed 4/5-node tasks."""
    env = OffloadEnv(load_scenario("paper"))
    out: list[np.ndarray] = []
    seed = 1  # seed 1: the first joint observation mixes 4- and 5-node tasks
    while len(out) < count:
        obs, _ = env.reset(seed=seed)
        out += [o["observation"] for o in obs.values()]
        seed += 1
    return env.layout, torch.from_numpy(np.stack(out[:count]))


def per_call_us(fns: list[Callable[[], object]], seconds: float, rounds: int = 9) -> list[float]:
    """µs per call of each function: the median over ``rounds`` interleaved rounds.

    Each round times every function in turn for about ``seconds / rounds``, so
    load from other processes hits all of them alike.
    """
    counts = []
    for fn in fns:
        for _ in range(20):  # warm-up
            fn()
        began, calls = time.perf_counter(), 0
        while time.perf_counter() - began < seconds / rounds:  # calls per round
            fn()
            calls += 1
        counts.append(max(calls, 10))
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for fn, calls, out in zip(fns, counts, times, strict=True):
            began = time.perf_counter()
            for _ in range(calls):
                fn()
            out.append((time.perf_counter() - began) / calls * 1e6)
    return [statistics.median(t) for t in times]


def forward_backward(run: Callable[[], torch.Tensor], model: torch.nn.Module) -> Callable[[], None]:
    def step() -> None:
        model.zero_grad(set_to_none=True)
        run().sum().backward()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--seconds", type=float, default=0.5, help="timing per function per table cell"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    layout, all_obs = observations(max(BATCHES))
    dense = TaskEncoder(layout.node_features)
    with torch.no_grad():
        for p in (dense.gcn1.bias, dense.gcn2.bias):
            p.uniform_(-0.5, 0.5)
    pyg = PygEncoder(dense)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); J = {layout.subtasks}")
    rows = {"fwd": [], "fwd+bwd": []}
    worst = 0.0
    for b in BATCHES:
        obs = all_obs[:b]
        sizes = sorted({int(s) for s in layout.split(obs)[2][..., 0].sum(-1)})
        prebuilt = batch_from_list(layout, obs)

        def run_dense(obs=obs) -> torch.Tensor:
            _, _, nodes, adj = layout.split(obs)
            return dense(nodes, adj)

        def run_list(obs=obs) -> torch.Tensor:
            return pyg(batch_from_list(layout, obs))

        def run_vec(obs=obs) -> torch.Tensor:
            return pyg(batch_vectorised(layout, obs))

        def run_pre(prebuilt=prebuilt) -> torch.Tensor:
            return pyg(prebuilt)

        with torch.no_grad():
            want = run_dense()
            for run in (run_list, run_vec, run_pre):
                diff = (run() - want).abs().max().item()
                assert diff < 1e-5, f"batch {b}: PyG and dense differ by {diff}"
                worst = max(worst, diff)

        runs = (run_dense, run_list, run_vec, run_pre)
        with torch.no_grad():
            fwd = per_call_us(list(runs), args.seconds)
        models = (dense, pyg, pyg, pyg)
        both = per_call_us(
            [forward_backward(r, m) for r, m in zip(runs, models, strict=True)], args.seconds
        )
        for key, t in (("fwd", fwd), ("fwd+bwd", both)):
            rows[key].append((b, "/".join(map(str, sizes)), *t))

    for key, table in rows.items():
        print(f"\n**{key}**, µs per call (speed-up = PyG / dense)\n")
        print(
            "| batch | nodes | dense | PyG batch+fwd | PyG vec+fwd | PyG fwd (prebuilt) "
            "| speed-up vs batch+fwd | vs vec+fwd | vs fwd |"
        )
        print("|---:|:---:|---:|---:|---:|---:|---:|---:|---:|")
        for b, sizes, d, lst, vec, pre in table:
            print(
                f"| {b} | {sizes} | {d:.0f} | {lst:.0f} | {vec:.0f} | {pre:.0f} "
                f"| {lst / d:.1f}x | {vec / d:.1f}x | {pre / d:.1f}x |"
            )
    print(f"\nmax |dense - PyG| over all outputs: {worst:.2e}")


if __name__ == "__main__":
    main()
