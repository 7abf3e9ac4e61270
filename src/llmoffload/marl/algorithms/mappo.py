"""MAPPO (Yu et al. 2022, "The Surprising Effectiveness of PPO in Cooperative Multi-Agent
Games"), as marlbenchmark/on-policy implements it, for the paper's baseline (docs/model.md §5).

One actor per agent (``nets.Actors``: subtask head x location head, ``a = j * S + k``) and
one centralised value network V(S, i) shared by the agents, fed the global state with the
agent's id one-hot appended (on-policy's shared critic with agent id). Feed-forward, as
on-policy's MLP policy: ``nets.Actors`` has no recurrent state.

Algorithm 1 of Yu et al. (MAPPO), step by step, as this file follows it:
  initialise the actors pi_theta and the critic V_phi      ``Mappo.__init__`` (PyTorch's
      default initialisation, ``nets.Actors``'s, not the paper's orthogonal one)
  for every step t, for every agent a: p_t = pi(o_t^a), u_t^a ~ p_t, v_t^a = V(s_t, a)
      (log p_t(u_t^a) and v_t^a are kept for the update)   ``Mappo.act``
  execute u_t, observe r_t, s_t+1; append to the trajectory ``Mappo.observe``
  once the rollout holds ``rollout_steps`` steps and no episode is under way
  (episodes played in lockstep are kept apart, one trajectory each):
      GAE advantages and rewards-to-go, the latter normalised by running
      statistics (on-policy's ValueNorm in place of PopArt) ``gae``, ``ValueNorm``
  for ``ppo_epoch`` passes, for each of ``num_mini_batch`` random minibatches:
      Adam on L(theta), the clipped surrogate plus entropy   ``clipped_surrogate``
      Adam on L(phi), the clipped Huber value loss           ``clipped_value_loss``
      (both in ``Mappo.update``); then the rollout is spent

Rewards: every agent trains on the team reward (the sum of the agents' rewards), as
on-policy does with the env's shared reward; ``shared_reward=False`` trains each agent on
its own reward instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from llmoffload.marl import numerics
from llmoffload.marl.env import Layout
from llmoffload.marl.imitation import ClonesActors
from llmoffload.marl.learner import Imitation, ProtocolMask, Transition, load_parts, save_parts
from llmoffload.marl.nets import Actors, ValueNorm, mlp
from llmoffload.marl.numerics import Diagnostics, adam, best_valid, clipped_surrogate, descend
from llmoffload.marl.ranges import Count, NonNegative, Positive, Unit


@dataclass
class MappoConfig(Imitation, ProtocolMask):
    """Hyperparameters: on-policy's defaults (``onpolicy/config.py``) unless marked."""

    lr: Positive = 5e-4  # on-policy --lr (actor)
    critic_lr: Positive = 5e-4  # on-policy --critic_lr
    adam_eps: Positive = 1e-5  # on-policy --opti_eps
    gamma: Unit = 0.99  # on-policy --gamma
    gae_lambda: Unit = 0.95  # on-policy --gae_lambda
    clip: Unit = 0.2  # on-policy --clip_param (ratio and value clipping)
    ppo_epoch: Count = 15  # on-policy --ppo_epoch (a 700-episode paper run: ~80 s, 1 thread)
    num_mini_batch: Count = 1  # on-policy --num_mini_batch
    # choice: env steps per rollout, closed at the next episode's end. on-policy collects
    # episode_length 200 x 8-128 threads, a handful of updates in a 700-episode run here;
    # of 50, 100 and 200, 100 learned best on the paper scenario (measured, 700 episodes).
    rollout_steps: Count = 100
    entropy: NonNegative = 0.01  # on-policy --entropy_coef
    value_coef: NonNegative = 1.0  # on-policy --value_loss_coef
    huber_delta: Positive = 10.0  # on-policy --huber_delta
    grad_clip: Positive = 10.0  # on-policy --max_grad_norm
    hidden: Count = 64  # on-policy --hidden_size (actor body and critic)
    # on-policy's MPE gives every agent the sum of the rewards in a cooperative world;
    # the paper's global reward is that sum too (§4.1). False: each agent's own reward.
    shared_reward: bool = True
    # True: act and learn on the env's valid actions (on-policy's available_actions,
    # --protocol masked); False: on every action not yet refused in the current state
    mask: bool = False


class StateValue(nn.Module):
    """V(S, i): the global state with agent i's id one-hot -> one (normalised) value.

    The inputs go through a LayerNorm first, on-policy's default feature
    normalisation: the state mixes GHz, prices, seconds and 0/1 flags.
    """

    def __init__(self, state_size: int, agents: int, hidden: int) -> None:
        super().__init__()
        self.agents = agents
        self.net = nn.Sequential(
            nn.LayerNorm(state_size + agents), mlp(state_size + agents, hidden, 1)
        )

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """state (..., I * O) -> values (..., I)."""
        ids = torch.eye(self.agents).expand(*state.shape[:-1], -1, -1)
        x = torch.cat([state.unsqueeze(-2).expand(*ids.shape[:-1], -1), ids], -1)
        return self.net(x).squeeze(-1)


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    end: torch.Tensor,
    bootstrap: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """Returns R_t = A_t + V_t with GAE advantages, for rewards and values (T, I).

    ``end[t]`` marks the last step of an episode, where ``bootstrap[t]`` stands in
    for the next value: 0 at a terminal state (on-policy's ``masks[t + 1]``), V(S')
    when the step limit cut the episode short. The rollout ends with such a step.
    """
    returns = torch.zeros_like(values)
    advantage = torch.zeros_like(values[0])
    next_value = torch.zeros_like(values[0])
    for t in reversed(range(len(rewards))):
        if end[t]:
            next_value, advantage = bootstrap[t], torch.zeros_like(advantage)
        delta = rewards[t] + gamma * next_value - values[t]
        advantage = delta + gamma * lam * advantage
        returns[t] = advantage + values[t]
        next_value = values[t]
    return returns


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, targets: torch.Tensor, clip: float, delta: float
) -> torch.Tensor:
    """The larger Huber loss of the new value and of the value kept within ``clip`` of the
    value at acting time (on-policy's ``cal_value_loss``; all in normalised units).

    PyTorch's Huber loss, symmetric in the error: on-policy's ``huber_loss`` tests
    ``e > d`` where it means ``|e| > d`` and so gives no loss to errors below -d.
    """
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    huber = nn.functional.huber_loss
    return torch.max(
        huber(values, targets, reduction="none", delta=delta),
        huber(clipped, targets, reduction="none", delta=delta),
    )


def masked_mean(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean over the active agents only (on-policy's active masks)."""
    return (x * weights).sum() / weights.sum().clamp(min=1.0)


# what a checkpoint holds besides the config
PARTS = ("actors", "critic", "value_norm", "actor_opt", "critic_opt", "steps", "updates")


class Mappo(ClonesActors):
    """MAPPO: ``act`` each step, ``observe`` each transition; it updates on whole rollouts."""

    def __init__(
        self, layout: Layout, agents: int, config: MappoConfig, rng: np.random.Generator
    ) -> None:
        self.agents, self.config = agents, config
        self.generator = numerics.generator(rng)
        with numerics.seeded(int(rng.integers(2**62))):  # initial weights drawn from rng too
            self.actors = Actors(layout, agents, config.hidden)
            self.critic = StateValue(agents * layout.size, agents, config.hidden)
        self.value_norm = ValueNorm()
        self.actor_opt = adam(self.actors.parameters(), lr=config.lr, eps=config.adam_eps)
        self.critic_opt = adam(self.critic.parameters(), lr=config.critic_lr, eps=config.adam_eps)
        # each lockstep episode's steps, in order: GAE runs along one episode at a time
        self.rollouts: dict[int, list[dict[str, Any]]] = {}
        self.acted: tuple[np.ndarray, np.ndarray] | None = None  # (log pi(u), V) of the step
        self.steps = 0
        self.updates = 0
        self.progress = 0.0  # set by the trainer; on-policy's default has no schedule on it

    # -- acting ----------------------------------------------------------------

    @torch.inference_mode()  # no autograd bookkeeping at all: cheaper than no_grad
    def act(
        self, obs: np.ndarray, active: np.ndarray, masks: np.ndarray, explore: bool
    ) -> np.ndarray:
        """Sample u_i ~ pi(. | o_i) and keep log pi(u_i) and V(s, i) for the update when
        exploring; argmax of pi over the valid actions, learning nothing, when not."""
        logp = self.actors.log_pi(torch.as_tensor(obs), torch.as_tensor(masks))
        if explore:  # kept as (episodes, I): row e for lockstep episode e
            choice = numerics.sample(logp, self.generator)
            taken = logp.gather(-1, choice.unsqueeze(-1)).squeeze(-1)
            values = self.critic(torch.as_tensor(obs).flatten(-2))
            self.acted = (
                taken.reshape(-1, self.agents).numpy(),
                values.reshape(-1, self.agents).numpy(),
            )
        else:
            choice = best_valid(logp, torch.as_tensor(masks))
        return np.where(active, choice.numpy(), -1)

    # -- storing ---------------------------------------------------------------

    def observe(self, t: Transition) -> Diagnostics:
        """Add the step to the rollout; update once it is long enough and an episode ends."""
        if self.acted is None:
            raise RuntimeError("observe() needs the step's act(..., explore=True) first")
        old_logp, values = self.acted[0][t.env], self.acted[1][t.env]
        reward = np.full(self.agents, t.rewards.sum()) if self.config.shared_reward else t.rewards
        end = t.terminal or t.truncated
        with torch.no_grad():  # V(S') to bootstrap from where the step limit cut in
            cut = self.critic(torch.as_tensor(t.next_state)) if t.truncated else 0 * values
        self.rollouts.setdefault(t.env, []).append(
            {
                "state": t.state,
                "actions": t.actions,
                "active": t.active,
                "masks": t.masks,
                "reward": reward,
                "end": np.float32(end),
                "truncated": np.float32(t.truncated),
                "next_value": cut,
                "old_logp": old_logp,
                "value": values,
            }
        )
        self.steps += 1
        closed = all(steps[-1]["end"] for steps in self.rollouts.values())
        if closed and sum(map(len, self.rollouts.values())) >= self.config.rollout_steps:
            return self.update()
        return {}

    # -- learning --------------------------------------------------------------

    def update(self) -> Diagnostics:
        """GAE on the rollout, then ``ppo_epoch`` passes of minibatch Adam steps; clear.
        Returns the minibatch steps' mean losses, entropy, approximate KL and clip
        fraction, and the share of the returns' variance the values explained."""
        c = self.config
        rollout = [step for e in sorted(self.rollouts) for step in self.rollouts[e]]
        self.rollouts = {}
        b = {
            k: torch.as_tensor(np.stack([step[k] for step in rollout]), dtype=torch.float32)
            for k in rollout[0]
        }
        actions = b["actions"].long().clamp(min=0)
        with torch.no_grad():
            values = self.value_norm.denormalize(b["value"])
            cut = b["truncated"].unsqueeze(-1) * self.value_norm.denormalize(b["next_value"])
            returns = gae(b["reward"], values, b["end"], cut, c.gamma, c.gae_lambda)
            advantage = returns - values
            active = b["active"]
            mean = masked_mean(advantage, active)
            std = masked_mean((advantage - mean) ** 2, active).sqrt()
            advantage = (advantage - mean) / (std + 1e-5)  # on-policy, over active agents

        steps = len(actions)
        size = steps // c.num_mini_batch
        logs: list[Diagnostics] = []
        for _ in range(c.ppo_epoch):
            order = torch.randperm(steps, generator=self.generator)
            for k in range(c.num_mini_batch):
                rows = order[k * size : (k + 1) * size]
                step = self.ppo_step(
                    b["state"][rows],
                    b["masks"][rows],
                    actions[rows],
                    active[rows],
                    b["old_logp"][rows],
                    advantage[rows],
                    b["value"][rows],
                    returns[rows],
                )
                logs.append(step)
        self.updates += 1
        means = {key: float(np.mean([log[key] for log in logs])) for key in logs[0]}
        return {**means, "explained_variance": numerics.explained_variance(values, returns)}

    def ppo_step(
        self,
        state: torch.Tensor,
        masks: torch.Tensor,
        actions: torch.Tensor,
        active: torch.Tensor,
        old_logp: torch.Tensor,
        advantage: torch.Tensor,
        old_values: torch.Tensor,
        returns: torch.Tensor,
    ) -> Diagnostics:
        """One Adam step for the actors and one for the critic on a minibatch of steps;
        returns their losses, the entropy, the approximate KL and the clip fraction."""
        c = self.config
        logp, h = self.evaluate_actions(state, masks, actions)
        surrogate = clipped_surrogate(logp, old_logp, advantage, c.clip)
        actor_loss = -masked_mean(surrogate, active) - c.entropy * masked_mean(h, active)
        descend(self.actor_opt, actor_loss, c.grad_clip)

        # The critic learns on every step, active or not: V(S, i) is defined (and
        # bootstrapped from) after agent i's task is done too.
        self.value_norm.update(returns)
        targets = self.value_norm.normalize(returns)
        value_loss = clipped_value_loss(
            self.critic(state), old_values, targets, c.clip, c.huber_delta
        ).mean()
        descend(self.critic_opt, c.value_coef * value_loss, c.grad_clip)
        with torch.no_grad():
            h_mean = masked_mean(h, active).item()
        return {
            "actor_loss": actor_loss.item(),
            "value_loss": value_loss.item(),
            "entropy": h_mean,
            **numerics.ppo_diagnostics(logp, old_logp, c.clip, active),
        }

    def evaluate_actions(
        self, state: torch.Tensor, masks: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """log pi(u_i | o_i) of the taken actions and each agent's entropy, (B, I) each,
        under the same masking as acting."""
        logp = self.actors.log_pi(state.view(*actions.shape, -1), masks)
        h = numerics.entropy(logp.exp(), logp)
        return logp.gather(-1, actions.unsqueeze(-1)).squeeze(-1), h

    # -- checkpoints -----------------------------------------------------------

    def state_dict(self) -> dict:
        return {"config": asdict(self.config), **save_parts(self, PARTS)}

    def load_state_dict(self, state: dict) -> None:
        load_parts(self, state, PARTS)
