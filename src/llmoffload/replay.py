"""A fixed-size replay buffer of named numpy fields, sampled with the run's generator."""

from __future__ import annotations

import numpy as np
import torch


class ReplayBuffer:
    """Ring buffer: the newest ``capacity`` transitions, sampled uniformly."""

    def __init__(
        self,
        capacity: int,
        fields: dict[str, tuple[tuple[int, ...], np.dtype | type]],
        rng: np.random.Generator,
    ) -> None:
        self.capacity = capacity
        self.data = {k: np.zeros((capacity, *shape), dtype) for k, (shape, dtype) in fields.items()}
        self.rng = rng
        self.size = 0
        self.next = 0

    def __len__(self) -> int:
        return self.size

    def add(self, **transition: np.ndarray | float | bool) -> None:
        for key, store in self.data.items():
            store[self.next] = transition[key]
        self.next = (self.next + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, n: int) -> dict[str, torch.Tensor]:
        idx = self.rng.integers(self.size, size=n)
        return {k: torch.as_tensor(v[idx]) for k, v in self.data.items()}
