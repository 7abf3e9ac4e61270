"""A fixed-size replay buffer of environment steps, sampled with the run's generator."""

from __future__ import annotations

import numpy as np
import torch

from llmoffload.marl.learner import Transition


class ReplayBuffer:
    """Ring buffer of the newest ``capacity`` steps, each stored with the team reward
    (the sum of the agents' rewards, the paper's global reward), sampled uniformly."""

    def __init__(
        self, capacity: int, agents: int, size: int, actions: int, rng: np.random.Generator
    ) -> None:
        fields: dict[str, tuple[tuple[int, ...], type]] = {
            "state": ((agents * size,), np.float32),
            "actions": ((agents,), np.int64),
            "active": ((agents,), np.float32),
            "masks": ((agents, actions), np.int8),
            "reward": ((), np.float32),
            "next_state": ((agents * size,), np.float32),
            "next_active": ((agents,), np.float32),
            "next_masks": ((agents, actions), np.int8),
            "terminal": ((), np.float32),
        }
        self.capacity = capacity
        self.data = {k: np.zeros((capacity, *shape), dtype) for k, (shape, dtype) in fields.items()}
        self.rng = rng
        self.size = 0
        self.next = 0

    def __len__(self) -> int:
        return self.size

    def add(self, t: Transition) -> None:
        row = {
            "state": t.state,
            "actions": t.actions,
            "active": t.active,
            "masks": t.masks,
            "reward": t.rewards.sum(),
            "next_state": t.next_state,
            "next_active": t.next_active,
            "next_masks": t.next_masks,
            "terminal": t.terminal,
        }
        for key, store in self.data.items():
            store[self.next] = row[key]
        self.next = (self.next + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, n: int) -> dict[str, torch.Tensor]:
        idx = self.rng.integers(self.size, size=n)
        return {k: torch.as_tensor(v[idx]) for k, v in self.data.items()}
