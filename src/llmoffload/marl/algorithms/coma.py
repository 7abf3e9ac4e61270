"""UCB-COMA (paper §4.2, Algorithm 1) and its ablation, plain COMA.

One actor per agent (subtask head x location head), one centralised critic
Q(S, A) that gives all of an agent's action values in one pass (EPyMARL's
COMA critic), a target critic, and a replay buffer of (S, A, R, S').

Algorithm 1, as this file follows it:
  1-2  actors, critic and target critic; counts N_i, n_i(j, k); step = 0
  6    act: UCB-COMA scores every pair by log pi(j, k | s_i)
       + eps sqrt(2 ln N_i / (n_i(j, k) + 1)), eps decaying linearly over
       training, and samples from the softmax of the scores (the paper's
       argmax with ``select="argmax"``: a refused action leaves the state as it
       was, so that argmax repeats it until the step limit); COMA samples from pi
  7    store (S, A, R, S') with R the sum of the agents' rewards
  8-11 every ``update_every`` steps: sample B transitions, update the critic on
       the TD error (y - Q(S, A))^2, y = R + psi Q'(S', A') with A' drawn from
       the current actors at S' (bootstrapped also where the step limit cut the
       episode), in units of y's running mean and sd (EPyMARL's
       ``standardise_returns``); then each actor on grad log pi(a_i | s_i)
       (Q(S, A) - B_i), B_i = sum_a' pi(a' | s_i) Q(S, (a', A^-i)), taken in
       expectation over a_i ~ pi: sum_a grad pi(a | s_i) (Q(S, (a, A^-i)) - B_i).
       The critic gives every own action's value in one pass, so the
       expectation is exact; it is also the unbiased form when a_i came from
       UCB rather than from pi
  12-13 copy the critic into the target every 10 updates
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from llmoffload.errors import OffloadError
from llmoffload.marl import numerics
from llmoffload.marl.env import Layout
from llmoffload.marl.imitation import ClonesActors
from llmoffload.marl.learner import Imitation, ProtocolMask, Transition, load_parts, save_parts
from llmoffload.marl.nets import Actors, Critic, ValueNorm
from llmoffload.marl.numerics import adam, best_valid, descend, entropy, sample
from llmoffload.marl.ranges import Count, NonNegative, Positive, Unit
from llmoffload.marl.replay import ReplayBuffer


@dataclass
class ComaConfig(Imitation, ProtocolMask):
    """Hyperparameters; the paper's where it gives them (Table 2, §4.2), else marked."""

    ucb: bool = True  # UCB action selection (UCB-COMA); False samples from pi (COMA)
    # choice: "sample" draws from softmax(log pi + eps * bonus); "argmax" is Algorithm 1
    # line 6 to the letter, which repeats a refused action forever (see docs/assumptions.md)
    select: str = "sample"
    lr: Positive = 1e-3  # Table 2 (the critic's)
    actor_lr: Positive = 3e-4  # choice: 1e-3 collapses the actors, 1e-4 learns too slowly
    psi: Unit = 0.95  # discount, Table 2
    update_every: Count = 8  # choice: env steps between updates; Algorithm 1 line 8 says 32
    target_every: Count = 10  # updates between target copies, Algorithm 1 line 12
    batch_size: Count = 64  # choice: B is not given
    buffer_size: Count = 5000  # choice: |D| is not given
    hidden: Count = 128  # choice: actor/critic MLP width (the GCN's 64 is the paper's)
    eps_start: Unit = 1.0  # choice: UCB weight at the start, decays linearly ...
    eps_end: Unit = 0.1  # ... to this at the end of training
    grad_clip: Positive = 10.0  # choice: EPyMARL's default
    entropy: NonNegative = 0.01  # choice: entropy bonus keeps pi from collapsing early
    standardise: bool = True  # choice: critic targets in running-standardised units (EPyMARL)
    # True: act on the env's valid actions (--protocol masked); False: on every action
    # not yet refused in the current state (the paper protocol)
    mask: bool = False


SELECTIONS = ("sample", "argmax")  # UCB-COMA's action selection
# what a checkpoint holds besides the config
PARTS = (
    "actors",
    "critic",
    "target",
    "returns",
    "actor_opt",
    "critic_opt",
    "counts",
    "steps",
    "updates",
)


class Coma(ClonesActors):
    """UCB-COMA or COMA: ``act`` each step, ``observe`` each transition; it updates itself."""

    def __init__(
        self, layout: Layout, agents: int, config: ComaConfig, rng: np.random.Generator
    ) -> None:
        if config.select not in SELECTIONS:
            raise OffloadError(f"select={config.select}: choose from {', '.join(SELECTIONS)}")
        self.layout, self.agents, self.config = layout, agents, config
        self.generator = numerics.generator(rng)
        self.actors = Actors(layout, agents, config.hidden)
        self.critic = Critic(layout, agents, config.hidden)
        self.target = Critic(layout, agents, config.hidden)
        self.target.load_state_dict(self.critic.state_dict())
        self.actor_opt = adam(self.actors.parameters(), lr=config.actor_lr)
        self.critic_opt = adam(self.critic.parameters(), lr=config.lr)
        self.counts = np.zeros((agents, layout.actions))  # n_i(j, k); N_i is a row's sum
        self.buffer = ReplayBuffer(config.buffer_size, agents, layout.size, layout.actions, rng)
        self.returns = ValueNorm()  # running mean and sd of the critic's targets
        self.steps = 0
        self.updates = 0
        self.progress = 0.0  # fraction of training done, for the eps schedule

    # -- acting ----------------------------------------------------------------

    @torch.inference_mode()  # no autograd bookkeeping at all: cheaper than no_grad
    def act(
        self,
        obs: np.ndarray,
        active: np.ndarray,
        masks: np.ndarray,
        explore: bool,
    ) -> np.ndarray:
        """One action per agent (-1 for inactive ones). Exploring: UCB-COMA scores every
        pair by log pi + eps * bonus and samples from the softmax of the scores (or takes
        their argmax with ``select="argmax"``); COMA samples from pi; both over the
        allowed actions (``training.run_episode`` says which). Not exploring: greedy
        over the valid actions."""
        logp = self.actors.log_pi(torch.as_tensor(obs), torch.as_tensor(masks))
        if not explore:
            choice = best_valid(logp, torch.as_tensor(masks))
        elif self.config.ucb:
            score = logp + torch.as_tensor(self.bonus(), dtype=logp.dtype)
            if self.config.select == "argmax":
                choice = score.argmax(-1)
            else:
                choice = sample(torch.log_softmax(score, -1), self.generator)
        else:
            choice = sample(logp, self.generator)
        choice = np.where(active, choice.numpy(), -1)
        if explore:  # n_i(j, k) counts agent i's choices in every lockstep episode
            np.add.at(self.counts, (np.nonzero(active)[-1], choice[active]), 1)
        return choice

    def bonus(self) -> np.ndarray:
        """eps * sqrt(2 ln N_i / (n_i(j, k) + 1)) for every agent and pair (I, A), eps
        decaying linearly with the fraction of training done."""
        c = self.config
        eps = c.eps_start + (c.eps_end - c.eps_start) * self.progress
        tries = self.counts.sum(-1, keepdims=True)
        return eps * np.sqrt(2.0 * np.log(np.maximum(tries, 1.0)) / (self.counts + 1.0))

    # -- learning --------------------------------------------------------------

    def observe(self, t: Transition) -> numerics.Diagnostics:
        """Store (S, A, R, S') with R the team reward; update every ``update_every`` steps."""
        self.buffer.add(t)
        self.steps += 1
        if (
            self.steps % self.config.update_every == 0
            and len(self.buffer) >= self.config.batch_size
        ):
            return self.update()
        return {}

    def update(self) -> numerics.Diagnostics:
        """Algorithm 1 lines 9-13 on one batch: the critic, the actors, maybe the target.
        Returns the critic's and the actors' losses, the policy's entropy (mean over the
        acting agents) and the share of the targets' variance the critic explained."""
        c = self.config
        b = self.buffer.sample(c.batch_size)
        n, size = self.agents, self.layout.size
        obs = b["state"].view(-1, n, size)
        taken = b["actions"].clamp(min=0).unsqueeze(-1)
        active = b["active"]

        # Critic: TD error on Q(S, A), target Q'(S', A') with A' ~ pi(. | S'); with
        # ``standardise`` the critic works in units of the targets' running mean and sd.
        with torch.no_grad():
            next_logp = self.actors.log_pi(b["next_state"].view(-1, n, size), b["next_masks"])
            next_actions = torch.where(b["next_active"] > 0, sample(next_logp, self.generator), -1)
            q_next = self.target(b["next_state"], next_actions)
            q_next = q_next.gather(-1, next_actions.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            live = b["next_active"]
            v_next = (q_next * live).sum(-1) / live.sum(-1).clamp(min=1.0)
            if c.standardise:
                v_next = self.returns.denormalize(v_next)
            y = b["reward"] + c.psi * (1.0 - b["terminal"]) * v_next
            if c.standardise:
                self.returns.update(y)
                y = self.returns.normalize(y)
        q = self.critic(b["state"], b["actions"])
        q_taken = q.gather(-1, taken).squeeze(-1)
        critic_loss = (((q_taken - y.unsqueeze(-1)) ** 2) * active).sum() / active.sum()
        descend(self.critic_opt, critic_loss, c.grad_clip)

        # Actors: counterfactual advantage Q(S, A) - sum_a' pi(a') Q(S, (a', A^-i)), from
        # the Q the critic gave before its step (as EPyMARL's COMA learner does).
        logp = self.actors.log_pi(obs, b["masks"])
        pi = logp.exp()
        q = q.detach()
        advantage = q - (pi.detach() * q).sum(-1, keepdim=True)
        h = entropy(pi, logp)
        expected = (pi * advantage).sum(-1)
        actor_loss = -((expected + c.entropy * h) * active).sum() / active.sum()
        descend(self.actor_opt, actor_loss, c.grad_clip)

        self.updates += 1
        if self.updates % c.target_every == 0:
            self.target.load_state_dict(self.critic.state_dict())
        acting = active > 0
        return {
            "critic_loss": critic_loss.item(),
            "actor_loss": actor_loss.item(),
            "entropy": (h.detach() * active).sum().item() / active.sum().item(),
            "explained_variance": numerics.explained_variance(
                q_taken.detach()[acting], y.unsqueeze(-1).expand_as(q_taken)[acting]
            ),
        }

    # -- checkpoints -----------------------------------------------------------

    def state_dict(self) -> dict:
        return {"config": asdict(self.config), **save_parts(self, PARTS)}

    def load_state_dict(self, state: dict) -> None:
        load_parts(self, state, PARTS)
