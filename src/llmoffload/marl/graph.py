"""The whole instance as one graph, for a centralised scheduler (``algorithms/gnn_sched``).

The paper's agents each see their own task; a centralised scheduler (Decima, L2D) sees
the union of every task's DAG and every server, and picks one (subtask, server) pair
at a time. ``GraphView`` steps the execution model one dispatch at a time and gives,
at each step, the arrays such a scheduler reads:

- nodes (N, F_n), one per subtask of every task: modality, input and output size, work,
  arrival, HEFT's upward rank, exit flag (constant); dispatched, ready, end time (live);
- servers (S, F_s): speed, price, modalities, slot count, cloud flag (constant); when
  its first and its last slot frees (live);
- pairs (N, S, F_p) for every valid pair: upload, compute, cost (constant); start, end,
  waiting, and what the dispatch adds to the objective, queueing included (live, from
  ``Execution.timing`` and ``objective_increase``: what every classic rule ranks by);
- the valid pairs (N, S) and the arcs (2, E), a column (p, j) for each p -> j.

Every time is in units of the deadline T_max, every cost and objective in units of the
instance's ``relaxed_bound`` per subtask, so one network reads instances of any size.
Unlike the paper's agents, which act one arrival at a time, the view holds every task
from the start, as the classic schedulers and Optimal do: it plans a known batch.
"""

from __future__ import annotations

import numpy as np

from llmoffload.model.execution import Execution, Run
from llmoffload.model.instance import Instance
from llmoffload.schedulers.bound import relaxed_bound
from llmoffload.schedulers.heuristics import upward_ranks

PAIR_FEATURES = 7  # upload, compute, cost, start, end, waiting, objective increase


def node_features(modalities: int) -> int:
    return modalities + 9


def server_features(modalities: int) -> int:
    return modalities + 6


class GraphView:
    """One instance's dispatch process, seen whole."""

    def __init__(self, instance: Instance) -> None:
        self.ex = Execution(instance)
        t, sc = self.ex.tables, instance.scenario
        self.nodes = [(i, j) for i, preds in enumerate(t.preds) for j in range(len(preds))]
        first = np.cumsum([0] + [len(p) for p in t.preds])
        self.first = first  # task i's subtasks are nodes first[i] .. first[i+1]-1
        n, s, m = len(self.nodes), len(sc.servers), len(sc.modalities)
        self.servers = s
        self.tau = sc.t_max_s
        self.unit = max(relaxed_bound(t) / n, 1e-12)
        self.gamma = sc.gamma
        arcs = []
        self.supports = np.zeros((n, s), bool)
        static = np.zeros((n, s, 3), np.float32)
        ranks = upward_ranks(t)
        nodes = np.zeros((n, node_features(m)), np.float32)
        kind = {mod: k for k, mod in enumerate(sc.modalities)}
        for v, (i, j) in enumerate(self.nodes):
            sub = instance.tasks[i].subtasks[j]
            arcs += [(first[i] + p, v) for p in sub.preds]
            nodes[v, kind[sub.modality]] = 1.0
            nodes[v, m : m + 6] = [
                sub.input_bits / 1e6,
                sub.output_bits / 1e4,
                t.compute[i][j][sc.cloud] / self.tau,
                t.arrival[i] / self.tau,
                ranks[i][j] / self.tau,
                float(j == len(t.preds[i]) - 1),
            ]
            for k in t.servers:
                if t.supports(i, j, k):
                    self.supports[v, k] = True
                    static[v, k] = [
                        t.upload[i][j][k] / self.tau,
                        t.compute[i][j][k] / self.tau,
                        (1 - self.gamma) * t.cost[i][j][k] / self.unit,
                    ]
        self._nodes, self._static = nodes, static
        top_ghz = max(x.ghz for x in sc.servers)
        top_price = max(x.usd_per_ghz for x in sc.servers) or 1.0
        self._servers = np.array(
            [
                [x.ghz / top_ghz, x.usd_per_ghz / top_price, 1.0 / (x.slots or np.inf)]
                + [float(x.kind == "cloud")]
                + [float(mod in x.modalities) for mod in sc.modalities]
                + [0.0, 0.0]
                for x in sc.servers
            ],
            np.float32,
        )
        # the live pair features, kept while still true: a dispatch to server k changes
        # only the pairs on k (its free time) and those of its own task (its latency)
        self._live = np.zeros((n, s, PAIR_FEATURES - 3), np.float32)
        self.fresh = np.zeros((n, s), bool)
        self._latency = [0.0] * len(t.preds)  # each task's latency so far
        self.arcs = np.array(arcs, np.int64).reshape(-1, 2).T
        self.dispatched = np.zeros(n, bool)
        self.ends = np.zeros(n, np.float32)
        self.waiting = np.bincount(self.arcs[1], minlength=n)  # predecessors not yet dispatched

    @property
    def done(self) -> bool:
        return self.ex.done

    def valid(self) -> np.ndarray:
        """(N, S) bool: the pairs the execution model accepts now."""
        ready = ~self.dispatched & (self.waiting == 0)
        return ready[:, None] & self.supports

    def features(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(nodes, servers, pairs, valid) of the current state."""
        ex, valid = self.ex, self.valid()
        nodes = self._nodes.copy()
        nodes[:, -3] = self.dispatched
        nodes[:, -2] = valid.any(1)
        nodes[:, -1] = self.ends / self.tau
        servers = self._servers.copy()
        slots = ex.slot_free
        servers[:, -2] = np.array(ex.free, np.float32) / self.tau
        servers[:, -1] = np.array([max(q, default=0.0) for q in slots], np.float32) / self.tau
        stale = valid & ~self.fresh
        for v, k in zip(*np.nonzero(stale), strict=True):
            self._live[v, k] = self._pair(*self.nodes[v], int(k))
        self.fresh |= stale
        pairs = np.concatenate([self._static, self._live * valid[..., None]], -1)
        return nodes, servers, pairs, valid

    def _pair(self, i: int, j: int, k: int) -> list[float]:
        """Start, end, waiting and objective increase of dispatching (i, j) to k now (the
        execution model's, each part computed once: the task's latency so far is kept)."""
        ex = self.ex
        ready = ex.ready_time(i, j, k)
        start, end = ex.timing(i, j, k, ready)
        added = ex.increase(i, j, k, start, end, self._latency[i])
        return [start / self.tau, end / self.tau, (start - ready) / self.tau, added / self.unit]

    def step(self, node: int, server: int) -> Run:
        """Dispatch node ``node`` to ``server``."""
        i, j = self.nodes[node]
        run = self.ex.dispatch(i, j, server)
        self._latency[i] = self.ex.latency_so_far(i)
        self.fresh[:, server] = False
        self.fresh[self.first[i] : self.first[i + 1]] = False
        self.dispatched[node] = True
        self.ends[node] = run.end
        self.waiting[self.arcs[1, self.arcs[0] == node]] -= 1
        return run

    def node_of(self, task: int, subtask: int) -> int:
        return int(self.first[task]) + subtask
