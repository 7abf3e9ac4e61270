"""The task encoder (paper §4.1.1): 2 GCN layers (hidden 64) -> mean pool -> linear 16.

Written densely: a task has at most a handful of subtasks, so one batched
matrix product per layer beats building sparse edge lists every step (see
``benchmarks/bench_encoder.py``). It computes exactly what PyTorch Geometric's
``GCNConv`` computes on the DAG's edges (predecessor -> successor) with
self-loops and symmetric normalisation by in-degree + 1, and the mean pool
skips padding nodes like ``global_mean_pool`` over the real ones
(``tests/test_encoder.py`` checks both against PyG).
"""

from __future__ import annotations

import torch
from torch import nn


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

    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__()
        self.lin = nn.Linear(inputs, outputs, bias=False)
        self.bias = nn.Parameter(torch.zeros(outputs))

    def forward(self, h: torch.Tensor, a_hat: torch.Tensor) -> torch.Tensor:
        return a_hat @ self.lin(h) + self.bias


class TaskEncoder(nn.Module):
    """A padded task DAG -> its 16-d embedding Task_i."""

    def __init__(self, node_features: int, hidden: int = 64, out: int = 16) -> None:
        super().__init__()
        self.gcn1 = GCNLayer(node_features, hidden)
        self.gcn2 = GCNLayer(hidden, hidden)
        self.head = nn.Linear(hidden, out)

    def forward(self, nodes: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """nodes (..., J, F) with feature 0 = 'real node', adj (..., J, J) -> (..., out)."""
        real = nodes[..., 0]
        a_hat = normalised_adjacency(adj, real)
        h = torch.relu(self.gcn1(nodes, a_hat))
        h = torch.relu(self.gcn2(h, a_hat))
        pooled = (h * real.unsqueeze(-1)).sum(-2) / real.sum(-1, keepdim=True).clamp(min=1.0)
        return self.head(pooled)
