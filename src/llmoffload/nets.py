"""Networks shared by the learners: the factored actor and the centralised critic."""

from __future__ import annotations

import torch
from torch import nn

from llmoffload.encoder import TaskEncoder
from llmoffload.env import Layout


def mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(inputs, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, outputs),
    )


def masked_log_softmax(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Log-probabilities renormalised over the valid actions (EPyMARL sets the others
    to -1e10); a row with no valid action (an inactive agent) is left unmasked."""
    valid = masks > 0
    valid = valid | ~valid.any(-1, keepdim=True)
    return torch.log_softmax(logits.masked_fill(~valid, -1e10), -1)


class Actor(nn.Module):
    """pi(j, k | s_i) = pi_sub(j | s_i) * pi_loc(k | s_i) from s_i = (P_i, S, Task_i).

    Two heads over one body, as the paper's "subtask head x location head";
    the joint log-probability is laid out as ``a = j * S + k``, the env's
    action index.
    """

    def __init__(self, layout: Layout, hidden: int = 128) -> None:
        super().__init__()
        self.layout = layout
        self.encoder = TaskEncoder(layout.node_features)
        inputs = layout.subtasks + layout.servers * layout.server_features + 16
        self.body = mlp(inputs, hidden, hidden)
        self.subtask_head = nn.Linear(hidden, layout.subtasks)
        self.location_head = nn.Linear(hidden, layout.servers)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """obs (..., O) -> joint log-probabilities (..., J * S)."""
        p, servers, nodes, adj = self.layout.split(obs)
        task = self.encoder(nodes, adj)
        h = torch.relu(self.body(torch.cat([p, servers.flatten(-2), task], -1)))
        sub = torch.log_softmax(self.subtask_head(h), -1)
        loc = torch.log_softmax(self.location_head(h), -1)
        return (sub.unsqueeze(-1) + loc.unsqueeze(-2)).flatten(-2)


class Actors(nn.ModuleList):
    """One factored actor per agent, as the paper's "one policy network per agent"."""

    def __init__(self, layout: Layout, agents: int, hidden: int = 128) -> None:
        super().__init__(Actor(layout, hidden) for _ in range(agents))

    def log_pi(self, obs: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """obs (..., I, O) -> every agent's joint log-probabilities (..., I, A),
        renormalised over the valid actions when ``masks`` are given."""
        logp = torch.stack([actor(obs[..., i, :]) for i, actor in enumerate(self)], -2)
        return logp if masks is None else masked_log_softmax(logp, masks)


def best_valid(logp: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Each agent's most likely valid action: how every learner acts when evaluated."""
    return logp.masked_fill(masks == 0, -torch.inf).argmax(-1)


def sample(logp: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One action per row of log-probabilities (..., A), drawn from the run's generator."""
    flat = logp.exp().reshape(-1, logp.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).reshape(logp.shape[:-1])


class Critic(nn.Module):
    """EPyMARL's COMA critic: Q(S, (., A^-i)) for every own action in one pass.

    Input: the global state, the agent's own observation (EPyMARL's
    ``obs_individual_obs``), every other agent's one-hot action (own slot and
    inactive agents zeroed) and the agent's id.
    """

    def __init__(self, layout: Layout, agents: int, hidden: int = 128) -> None:
        super().__init__()
        self.layout, self.agents, self.actions = layout, agents, layout.actions
        inputs = (agents + 1) * layout.size + agents * layout.actions + agents
        self.net = mlp(inputs, hidden, layout.actions)

    def forward(self, state: torch.Tensor, joint: torch.Tensor) -> torch.Tensor:
        """state (B, I * O), joint actions (B, I) with -1 for inactive -> Q (B, I, A)."""
        b, n = joint.shape
        own = state.view(b, n, self.layout.size)
        onehot = torch.nn.functional.one_hot(joint.clamp(min=0), self.actions).float()
        onehot = onehot * (joint >= 0).unsqueeze(-1)
        others = onehot.unsqueeze(1).expand(b, n, n, self.actions) * (
            1.0 - torch.eye(n).view(1, n, n, 1)
        )
        ids = torch.eye(n).expand(b, n, n)
        x = torch.cat([state.unsqueeze(1).expand(b, n, -1), own, others.flatten(-2), ids], -1)
        return self.net(x)
