"""The learners by name: what ``--algo`` chooses from, one line each.

Each follows ``learner.Learner`` or, where its config declares ``planner``,
``learner.Planner``; its config dataclass holds its paper's defaults and declares
its capabilities (``learner.LearnerConfig``). The classic schedulers are in
``schedulers.registry.SCHEDULERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmoffload.marl.algorithms.coma import Coma, ComaConfig
from llmoffload.marl.algorithms.cs_ucb import CsUcb, CsUcbConfig
from llmoffload.marl.algorithms.gnn_sched import GnnSched, GnnSchedConfig
from llmoffload.marl.algorithms.maddpg import Maddpg, MaddpgConfig
from llmoffload.marl.algorithms.mappo import Mappo, MappoConfig
from llmoffload.marl.algorithms.random_policy import RandomConfig, RandomPolicy
from llmoffload.marl.env import Layout
from llmoffload.marl.learner import Learner, LearnerConfig, Planner


@dataclass(frozen=True)
class Learned:
    """A learner: its config class, the settings that set it apart, its constructor."""

    config: type[LearnerConfig]
    build: Callable[[Layout, int, Any, np.random.Generator], Learner | Planner]
    defaults: dict[str, Any] = field(default_factory=dict)


# the paper's six methods, what its sweep (Figs. 4-9) compares
PAPER = ("ucb-coma", "coma", "maddpg", "mappo", "cs-ucb", "random")
LEARNERS: dict[str, Learned] = {
    "ucb-coma": Learned(ComaConfig, Coma, {"ucb": True}),
    "coma": Learned(ComaConfig, Coma, {"ucb": False}),
    "maddpg": Learned(MaddpgConfig, Maddpg),
    "mappo": Learned(MappoConfig, Mappo),
    "cs-ucb": Learned(CsUcbConfig, CsUcb),
    "random": Learned(RandomConfig, RandomPolicy),
    "gnn-sched": Learned(GnnSchedConfig, GnnSched),
    # the paper's learners started from the expert (marl/imitation.py), then their own RL
    "ucb-coma-bc": Learned(ComaConfig, Coma, {"ucb": True, "init": "bc"}),
    "coma-bc": Learned(ComaConfig, Coma, {"ucb": False, "init": "bc"}),
    "mappo-bc": Learned(MappoConfig, Mappo, {"init": "bc"}),
}
