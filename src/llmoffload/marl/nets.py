"""Networks shared by the learners: the factored actor and the centralised critic."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import cast

import torch
from torch import nn
from torch.func import functional_call

from llmoffload.marl.encoder import AgentLinear, TaskEncoder, linear
from llmoffload.marl.env import Layout
from llmoffload.marl.numerics import masked_log_softmax, masked_one_hot


def mlp(
    inputs: int, hidden: int, outputs: int, layer: Callable[[int, int], nn.Module] = nn.Linear
) -> nn.Sequential:
    return nn.Sequential(
        layer(inputs, hidden),
        nn.ReLU(),
        layer(hidden, hidden),
        nn.ReLU(),
        layer(hidden, outputs),
    )


class Actors(nn.Module):
    """One factored actor per agent, as the paper's "one policy network per agent":
    pi_i(j, k | s_i) = pi_sub(j | s_i) * pi_loc(k | s_i) from s_i = (P_i, S, Task_i).

    Two heads over one body, as the paper's "subtask head x location head"; the
    joint log-probability is laid out as ``a = j * S + k``, the env's action
    index. Every layer stacks the agents' own weights (``encoder.AgentLinear``),
    so all agents act in one batched pass instead of one small pass each.
    """

    def __init__(self, layout: Layout, agents: int, hidden: int = 128) -> None:
        super().__init__()
        self.layout = layout
        per_agent = partial(linear, agents=agents)
        seed = torch.get_rng_state()
        self.encoder = TaskEncoder(layout.node_features, agents=agents)
        inputs = layout.subtasks + layout.servers * layout.server_features + 16
        self.body = mlp(inputs, hidden, hidden, per_agent)
        self.subtask_head = per_agent(hidden, layout.subtasks)
        self.location_head = per_agent(hidden, layout.servers)
        # Redraw from the same seed, agent after agent and layer after layer: a seed gives
        # the weights of one plain network per agent built in turn (tests/test_encoder.py).
        torch.set_rng_state(seed)
        layers = [m for m in self.modules() if isinstance(m, AgentLinear)]
        for i in range(agents):
            for layer in layers:
                layer.reset(i)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """obs (..., I, O) -> every agent's joint log-probabilities (..., I, A)."""
        lead, (agents, size) = obs.shape[:-2], obs.shape[-2:]
        x = obs.reshape(-1, agents, size).transpose(0, 1)  # (I, N, O): agent axis first
        p, servers, nodes, adj = self.layout.split(x)
        task = self.encoder(nodes, adj)
        h = torch.relu(self.body(torch.cat([p, servers.flatten(-2), task], -1)))
        sub = torch.log_softmax(self.subtask_head(h), -1)
        loc = torch.log_softmax(self.location_head(h), -1)
        logp = (sub.unsqueeze(-1) + loc.unsqueeze(-2)).flatten(-2)
        return logp.transpose(0, 1).reshape(*lead, agents, -1)

    def log_pi(self, obs: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """obs (..., I, O) -> every agent's joint log-probabilities (..., I, A),
        renormalised over the valid actions when ``masks`` are given."""
        logp = self(obs)
        return logp if masks is None else masked_log_softmax(logp, masks)

    def agent(self, i: int, obs: torch.Tensor) -> torch.Tensor:
        """Agent i alone, on its weights only: obs (..., O) -> log-probabilities (..., A)."""
        own = {name: p[i : i + 1] for name, p in self.named_parameters()}
        return functional_call(self, own, (obs.unsqueeze(-2),)).squeeze(-2)


def sum_of_others(parts: torch.Tensor) -> torch.Tensor:
    """parts (B, I, H) -> (B, I, H): row i sums the parts of every k != i from prefix and
    suffix sums, never adding part i, so it does not depend on part i even in rounding."""
    zero = parts.new_zeros(parts[:, :1].shape)
    before = torch.cat([zero, parts[:, :-1].cumsum(1)], 1)
    after = torch.cat([parts[:, 1:].flip(1).cumsum(1).flip(1), zero], 1)
    return before + after


class Critic(nn.Module):
    """EPyMARL's COMA critic: Q(S, (., A^-i)) for every own action in one pass.

    Input: the global state, the agent's own observation (EPyMARL's
    ``obs_individual_obs``), every other agent's one-hot action (own slot and
    inactive agents zeroed) and the agent's id. The first layer is applied in
    parts, so the (B, I, I * (O + A)) input is never built: the state's part once
    per row of the batch, each agent's action's part once, summed over the others
    for each agent. O(B I (O + A)) instead of O(B I^2 (O + A)); the same sum up to
    float rounding (``tests/test_encoder.py``).
    """

    def __init__(self, layout: Layout, agents: int, hidden: int = 128) -> None:
        super().__init__()
        self.layout, self.agents, self.actions = layout, agents, layout.actions
        inputs = (agents + 1) * layout.size + agents * layout.actions + agents
        self.net = mlp(inputs, hidden, layout.actions)

    def forward(self, state: torch.Tensor, joint: torch.Tensor) -> torch.Tensor:
        """state (B, I * O), joint actions (B, I) with -1 for inactive -> Q (B, I, A)."""
        b, n = joint.shape
        size = self.layout.size
        onehot = masked_one_hot(joint, self.actions)
        # the first layer's input columns: [state | own obs | actions | agent id]
        first = cast(nn.Linear, self.net[0])  # mlp's first layer
        w_state, w_own, w_actions, w_id = first.weight.split(
            [n * size, size, n * self.actions, n], -1
        )
        actions = torch.einsum("bka,hka->bkh", onehot, w_actions.view(-1, n, self.actions))
        h = (
            nn.functional.linear(state, w_state, first.bias).unsqueeze(1)
            + nn.functional.linear(state.view(b, n, size), w_own)
            + sum_of_others(actions)
            + w_id.t()
        )
        return self.net[1:](h)


class ValueNorm(nn.Module):
    """Running mean and variance of value targets (on-policy's ``ValueNorm``), for the
    critics of MAPPO and COMA.

    Debiased exponential moving averages of x and x^2; with beta close to 1 they weigh
    every update about equally. The critic predicts normalised values, so its targets
    keep a unit scale while the returns grow as the policy improves.
    """

    mean: torch.Tensor  # buffers, registered in __init__
    mean_sq: torch.Tensor
    debias: torch.Tensor

    def __init__(self, beta: float = 0.99999, epsilon: float = 1e-5) -> None:
        super().__init__()
        self.beta, self.epsilon = beta, epsilon
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("mean_sq", torch.zeros(()))
        self.register_buffer("debias", torch.zeros(()))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        self.mean.mul_(self.beta).add_(x.mean() * (1.0 - self.beta))
        self.mean_sq.mul_(self.beta).add_((x**2).mean() * (1.0 - self.beta))
        self.debias.mul_(self.beta).add_(1.0 - self.beta)

    def mean_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Debiased mean and variance; the variance is floored at 1e-2 as on-policy does."""
        debias = self.debias.clamp(min=self.epsilon)
        mean = self.mean / debias
        return mean, (self.mean_sq / debias - mean**2).clamp(min=1e-2)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, var = self.mean_var()
        return (x - mean) / var.sqrt()

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, var = self.mean_var()
        return x * var.sqrt() + mean
