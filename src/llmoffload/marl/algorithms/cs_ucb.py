"""CS-UCB, the constraint-satisfaction UCB bandit of PerLLM (arXiv 2405.14636), as a Learner.

The paper's baseline (§5.2; docs/model.md §5): filter the actions that meet
the constraints, then take the one with the highest upper confidence bound.
No network; a table of mean rewards and pull counts.

Arms. An arm is (modality of the chosen subtask, server): M x S arms, of
which only the pairs a server can serve are ever pulled (8 in the paper
scenario). The subtask's position j is no arm of its own because it names a
different node in each workflow; its modality is what decides how a server
serves it (which servers can, the data to upload, the cycles). Every valid
action (j, k) of an agent maps to one arm, so choosing the highest-UCB valid
action picks the server and, among the ready subtasks, the order too; ties
(e.g. two ready text subtasks) go to the lowest action index.

Shared statistics. All agents pool one table: a task's workflow is drawn
afresh for every agent slot each episode, so an agent's index says nothing
about what it faces, while every agent faces the same servers. Pooling gives
each arm I times the pulls of per-agent tables.

PerLLM's CS-UCB, as this file follows it:
  init     mean reward r(arm) = 0, pulls L(arm) = 0 for every arm
  filter   the env's action mask: precedence, modality, edge availability
           (failures), not yet dispatched; CS-UCB never takes a masked
           action, training or evaluation. The mask of an active agent is
           never empty: the cloud serves every modality and never fails.
  select   an untried arm among the filtered ones if any (lowest action
           index), else argmax r(arm) + delta sqrt(ln t / L(arm)), t = the
           decisions learned from so far (the sum of all L)
  update   observe: each acting agent's own reward updates its arm's running
           mean and L(arm)

Greedy (``explore=False``, evaluation) takes the highest mean among the
filtered arms (an untried arm counts its initial mean 0), with no bonus and
no learning. Untrained, it therefore sends every subtask to the lowest-index
server that serves it (the edges, in the paper scenario).

Scale: a valid dispatch earns about theta = 2 minus small latency and cost
terms, so the arms' means differ by only ~0.001-0.1. With delta = sqrt(2)
the bonus is still 0.1-0.2 after 700 paper episodes, so CS-UCB keeps
exploring; and for any delta in [0.03, 1.4] its training reward (~45 per
episode) rises by only 0.05-0.12 from the first to the last 50 episodes
(measured), since nearly all of it is the bonus every valid action earns.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from llmoffload.marl.env import Layout
from llmoffload.marl.learner import LearnerConfig, Transition, load_parts, save_parts
from llmoffload.marl.numerics import Diagnostics
from llmoffload.marl.ranges import NonNegative


@dataclass
class CsUcbConfig(LearnerConfig):
    """PerLLM's exploration weight delta; its value there is not known to us, so a choice."""

    delta: NonNegative = 2.0**0.5  # choice: UCB1's sqrt(2 ln t / L) (Auer et al. 2002)


PARTS = ("means", "pulls")  # what a checkpoint holds besides the config


class CsUcb:
    """A bandit over (modality, server) arms, shared by all agents, acting on valid actions.

    ``rng`` is not used: every choice is deterministic given the statistics.
    """

    def __init__(
        self, layout: Layout, agents: int, config: CsUcbConfig, rng: np.random.Generator
    ) -> None:
        self.layout, self.agents, self.config = layout, agents, config
        arms = layout.modalities * layout.servers
        self.means = np.zeros(arms)  # r(arm): mean reward of the arm's pulls
        self.pulls = np.zeros(arms, np.int64)  # L(arm)
        self.progress = 0.0  # unused: CS-UCB has no schedule, but the trainer sets it

    def arms(self, obs: np.ndarray) -> np.ndarray:
        """obs (..., I, O) -> the arm of every action (..., I, A): modality(j) * S + k.

        Padding subtasks read as modality 0; they are always masked out.
        """
        _, _, nodes, _ = self.layout.split(obs)
        modality = nodes[..., 1 : 1 + self.layout.modalities].argmax(-1)  # (I, J)
        servers = np.arange(self.layout.servers)
        return (modality[..., None] * self.layout.servers + servers).reshape(*obs.shape[:-1], -1)

    def scores(self, arms: np.ndarray, explore: bool) -> np.ndarray:
        """Each arm's index: its UCB (untried: +inf) when exploring, else its mean."""
        if not explore:
            return self.means[arms]
        t = max(int(self.pulls.sum()), 1)
        pulls = self.pulls[arms]
        bonus = self.config.delta * np.sqrt(math.log(t) / np.maximum(pulls, 1))
        return np.where(pulls > 0, self.means[arms] + bonus, np.inf)

    def act(
        self, obs: np.ndarray, active: np.ndarray, masks: np.ndarray, explore: bool
    ) -> np.ndarray:
        """The highest-scoring valid action of every active agent; -1 for inactive ones."""
        if (active & ~masks.any(-1)).any():
            raise ValueError("CS-UCB: an active agent has no valid action to choose from")
        scores = np.where(masks > 0, self.scores(self.arms(obs), explore), -np.inf)
        return np.where(active, scores.argmax(-1), -1)  # argmax: lowest index on ties

    def observe(self, t: Transition) -> Diagnostics:
        """Update the running mean and pull count of every acting agent's arm (a table,
        no update with a loss to report)."""
        arms = self.arms(t.state.reshape(self.agents, -1))
        for i in np.flatnonzero(t.active):
            arm = arms[i, t.actions[i]]
            self.pulls[arm] += 1
            self.means[arm] += (t.rewards[i] - self.means[arm]) / self.pulls[arm]
        return {}

    def state_dict(self) -> dict:
        return {"config": asdict(self.config), **save_parts(self, PARTS)}

    def load_state_dict(self, state: dict) -> None:
        load_parts(self, state, PARTS)
