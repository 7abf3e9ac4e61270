"""gnn-sched: one centralised graph policy, cloned from the optimum, then tuned by PPO.

The paper's learners give every task its own agent, which sees its own DAG and starts
from nothing. The learned schedulers that beat heuristics (Decima, Mao et al. SIGCOMM
2019; L2D, Zhang et al. NeurIPS 2020) do two other things: one policy reads the graph
of all pending work and all servers and picks one (subtask, server) at a time, and it
starts from good behaviour. This file does both:

  1  the view: ``marl/graph.GraphView``, the union of every task's DAG, the servers'
     live slot times, and every valid pair's start, end, waiting and objective increase
  2  the network: node embeddings by message passing along the arcs, both ways
     (``layers`` rounds, residual), a mean over nodes as the global context, server
     embeddings; an MLP scores every (node, server) pair from [node, server, context,
     pair features]; invalid pairs are masked out of the softmax
  3  behaviour cloning (``imitate``): replay each expert schedule through the view and
     minimise the cross-entropy of the expert's pair at every step
  4  PPO fine-tuning (``train_on``): per training instance sample ``group`` schedules
     at once; each episode's return is minus its objective (what the objective-aligned
     reward sums to, the deadline bonuses aside), in units of the instance's scale;
     the advantage is the return less the group's mean, over the group's sd (the group
     baseline of POMO/GRPO, in place of a learned critic: episodes on one instance
     differ only by the policy's choices); ``epochs`` passes of PPO's clipped
     surrogate with an entropy bonus
  5  acting (``plan``): the greedy schedule (the argmax pair at every step) and
     ``samples`` schedules drawn from the policy, the best by the exact objective kept
     (the sampling search of Kool et al., ICLR 2019; the best classic scheduler is
     likewise the best of several rules); the draws come from a generator seeded anew
     for every plan, so the same instance always gets the same schedule

It is a planner: given an instance it returns a dispatch sequence, as the classic
schedulers do; it reads instances of any size (every feature is scaled per instance).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from llmoffload.marl.env import Layout
from llmoffload.marl.graph import PAIR_FEATURES, GraphView, node_features, server_features
from llmoffload.marl.learner import Demo, Imitation, load_parts, save_parts
from llmoffload.marl.numerics import (
    Diagnostics,
    adam,
    clipped_surrogate,
    descend,
    entropy,
    generator,
    ppo_diagnostics,
    sample,
)
from llmoffload.marl.ranges import Count, NonNegative, Positive, Tally, Unit
from llmoffload.model.execution import Dispatch, Schedule
from llmoffload.model.instance import Instance


@dataclass
class GnnSchedConfig(Imitation):
    """Hyperparameters, every one a choice (no paper gives them for this setting)."""

    planner: ClassVar[bool] = True

    init: str = "bc"  # starts from the expert; "none" is PPO from scratch
    hidden: Count = 64  # embedding width
    layers: Count = 3  # message-passing rounds: a workflow is at most a few arcs deep
    lr: Positive = 1e-4  # PPO's Adam step: small, not to undo the cloning
    group: Count = 8  # schedules sampled per training instance
    epochs: Count = 4  # PPO passes over each group
    clip: Unit = 0.2  # PPO's ratio clip
    entropy: NonNegative = 0.001  # entropy bonus while fine-tuning
    grad_clip: Positive = 1.0
    samples: Tally = 16  # schedules sampled beside the greedy one when planning


PARTS = ("net", "opt")
PLAN_SEED = 0  # the sampled plans' generator, seeded anew for every instance


def mean_over(h: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Per node v, the mean of h over the arcs src -> v (0 without any): (..., N, H)."""
    total = torch.zeros_like(h).index_add_(-2, dst, h[..., src, :])
    count = torch.zeros(h.shape[-2]).index_add_(0, dst, torch.ones(len(dst)))
    return total / count.clamp(min=1).unsqueeze(-1)


class MessagePassing(nn.Module):
    """h_v <- h_v + relu(W_0 h_v + W_1 mean_{p -> v} h_p + W_2 mean_{v -> s} h_s)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.own, self.up, self.down = (nn.Linear(hidden, hidden) for _ in range(3))

    def forward(self, h: torch.Tensor, arcs: torch.Tensor) -> torch.Tensor:
        src, dst = arcs
        down = mean_over(h, dst, src)  # from the successors
        return h + torch.relu(self.own(h) + self.up(mean_over(h, src, dst)) + self.down(down))


class GraphPolicy(nn.Module):
    """Scores every valid (node, server) pair of a batch of states of one instance."""

    def __init__(self, modalities: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(node_features(modalities), hidden), nn.ReLU())
        self.rounds = nn.ModuleList(MessagePassing(hidden) for _ in range(layers))
        self.server = nn.Sequential(nn.Linear(server_features(modalities), hidden), nn.ReLU())
        # the scorer's first layer, applied in parts (nodes, servers, context once each,
        # summed per valid pair), so no (pair, 3H + F_p) input is ever built
        self.node_part = nn.Linear(hidden, hidden)
        self.server_part = nn.Linear(hidden, hidden, bias=False)
        self.context_part = nn.Linear(hidden, hidden, bias=False)
        self.pair_part = nn.Linear(PAIR_FEATURES, hidden, bias=False)
        self.score = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, 1)

    def forward(
        self,
        nodes: torch.Tensor,
        arcs: torch.Tensor,
        servers: torch.Tensor,
        pairs: torch.Tensor,
        valid: torch.Tensor,
    ) -> torch.Tensor:
        """nodes (B, N, F_n), arcs (2, E), servers (B, S, F_s), pairs (B, N, S, F_p),
        valid (B, N, S) -> log-probabilities over the flattened pairs (B, N * S), only
        the valid ones scored (the others get -1e10, as ``nets.masked_log_softmax``)."""
        h = self.embed(nodes)
        for layer in self.rounds:
            h = layer(h, arcs)
        per_node = self.node_part(h) + self.context_part(h.mean(-2, keepdim=True))
        per_server = self.server_part(self.server(servers))
        b, v, k = valid.nonzero(as_tuple=True)
        first = per_node[b, v] + per_server[b, k] + self.pair_part(pairs[b, v, k])
        logits = torch.full(valid.shape, -1e10).index_put(
            (b, v, k), self.out(self.score(first))[:, 0]
        )
        return torch.log_softmax(logits.flatten(-2), -1)


def tensors(views: list[GraphView]) -> tuple[torch.Tensor, ...]:
    """The current states of views of one instance, stacked: (nodes, servers, pairs, valid)."""
    parts = zip(*(view.features() for view in views), strict=True)
    return tuple(torch.as_tensor(np.stack(p)) for p in parts)


class GnnSched:
    """A planner: ``plan`` an instance; ``imitate`` the expert; ``train_on`` instances."""

    def __init__(
        self, layout: Layout, agents: int, config: GnnSchedConfig, rng: np.random.Generator
    ) -> None:
        self.config, self.rng = config, rng
        self.generator = generator(rng)
        self.net = GraphPolicy(layout.modalities, config.hidden, config.layers)
        self.opt = adam(self.net.parameters(), lr=config.lr)
        self.progress = 0.0

    def log_pi(self, arcs: np.ndarray, state: tuple[torch.Tensor, ...]) -> torch.Tensor:
        nodes, servers, pairs, valid = state
        return self.net(nodes, torch.as_tensor(arcs), servers, pairs, valid)

    # -- acting ----------------------------------------------------------------

    @torch.inference_mode()
    def plan(self, instance: Instance) -> list[Dispatch]:
        """The best of the greedy schedule and ``samples`` sampled ones (ties: greedy)."""
        views = [GraphView(instance) for _ in range(1 + self.config.samples)]
        draws = torch.Generator().manual_seed(PLAN_SEED)
        for _ in self.rollout(views, draws, greedy=True):
            pass  # the views are the schedules; the steps are PPO's, not kept here
        schedules = [view.ex.schedule() for view in views]
        return min(schedules, key=lambda schedule: schedule.objective).order

    @torch.no_grad()
    def rollout(
        self, views: list[GraphView], draws: torch.Generator, greedy: bool = False
    ) -> Iterator[tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor]]:
        """Build the views' schedules at once, one dispatch each a step, every pair drawn
        from pi (the first view's the argmax if ``greedy``); yields each step's (state,
        choices, their log-probabilities)."""
        while not views[0].done:  # every view dispatches one subtask a step
            state = tensors(views)
            logp = self.log_pi(views[0].arcs, state)
            choice = sample(logp, draws)  # one draw per row from pi
            if greedy:
                choice[0] = logp[0].argmax()
            for view, a in zip(views, choice.tolist(), strict=True):
                view.step(*divmod(a, view.servers))
            yield state, choice, logp.gather(-1, choice.unsqueeze(-1)).squeeze(-1)

    # -- behaviour cloning -------------------------------------------------------

    def imitate(self, demos: list[Demo], progress: bool = False) -> float:
        """Clone the expert: every state of every replayed demonstration, its pair as the
        label, unclipped Adam steps. Returns the agreement (greedy pair = expert's) on
        those states after. ``progress`` shows a bar over the epochs."""
        replays = [replay(instance, order) for instance, order in demos]
        opt = adam(self.net.parameters(), lr=self.config.bc_lr)
        epochs = range(self.config.bc_epochs)
        for _ in tqdm(epochs, desc="clone expert", unit="epoch", disable=not progress):
            for k in torch.randperm(len(replays), generator=self.generator).tolist():
                arcs, state, labels = replays[k]
                logp = self.log_pi(arcs, state)
                loss = -logp.gather(-1, labels.unsqueeze(-1)).mean()
                descend(opt, loss, None)
        with torch.no_grad():
            hits = [(self.log_pi(a, s).argmax(-1) == y).float() for a, s, y in replays]
        return float(torch.cat(hits).mean())

    # -- PPO fine-tuning ---------------------------------------------------------

    def train_on(self, instance: Instance) -> tuple[list[Schedule], Diagnostics]:
        """One PPO update from ``group`` schedules sampled on ``instance``; returns them and
        the update's diagnostics: the epochs' mean loss, entropy, approximate KL and clip
        fraction."""
        c = self.config
        views = [GraphView(instance) for _ in range(c.group)]
        states, actions, old = zip(*self.rollout(views, self.generator), strict=True)
        schedules = [view.ex.schedule() for view in views]
        returns = -torch.tensor([s.objective for s in schedules]) / views[0].unit
        advantage = (returns - returns.mean()) / (returns.std() + 1e-8)
        batch = [torch.cat(part) for part in zip(*states, strict=True)]
        taken, old_logp = torch.cat(actions), torch.cat(old)
        adv = advantage.repeat(len(states))  # states are stacked step after step
        logs: list[Diagnostics] = []
        for _ in range(c.epochs):
            logp = self.log_pi(views[0].arcs, tuple(batch))
            taken_logp = logp.gather(-1, taken.unsqueeze(-1)).squeeze(-1)
            surrogate = clipped_surrogate(taken_logp, old_logp, adv, c.clip)
            h = entropy(logp.exp(), logp.clamp(min=-1e9))  # a masked pair's -1e10 floored
            loss = -(surrogate + c.entropy * h).mean()
            descend(self.opt, loss, c.grad_clip)
            logs.append(
                {"loss": loss.item(), "entropy": h.detach().mean().item()}
                | ppo_diagnostics(taken_logp, old_logp, c.clip)
            )
        return schedules, {key: float(np.mean([log[key] for log in logs])) for key in logs[0]}

    # -- checkpoints -----------------------------------------------------------

    def state_dict(self) -> dict:
        return {"config": asdict(self.config), **save_parts(self, PARTS)}

    def load_state_dict(self, state: dict) -> None:
        load_parts(self, state, PARTS)


def replay(instance: Instance, order: list[Dispatch]) -> tuple[np.ndarray, tuple, torch.Tensor]:
    """The expert's schedule step by step: its states stacked, and its pair at each."""
    view = GraphView(instance)
    states, labels = [], []
    for d in order:
        states.append(view.features())
        node = view.node_of(d.task, d.subtask)
        labels.append(node * view.servers + d.server)
        view.step(node, d.server)
    stacked = tuple(torch.as_tensor(np.stack(p)) for p in zip(*states, strict=True))
    return view.arcs, stacked, torch.tensor(labels)
