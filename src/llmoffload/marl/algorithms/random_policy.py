"""The paper's Random baseline (§5.2; docs/model.md §5) as a Learner: uniform over all actions,
or over the valid ones under the masked protocol.

Each active agent draws its (subtask, server) uniformly from all J x S
actions, invalid ones included, so it pays the env's penalties as the
paper's Random does (§5.2: subtask order and execution location both chosen
at random, using no feature of the environment or the task). With ``mask``
(``--protocol masked``) it draws uniformly among the valid actions instead,
the masked protocol's Random. Either way it is distinct from the classic
scheduler ``random-valid`` (``heuristics.random_valid``), which picks one valid
dispatch of any task at a time, outside the environment's agents and steps.

Random has no greedy mode: with ``explore=False`` (evaluation) it draws the
same way, so an evaluation episode can hit the env's step limit with
subtasks undone (without ``mask``), and its objective, latency and cost are
then NaN. It learns nothing; ``observe`` is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmoffload.marl.env import Layout
from llmoffload.marl.learner import ProtocolMask, Transition
from llmoffload.marl.numerics import Diagnostics


@dataclass
class RandomConfig(ProtocolMask):
    """Random's one setting: whether it draws among the valid actions only."""

    mask: bool = False  # the paper's Random draws from all actions; True: valid ones only


class RandomPolicy:
    """Uniform over all actions, training and evaluation alike."""

    def __init__(
        self, layout: Layout, agents: int, config: RandomConfig, rng: np.random.Generator
    ) -> None:
        self.actions, self.config = layout.actions, config
        self.rng = rng.spawn(1)[0]  # its own stream, derived from the run's generator
        self.progress = 0.0  # unused: Random has no schedule, but the trainer sets it

    def act(
        self, obs: np.ndarray, active: np.ndarray, masks: np.ndarray, explore: bool
    ) -> np.ndarray:
        """One uniform draw per agent over all actions (over the valid ones with
        ``config.mask``); -1 for inactive ones."""
        if not self.config.mask:
            return np.where(active, self.rng.integers(self.actions, size=active.shape), -1)
        valid = np.where(active[..., None], masks > 0, True)  # inactive rows: any action
        choice = (self.rng.random(valid.shape) * valid).argmax(-1)
        return np.where(active, choice, -1)

    def observe(self, transition: Transition) -> Diagnostics:
        """Random learns nothing."""
        return {}

    def state_dict(self) -> dict:
        """The generator's state, so a restored Random draws on where training stopped."""
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
