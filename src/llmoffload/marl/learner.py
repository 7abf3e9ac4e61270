"""The contracts between the learners and the trainer: what a learner offers, what its
config declares it can do, and the step it learns from.

Two kinds of learner, each a protocol below:

- ``Learner`` acts in the multi-agent env (UCB-COMA, COMA, MAPPO, MADDPG, CS-UCB,
  Random): built from ``(layout, agents, config, rng)``, it offers

  - ``act(obs, active, masks, explore) -> actions``: one action per agent
    (-1 for inactive ones). ``obs`` is (..., I, O), ``active`` (..., I) and
    ``masks`` (..., I, A) the actions allowed; a leading axis holds episodes
    played in lockstep (``training.run_episodes``), one forward for all.
    ``explore=False`` acts greedily over valid actions and learns nothing.
  - ``observe(transition) -> diagnostics``: one environment step of one episode, to
    learn from; the steps of lockstep episodes arrive in episode order within each
    step. It returns the diagnostics of the update the step set off (losses,
    entropy, ...: ``numerics.Diagnostics``), empty if none.
  - ``imitate(demos, env, progress) -> agreement`` where its config is warm-startable
    (``Imitation``): behaviour cloning of the expert before RL (``Imitator``).

- ``Planner`` plans a whole instance at once (gnn-sched): ``plan(instance)`` returns a
  dispatch sequence, ``train_on(instance)`` samples schedules of a training instance
  and updates on them, ``imitate(demos, progress)`` clones the expert.

Both offer ``state_dict()`` / ``load_state_dict(state)`` (checkpoints holding only
tensors and plain data, so that ``torch.load(weights_only=True)`` reads them:
``save_parts``), ``progress`` (the fraction of training done, set by the trainer) and
``config``, whose class declares the capabilities the trainer dispatches on
(``LearnerConfig``), as BenchMARL's algorithm configs declare theirs. Computing
diagnostics never draws from a generator nor changes a number training uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import torch

from llmoffload.errors import OffloadError
from llmoffload.marl.numerics import Diagnostics
from llmoffload.marl.ranges import Count, Positive

if TYPE_CHECKING:
    from llmoffload.marl.env import OffloadEnv
    from llmoffload.model.execution import Dispatch, Schedule
    from llmoffload.model.instance import Instance

Demo = tuple["Instance", list["Dispatch"]]  # an instance and the expert's dispatch sequence
INITS = ("none", "bc")


class LearnerConfig:
    """The base of every learner's config (a dataclass of its settings, none here): what
    the learner can do, declared by its class and read by the trainer, never guessed."""

    planner: ClassVar[bool] = False  # a ``Planner`` (plans instances), else a ``Learner``

    @property
    def masked(self) -> bool:
        """Whether it acts on the env's valid actions while training: by default it does
        (CS-UCB, whose constraint filter they are); ``ProtocolMask`` lets --protocol say."""
        return True

    @property
    def warm_start(self) -> Imitation | None:
        """Its warm-start settings if it clones the expert before RL (``init="bc"``)."""
        return None


class ProtocolMask(LearnerConfig):
    """A config whose ``mask`` setting the protocol chooses (``training.make_config``):
    False under ``paper`` (it learns validity from the env's penalties), True under
    ``masked`` (it acts on the env's valid actions only)."""

    mask: bool  # a setting of the dataclass that mixes this in

    @property
    def masked(self) -> bool:
        return self.mask


@dataclass
class Imitation(LearnerConfig):
    """The warm-start settings every learner that can clone the expert shares
    (``marl/imitation.py``); its learner is an ``Imitator`` or a ``Planner``."""

    init: str = "none"  # "bc": clone the expert before RL
    # choice: the expert solves training instances until their subtasks (its dispatch
    # decisions) add up to this: ~130 instances of 5 tasks, ~33 of 20 tasks
    expert_decisions: Count = 3000
    expert_time_limit_s: Positive = 2.0  # choice: CP-SAT's limit per expert instance
    bc_epochs: Count = 60  # choice: passes over the expert's states
    bc_lr: Positive = 3e-3  # choice: Adam's step while cloning (measured, docs/gnn_sched.md)

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise OffloadError(f"init={self.init}: choose from {', '.join(INITS)}")

    @property
    def warm_start(self) -> Imitation | None:
        return self if self.init == "bc" else None


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
    """Acts in the multi-agent env and learns from its steps (see the module's text)."""

    progress: float

    @property
    def config(self) -> LearnerConfig: ...

    def act(
        self, obs: np.ndarray, active: np.ndarray, masks: np.ndarray, explore: bool
    ) -> np.ndarray: ...

    def observe(self, transition: Transition, /) -> Diagnostics: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class Imitator(Learner, Protocol):
    """A ``Learner`` whose config is an ``Imitation``: it can clone the expert first."""

    def imitate(self, demos: list[Demo], env: OffloadEnv, progress: bool = False) -> float: ...


class Planner(Protocol):
    """Plans a whole instance; trains on instances, not on the env's steps."""

    progress: float

    @property
    def config(self) -> LearnerConfig: ...

    def plan(self, instance: Instance) -> list[Dispatch]: ...

    def train_on(self, instance: Instance) -> tuple[list[Schedule], Diagnostics]: ...

    def imitate(self, demos: list[Demo], progress: bool = False) -> float: ...

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
