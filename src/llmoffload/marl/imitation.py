"""A warm start from the expert: behaviour cloning of the optimum's dispatch choices.

A demonstration is an instance and the expert's dispatch sequence on it (the CP-SAT
schedule, ``experiments/expert.py``). A learner that starts with ``init="bc"`` first
learns to choose as the expert does, then goes on with its own RL. The centralised
``gnn-sched`` clones the expert step by step on its whole-graph view; the paper's
learners (UCB-COMA, COMA, MAPPO) clone it per agent, here: each task's agent learns
the expert's next choice for its own task in every state of the expert's replay.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from tqdm import tqdm

from llmoffload.errors import OffloadError
from llmoffload.marl.env import OffloadEnv
from llmoffload.marl.learner import Demo, Imitation
from llmoffload.marl.nets import Actors
from llmoffload.marl.numerics import adam, descend


def agent_states(env: OffloadEnv, demos: list[Demo]) -> tuple[np.ndarray, ...]:
    """Replay each demonstration through the env, one dispatch a step, and keep every
    acting agent's (observation, valid actions, the expert's next action for its task).

    The env lets a task act only once it has arrived, earliest arrival first, so the
    expert's sequence is replayed in arrival order (stable: its order within a task,
    and among tasks that arrive together, is kept); with all tasks arriving at once
    that is the expert's own sequence, and the replay is its schedule.
    """
    obs, masks, labels = [], [], []
    servers = env.layout.servers
    for instance, order in demos:
        env.reset(seed=0, options={"instance": instance})
        arrival = [task.arrival_s for task in instance.tasks]
        order = sorted(order, key=lambda d: arrival[d.task])  # sorted() is stable
        for step, d in enumerate(order):
            active = env.acting()
            label = np.full(len(active), -1)
            for later in order[step:]:
                if active[later.task] and label[later.task] < 0:
                    label[later.task] = later.subtask * servers + later.server
            obs.append(env.observations().copy())
            masks.append(env.masks() * active[:, None])
            labels.append(label)
            joint = np.full(len(active), -1)
            joint[d.task] = d.subtask * servers + d.server
            _, infos = env.play(joint)
            if infos[d.task].get("run") is None:
                raise OffloadError(f"the expert's dispatch {tuple(d)} was refused in replay")
    return np.stack(obs), np.stack(masks), np.stack(labels)


def clone_actors(
    actors: Actors,
    states: tuple[np.ndarray, ...],
    config: Imitation,
    generator: torch.Generator,
    batch: int = 64,
    progress: bool = False,
) -> float:
    """Behaviour cloning of the per-agent actors: cross-entropy of the expert's action
    under each agent's masked policy, unclipped Adam steps; returns the agreement
    (argmax = expert) after. ``progress`` shows a bar over the epochs."""
    obs, masks, labels = (torch.as_tensor(x) for x in states)
    labels = labels.long()
    acting = labels >= 0
    opt = adam(actors.parameters(), lr=config.bc_lr)
    for _ in tqdm(range(config.bc_epochs), desc="clone expert", unit="epoch", disable=not progress):
        for rows in torch.randperm(len(obs), generator=generator).split(batch):
            logp = actors.log_pi(obs[rows], masks[rows])
            taken = logp.gather(-1, labels[rows].clamp(min=0).unsqueeze(-1)).squeeze(-1)
            live = acting[rows]
            loss = -(taken * live).sum() / live.sum().clamp(min=1)
            descend(opt, loss, None)
    with torch.no_grad():
        logp = actors.log_pi(obs, masks).masked_fill(masks == 0, -torch.inf)
        return float((logp.argmax(-1) == labels)[acting].float().mean())


class PerAgentActors(Protocol):
    """What ``ClonesActors.imitate`` reads of its learner."""

    actors: Actors
    generator: torch.Generator

    @property
    def config(self) -> Imitation: ...


class ClonesActors:
    """The warm start of a learner of per-agent actors (UCB-COMA, COMA, MAPPO): its
    ``imitate``, which makes it a ``learner.Imitator``."""

    def imitate(
        self: PerAgentActors, demos: list[Demo], env: OffloadEnv, progress: bool = False
    ) -> float:
        """Behaviour cloning of every agent's actor on the expert's replayed choices."""
        states = agent_states(env, demos)
        return clone_actors(self.actors, states, self.config, self.generator, progress=progress)
