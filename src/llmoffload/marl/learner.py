"""What every learner offers the trainer, and the step it learns from.

A learner (UCB-COMA, COMA, and the paper's other baselines) is built from
``(layout, agents, config, rng)`` and offers:

- ``act(obs, active, masks, explore) -> actions``: one action per agent
  (-1 for inactive ones). ``obs`` is (..., I, O), ``active`` (..., I) and
  ``masks`` (..., I, A) the actions allowed; a leading axis holds episodes
  played in lockstep (``training.run_episodes``), one forward for all.
  ``explore=False`` acts greedily over valid actions and learns nothing.
- ``observe(transition)``: one environment step of one episode, to learn from;
  the steps of lockstep episodes arrive in episode order within each step.
- ``state_dict()`` / ``load_state_dict(state)``: checkpoints, holding only tensors
  and plain data so that ``torch.load(weights_only=True)`` reads them (``save_parts``).
- ``progress``: the fraction of training done, set by the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch


@dataclass(frozen=True)
class Transition:
    """One environment step as every learner sees it."""

    state: np.ndarray  # (I * O,) global state: every agent's observation
    actions: np.ndarray  # (I,) int, -1 for inactive agents
    active: np.ndarray  # (I,) bool: agents that acted
    masks: np.ndarray  # (I, A) int8: the actions that were valid
    rewards: np.ndarray  # (I,) each agent's reward (the team reward is their sum)
    next_state: np.ndarray
    next_active: np.ndarray  # (I,) bool: agents that would act at the next state
    next_masks: np.ndarray  # (I, A) valid actions at the next state
    terminal: bool  # every subtask is dispatched: nothing to bootstrap from
    truncated: bool = False  # the step limit ended the episode with work left: bootstrap
    env: int = 0  # which of the lockstep episodes (row of ``act``'s batch) it belongs to


class Learner(Protocol):
    progress: float

    def act(
        self, obs: np.ndarray, active: np.ndarray, masks: np.ndarray, explore: bool
    ) -> np.ndarray: ...

    def observe(self, transition: Transition) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def save_parts(owner: Any, parts: tuple[str, ...]) -> dict[str, Any]:
    """A learner's checkpoint: each named module or optimiser's state, a NumPy array as a
    tensor (``weights_only`` loading refuses arrays), or the plain value of a counter."""
    out: dict[str, Any] = {}
    for name in parts:
        part = getattr(owner, name)
        if hasattr(part, "state_dict"):
            out[name] = part.state_dict()
        else:
            out[name] = torch.tensor(part) if isinstance(part, np.ndarray) else part
    return out


def load_parts(owner: Any, state: dict[str, Any], parts: tuple[str, ...]) -> None:
    """Restore ``save_parts``'s checkpoint; a part of another kind or shape than the
    learner's own is a ValueError, caught here rather than mid-episode."""
    for name in parts:
        part, value = getattr(owner, name), state[name]
        if hasattr(part, "load_state_dict"):
            part.load_state_dict(value)
            continue
        if isinstance(part, np.ndarray) and isinstance(value, torch.Tensor):
            value = value.numpy().astype(part.dtype)
        if type(value) is not type(part) or np.shape(value) != np.shape(part):
            raise ValueError(
                f"'{name}': {type(value).__name__} of shape {np.shape(value)} where "
                f"{type(part).__name__} of shape {np.shape(part)} belongs"
            )
        setattr(owner, name, value)
