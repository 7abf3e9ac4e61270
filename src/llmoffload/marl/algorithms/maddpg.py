"""MADDPG (Lowe et al. 2017) for discrete actions, as EPyMARL's ``maddpg_learner.py``.

One actor per agent (``nets.Actors``: subtask head x location head, joint
log-probabilities over ``a = j * S + k`` used as the logits), one critic
Q_i(x, a_1 .. a_I) on the global state and every agent's one-hot action,
shared by the agents and told which agent's row it computes by a one-hot id
(EPyMARL's ``maddpg_critic`` with ``obs_agent_id``), and a target copy of
every network. Discrete actions are made differentiable with the
straight-through Gumbel-softmax (``torch.nn.functional.gumbel_softmax(hard=True)``).

Algorithm 1 of Lowe et al., as this file follows it:
  init   actors mu_i, critic Q, target networks mu'_i, Q', replay buffer D
  act    a_i = one-hot argmax(log pi_i(o_i) + g), g ~ Gumbel(0, 1): the Gumbel
         noise is the exploration process N (EPyMARL's action selector)
  store  (x, a, r, x') in D, with r the team reward (the sum of the agents')
  update every ``update_every`` steps, sample a minibatch of S transitions (one for
  all agents, as EPyMARL; the paper samples one per agent):
    critic  y = r + gamma Q'_i(x', a'_1 .. a'_I), a'_k the target actor's greedy
            one-hot action at o'_k; minimise (y - Q_i(x, a_1 .. a_I))^2
    actor   ascend Q_i(x, a_1 .. a_i .. a_I) with a_i = gumbel_softmax(mu_i(o_i))
            carrying the gradient and every other a_k a fresh, detached sample
            of the current policies (EPyMARL; the paper reuses D's a_k), minus
            a small penalty on the squared logits
    target  theta' <- tau theta + (1 - tau) theta' (or a hard copy every N updates)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from llmoffload.marl.env import Layout
from llmoffload.marl.learner import ProtocolMask, Transition, load_parts, save_parts
from llmoffload.marl.nets import Actors
from llmoffload.marl.numerics import (
    Diagnostics,
    adam,
    best_valid,
    descend,
    entropy,
    generator,
    masked_one_hot,
)
from llmoffload.marl.ranges import Count, NonNegative, Positive, Unit
from llmoffload.marl.replay import ReplayBuffer


def gumbel_softmax_hard(
    logits: torch.Tensor, generator: torch.Generator, temperature: float = 1.0
) -> torch.Tensor:
    """``torch.nn.functional.gumbel_softmax(logits, temperature, hard=True)`` with the
    Gumbel noise drawn from ``generator`` (torch's own draws from the global one):
    the forward value is the one-hot argmax, the gradient the soft sample's."""
    gumbels = -torch.empty_like(logits).exponential_(generator=generator).log()
    soft = torch.softmax((logits + gumbels) / temperature, -1)
    hard = nn.functional.one_hot(soft.argmax(-1), logits.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft


def own_action_only(actions: torch.Tensor) -> torch.Tensor:
    """(B, I, A) joint one-hot actions -> (B, I, I, A), one copy per critic row i in
    which only agent i's action carries gradient; the others are detached."""
    fixed = actions.detach()
    eye = torch.eye(actions.shape[1]).unsqueeze(-1)
    return fixed.unsqueeze(1) + eye * (actions - fixed).unsqueeze(1)


class JointCritic(nn.Module):
    """Q_i(x, a_1 .. a_I): the global state, every agent's one-hot action and agent
    i's id -> one value per agent row, all rows in one batched pass.

    EPyMARL's ``MADDPGCritic`` (three layers, ReLU), with its first layer split
    in two: the state's share is the same for every row, so it is computed once.
    """

    def __init__(self, layout: Layout, agents: int, hidden: int) -> None:
        super().__init__()
        self.state_in = nn.Linear(agents * layout.size, hidden)
        self.row_in = nn.Linear(agents * (layout.actions + 1), hidden, bias=False)
        self.rest = nn.Sequential(
            nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def forward(self, state: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """state (B, I * O), each row's joint actions (B, I, I, A) -> Q (B, I)."""
        b, n = rows.shape[:2]
        ids = torch.eye(n).expand(b, n, n)
        row = self.row_in(torch.cat([rows.flatten(-2), ids], -1))
        return self.rest(self.state_in(state).unsqueeze(1) + row).squeeze(-1)


@dataclass
class MaddpgConfig(ProtocolMask):
    """Hyperparameters: EPyMARL's ``maddpg.yaml`` where they carry over, else marked."""

    lr: Positive = 5e-4  # EPyMARL maddpg.yaml, actors and critic alike
    gamma: Unit = 0.95  # openai/maddpg train.py and the paper's psi (Table 2); EPyMARL: 0.99
    # choice: EPyMARL replays 16 episodes per new episode; 128 / 8 replays 16 per new step
    batch_size: Count = 128
    update_every: Count = 8  # env steps between updates
    buffer_size: Count = 15000  # choice: a whole 700-episode run (<= 20 steps each), as EPyMARL
    target_update: Positive = 0.01  # EPyMARL's target_update_interval_or_tau: <= 1 is tau, else N
    # choice: EPyMARL's reg is 1e-3 on raw logits; on these log-probabilities 1e-3 lets pi
    # collapse onto invalid actions (paper scenario, 300 episodes, seeds 0 and 1: mean reward
    # of the last 30 episodes -93 and -83 at 1e-3, -31 and -52 at 1e-2)
    reg: NonNegative = 1e-2
    temperature: Positive = 1.0  # EPyMARL's gumbel_softmax default
    hidden: Count = 128  # EPyMARL maddpg.yaml hidden_dim
    grad_clip: Positive = 10.0  # EPyMARL default.yaml grad_norm_clip
    # True: act on the env's valid actions (--protocol masked); False: on every action
    # not yet refused in the current state (the paper protocol)
    mask: bool = False


# what a checkpoint holds besides the config
PARTS = (
    "actors",
    "critic",
    "target_actors",
    "target_critic",
    "actor_opt",
    "critic_opt",
    "steps",
    "updates",
)


class Maddpg:
    """MADDPG: ``act`` each step, ``observe`` each transition; it updates itself."""

    def __init__(
        self, layout: Layout, agents: int, config: MaddpgConfig, rng: np.random.Generator
    ) -> None:
        self.layout, self.agents, self.config = layout, agents, config
        self.generator = generator(rng)
        self.actors = Actors(layout, agents, config.hidden)
        self.critic = JointCritic(layout, agents, config.hidden)
        self.target_actors = Actors(layout, agents, config.hidden)
        self.target_critic = JointCritic(layout, agents, config.hidden)
        self.target_actors.load_state_dict(self.actors.state_dict())
        self.target_critic.load_state_dict(self.critic.state_dict())
        self.actor_opt = adam(self.actors.parameters(), lr=config.lr)
        self.critic_opt = adam(self.critic.parameters(), lr=config.lr)
        self.buffer = ReplayBuffer(config.buffer_size, agents, layout.size, layout.actions, rng)
        self.steps = 0
        self.updates = 0
        self.progress = 0.0  # set by the trainer; MADDPG has no schedule to follow

    # -- acting ----------------------------------------------------------------

    @torch.inference_mode()  # no autograd bookkeeping at all: cheaper than no_grad
    def act(
        self, obs: np.ndarray, active: np.ndarray, masks: np.ndarray, explore: bool
    ) -> np.ndarray:
        """One action per agent (-1 for inactive ones): a hard Gumbel-softmax sample when
        exploring, the most likely valid action when not."""
        logits = self.actors.log_pi(torch.as_tensor(obs), torch.as_tensor(masks))
        if explore:
            c = self.config
            choice = gumbel_softmax_hard(logits, self.generator, c.temperature).argmax(-1)
        else:
            choice = best_valid(logits, torch.as_tensor(masks))
        return np.where(active, choice.numpy(), -1)

    # -- learning --------------------------------------------------------------

    def observe(self, t: Transition) -> Diagnostics:
        """Store (x, a, r, x') with r the team reward; update every ``update_every`` steps."""
        self.buffer.add(t)
        self.steps += 1
        c = self.config
        if self.steps % c.update_every == 0 and len(self.buffer) >= c.batch_size:
            return self.update()
        return {}

    def update(self) -> Diagnostics:
        """One step of Algorithm 1's inner loop on a minibatch: critic, actors, targets.
        Returns the critic's and the actors' losses and the policies' entropy (mean
        over the acting agents)."""
        c = self.config
        b = self.buffer.sample(c.batch_size)
        n, size, actions = self.agents, self.layout.size, self.layout.actions

        # Critic: y = r + gamma Q'_i(x', mu'(o')), the target actors acting greedily.
        with torch.no_grad():
            next_logits = self.target_actors.log_pi(
                b["next_state"].view(-1, n, size), b["next_masks"]
            )
            next_actions = masked_one_hot(next_logits.argmax(-1), actions) * b[
                "next_active"
            ].unsqueeze(-1)
            q_next = self.target_critic(b["next_state"], self.rows(next_actions))
            y = b["reward"].unsqueeze(-1) + c.gamma * (1.0 - b["terminal"].unsqueeze(-1)) * q_next
        taken = self.rows(masked_one_hot(b["actions"], actions))
        critic_loss = ((self.critic(b["state"], taken) - y) ** 2).mean()
        descend(self.critic_opt, critic_loss, c.grad_clip)

        # Actors: ascend Q_i through agent i's straight-through Gumbel-softmax action.
        losses, logits = self.actor_losses(b["state"], b["active"], b["masks"])
        actor_loss = (losses * b["active"]).sum() / b["active"].sum()
        descend(self.actor_opt, actor_loss, c.grad_clip)

        self.updates += 1
        self.update_targets()
        with torch.no_grad():
            h = (entropy(logits.exp(), logits) * b["active"]).sum() / b["active"].sum()
        return {
            "critic_loss": critic_loss.item(),
            "actor_loss": actor_loss.item(),
            "entropy": h.item(),
        }

    def rows(self, actions: torch.Tensor) -> torch.Tensor:
        """(B, I, A) joint actions -> (B, I, I, A): every critic row sees the same ones."""
        return actions.unsqueeze(1).expand(-1, self.agents, -1, -1)

    def actor_losses(
        self, state: torch.Tensor, active: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each agent's loss (B, I): -Q_i(x, a) with a_i a fresh straight-through sample
        of mu_i(o_i), the only action in row i that carries gradient (the others are
        detached samples, inactive agents' zero), plus ``reg`` x the mean squared
        logit over agent i's allowed actions (EPyMARL zeroes the masked ones); and the
        log-probabilities (B, I, A) it came from, for the update's diagnostics."""
        c = self.config
        logits = self.actors.log_pi(state.view(-1, self.agents, self.layout.size), masks)
        sampled = gumbel_softmax_hard(logits, self.generator, c.temperature)
        q = self.critic(state, own_action_only(sampled * active.unsqueeze(-1)))
        valid = (masks > 0) | (masks == 0).all(-1, keepdim=True)
        penalty = torch.where(valid, logits, 0.0).square().sum(-1) / valid.sum(-1)
        return -q + c.reg * penalty, logits

    def update_targets(self) -> None:
        """Soft update theta' <- tau theta + (1 - tau) theta' when ``target_update`` <= 1,
        else a hard copy every ``target_update`` updates (EPyMARL's
        ``target_update_interval_or_tau``, which counts episodes instead)."""
        pairs = ((self.target_actors, self.actors), (self.target_critic, self.critic))
        tau = self.config.target_update
        if tau <= 1.0:
            with torch.no_grad():
                for target, net in pairs:
                    for p_target, p in zip(target.parameters(), net.parameters(), strict=True):
                        p_target.lerp_(p, tau)
        elif self.updates % int(tau) == 0:
            for target, net in pairs:
                target.load_state_dict(net.state_dict())

    # -- checkpoints -----------------------------------------------------------

    def state_dict(self) -> dict:
        return {"config": asdict(self.config), **save_parts(self, PARTS)}

    def load_state_dict(self, state: dict) -> None:
        load_parts(self, state, PARTS)
