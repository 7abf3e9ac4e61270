"""The task encoder (paper §4.1.1): 2 GCN layers (hidden 64) -> mean pool -> linear 16.

Written densely: a task has at most a handful of subtasks, so one batched
matrix product per layer beats building sparse edge lists every step (see
``benchmarks/bench_encoder.py``). It computes exactly what PyTorch Geometric's
``GCNConv`` computes on the DAG's edges (predecessor -> successor) with
self-loops and symmetric normalisation by in-degree + 1, and the mean pool
skips padding nodes like ``global_mean_pool`` over the real ones
(``tests/test_encoder.py`` checks both against PyG).

Every agent has its own encoder (the paper: one policy network per agent).
Built with ``agents=I``, the layers stack the agents' weights and take inputs
with the agent axis first, ``(I, ..., features)``, so all agents run in one
batched matrix product per layer; built without, it is one plain encoder.
"""

from __future__ import annotations

import torch
from torch import nn


class AgentLinear(nn.Module):
    """One ``nn.Linear`` per agent in one batched product: x (I, ..., in) -> (I, ..., out).

    Agent i's rows go through agent i's weights only. Each agent's weight and
    bias are those a fresh ``nn.Linear`` draws, stored transposed, (I, in, out),
    so the product needs no copy.
    """

    def __init__(self, agents: int, inputs: int, outputs: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(agents, inputs, outputs))
        # (I, 1, out) broadcasts over a batch flattened to (I, N, out)
        self.bias = nn.Parameter(torch.empty(agents, 1, outputs)) if bias else None
        for i in range(agents):
            self.reset(i)

    def reset(self, i: int) -> None:
        """Draw agent i's weights as a fresh ``nn.Linear`` draws them."""
        plain = nn.Linear(*self.weight.shape[1:], bias=self.bias is not None)
        with torch.no_grad():
            self.weight[i] = plain.weight.t()
            if self.bias is not None:
                self.bias[i, 0] = plain.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(len(self.weight), -1, x.shape[-1])
        if self.bias is None:
            y = torch.bmm(flat, self.weight)
        else:
            y = torch.baddbmm(self.bias, flat, self.weight)
        return y.view(*x.shape[:-1], -1)


def linear(inputs: int, outputs: int, agents: int | None, bias: bool = True) -> nn.Module:
    """A plain linear layer, or one per agent stacked when ``agents`` is given."""
    if agents is None:
        return nn.Linear(inputs, outputs, bias=bias)
    return AgentLinear(agents, inputs, outputs, bias=bias)


def normalised_adjacency(adj: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """D^-1/2 (A^T + I) D^-1/2 for a batch of padded DAGs; rows aggregate into nodes.

    ``adj[b, p, j] = 1`` for an edge p -> j; ``real[b, j] = 1`` for real nodes.
    """
    eye = torch.diag_embed(real)
    into = adj.transpose(-1, -2) + eye  # into[j, p]: messages p -> j, and j -> j
    deg = into.sum(-1)
    inv_sqrt = torch.where(deg > 0, deg.clamp(min=1e-12).rsqrt(), torch.zeros_like(deg))
    return inv_sqrt.unsqueeze(-1) * into * inv_sqrt.unsqueeze(-2)


class GCNLayer(nn.Module):
    """One graph convolution: H' = A_hat H W + b (bias added after propagation, as PyG)."""

    def __init__(self, inputs: int, outputs: int, agents: int | None = None) -> None:
        super().__init__()
        self.lin = linear(inputs, outputs, agents, bias=False)
        # per agent, (I, 1, 1, out) broadcasts over nodes (I, N, J, out)
        shape = (outputs,) if agents is None else (agents, 1, 1, outputs)
        self.bias = nn.Parameter(torch.zeros(shape))

    def forward(self, h: torch.Tensor, a_hat: torch.Tensor) -> torch.Tensor:
        return a_hat @ self.lin(h) + self.bias


class TaskEncoder(nn.Module):
    """A padded task DAG -> its 16-d embedding Task_i; one per agent with ``agents``."""

    def __init__(
        self, node_features: int, hidden: int = 64, out: int = 16, agents: int | None = None
    ) -> None:
        super().__init__()
        self.gcn1 = GCNLayer(node_features, hidden, agents)
        self.gcn2 = GCNLayer(hidden, hidden, agents)
        self.head = linear(hidden, out, agents)

    def forward(self, nodes: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """nodes (..., J, F) with feature 0 = 'real node', adj (..., J, J) -> (..., out);
        with ``agents``: nodes (I, N, J, F), adj (I, N, J, J) -> (I, N, out)."""
        real = nodes[..., 0]
        a_hat = normalised_adjacency(adj, real)
        h = torch.relu(self.gcn1(nodes, a_hat))
        h = torch.relu(self.gcn2(h, a_hat))
        pooled = (h * real.unsqueeze(-1)).sum(-2) / real.sum(-1, keepdim=True).clamp(min=1.0)
        return self.head(pooled)
