"""Train a learner on the environment, save the run, and evaluate it on held-out instances.

A run directory holds ``config.json``, ``episodes.csv`` (one row per episode),
``checkpoint.pt``, ``reward_curve.png`` and, if TensorBoard is installed,
``tensorboard/``. Every random draw flows from the run's seed: training
episode e uses instance seed ``(seed, 0, e)`` and evaluation episode e uses
``(seed, 1, e)``, so evaluation never sees a training instance.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from llmoffload.env import OffloadEnv, outcome, run_reward
from llmoffload.errors import OffloadError
from llmoffload.execution import Schedule, evaluate
from llmoffload.files import replacing, write_csv, write_text_atomic
from llmoffload.instance import Instance, sample_instance
from llmoffload.learner import Learner, Transition
from llmoffload.methods import LEARNERS
from llmoffload.optimal import solve
from llmoffload.scenario import Scenario, parse_scenario
from llmoffload.schedulers import SCHEDULERS

TRAIN, EVAL = 0, 1
# How the learners treat invalid actions: "paper" learns from the env's penalties (the
# paper's agents); "masked" acts on valid actions only, as CS-UCB always does.
PROTOCOLS = ("paper", "masked")


def episode_seed(seed: int, stream: int, episode: int) -> int:
    """A seed per (run, train/eval stream, episode), disjoint across streams."""
    return int(np.random.SeedSequence([seed, stream, episode]).generate_state(1)[0])


def make_config(algo: str, overrides: dict[str, str], protocol: str = "paper") -> Any:
    """The algorithm's config: its defaults, the protocol's masking, then ``--set
    key=value`` overrides."""
    if algo not in LEARNERS:
        raise OffloadError(f"unknown algorithm '{algo}' (choose from {', '.join(LEARNERS)})")
    if protocol not in PROTOCOLS:
        raise OffloadError(f"unknown protocol '{protocol}' (choose from {', '.join(PROTOCOLS)})")
    cls = LEARNERS[algo].config
    types = {f.name: f.type for f in fields(cls)}
    values: dict[str, Any] = dict(LEARNERS[algo].defaults)
    if "mask" in types:
        values["mask"] = protocol == "masked"
    for key, text in overrides.items():
        if key not in types:
            known = ", ".join(types) or "it has none"
            raise OffloadError(f"--set {key}: {algo} has no such setting ({known})")
        kind = {"bool": parse_bool, "int": int, "float": float, "str": str}[str(types[key])]
        try:
            values[key] = kind(text)
        except ValueError:
            raise OffloadError(f"--set {key}={text}: not a {types[key]}") from None
    return cls(**values)


def parse_bool(text: str) -> bool:
    words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    if text.lower() not in words:
        raise ValueError(text)
    return words[text.lower()]


def run_episode(
    env: OffloadEnv,
    learner: Learner,
    seed: int,
    explore: bool,
    instance: Instance | None = None,
) -> dict[str, float]:
    """Play one episode; an exploring learner also learns from it.

    The masks a learner acts on: the env's valid actions when it is evaluated, under
    the masked protocol, and for CS-UCB (whose constraint filter they are); else, under
    the paper protocol, every action but those refused in the state the agent is still
    in. A refused action changes nothing, so the agent knows a retry fails: it learns
    validity from the penalties without ever repeating a refusal.
    """
    env.reset(seed=seed, options={"instance": instance} if instance else None)
    agents = env.possible_agents
    told = not explore or getattr(learner.config, "mask", True)
    refused = np.zeros((len(agents), env.layout.actions), bool)
    active = np.ones(len(agents), bool)
    state = env.state()
    masks = allowed(env, active, refused, told)
    while env.agents:
        actions = learner.act(state.reshape(len(agents), -1), active, masks, explore)
        _, rewards, terminations, _, infos = env.step(
            {a: int(actions[i]) for i, a in enumerate(agents) if active[i]}
        )
        for i in np.flatnonzero(active):
            if infos[agents[i]]["run"] is None:
                refused[i, actions[i]] = True
            else:  # the agent's task moved on: a new state, nothing refused in it yet
                refused[i] = False
        # an agent stays active while its task has work, also past the step limit, so
        # that a truncated episode bootstraps from the state it stopped in
        next_active = np.array([not terminations.get(a, True) for a in agents])
        next_state = env.state()
        next_masks = allowed(env, next_active, refused, told)
        if explore:
            reward = np.array([rewards.get(a, 0.0) for a in agents])
            learner.observe(
                Transition(
                    state=state,
                    actions=actions,
                    active=active,
                    masks=masks,
                    rewards=reward,
                    next_state=next_state,
                    next_active=next_active,
                    next_masks=next_masks,
                    terminal=not next_active.any(),
                    truncated=next_active.any() and not env.agents,
                )
            )
        state, active, masks = next_state, next_active, next_masks
    return env.summary()


def allowed(env: OffloadEnv, active: np.ndarray, refused: np.ndarray, told: bool) -> np.ndarray:
    """(I, A) int8: the env's valid actions if the agents are ``told`` them, else every
    action not yet refused in the current state; zeros for inactive agents."""
    ok = env.masks() > 0 if told else ~refused
    return (ok & active[:, None]).astype(np.int8)


def new_learner(algo: str, config: Any, env: OffloadEnv, seed: int) -> Learner:
    """A fresh learner whose every draw flows from ``seed``.

    The networks are tiny, so one CPU thread is fastest: more threads only
    spin and wait (measured 0.5 ms vs 35 ms per actor call on a busy 2-core box).
    """
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    return LEARNERS[algo].build(env.layout, len(env.possible_agents), config, rng)


def train(
    algo: str,
    scenario: Scenario,
    episodes: int,
    seed: int,
    out: Path,
    config: Any,
    failure_prob: float = 0.0,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train ``episodes`` episodes and write the run directory; returns the CSV rows."""
    env = OffloadEnv(scenario, failure_prob=failure_prob)
    learner = new_learner(algo, config, env, seed)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "algo": algo,
        "seed": seed,
        "episodes": episodes,
        "failure_prob": failure_prob,
        "config": asdict(config),
        "scenario": scenario.model_dump(mode="json"),
    }
    write_text_atomic(out / "config.json", json.dumps(meta, indent=1) + "\n")
    board = tensorboard(out)
    rows = []
    for e in tqdm(range(episodes), desc=f"train {algo}", unit="ep", disable=not progress):
        learner.progress = e / episodes
        row = {"episode": e, **run_episode(env, learner, episode_seed(seed, TRAIN, e), True)}
        rows.append(row)
        if board:
            for key in ("reward", "objective", "latency", "cost", "undone"):
                board.add_scalar(f"episode/{key}", row[key], e)
    if board:
        board.close()
    write_csv(out / "episodes.csv", rows)
    with replacing(out / "checkpoint.pt") as tmp:
        torch.save({**meta, "learner": learner.state_dict()}, tmp)
    from llmoffload.plots import reward_curve  # matplotlib only when writing figures

    reward_curve({algo: [r["reward"] for r in rows]}, out / "reward_curve.png")
    return rows


def tensorboard(out: Path) -> Any:
    """A TensorBoard writer if TensorBoard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


def load_run(run: Path) -> tuple[dict[str, Any], Any, OffloadEnv]:
    """The run's metadata, its learner restored from the checkpoint, and its env."""
    path = run / "checkpoint.pt"
    if not path.is_file():
        raise OffloadError(f"no trained run at {run} (missing checkpoint.pt)")
    ckpt = torch.load(path, weights_only=False)
    scenario = parse_scenario(ckpt["scenario"], str(path))
    env = OffloadEnv(scenario, failure_prob=ckpt["failure_prob"])
    algo = ckpt["algo"]
    config = LEARNERS[algo].config(**ckpt["config"])
    learner = new_learner(algo, config, env, ckpt["seed"])
    learner.load_state_dict(ckpt["learner"])
    return ckpt, learner, env


def policy_schedule(run: Path, instance: Instance) -> Schedule:
    """The trained policy's schedule of one instance (greedy over valid actions)."""
    _, learner, env = load_run(run)
    if len(instance.tasks) != len(env.possible_agents):
        raise OffloadError(
            f"the run was trained for {len(env.possible_agents)} tasks, "
            f"the instance has {len(instance.tasks)}"
        )
    summary = run_episode(env, learner, 0, False, instance)
    if summary["undone"]:
        raise OffloadError(
            f"the policy left {summary['undone']} subtasks undone after {env.max_steps} steps"
        )
    return env.ex.schedule()


def held_out(scenario: Scenario, seed: int, episodes: int) -> Iterator[tuple[int, int, Instance]]:
    """Evaluation episode e's seed and instance: stream EVAL, never seen in training."""
    for e in range(episodes):
        eseed = episode_seed(seed, EVAL, e)
        yield e, eseed, sample_instance(scenario, np.random.default_rng(eseed))


def scheduler_schedule(
    name: str, instance: Instance, seed: int, time_limit_s: float
) -> tuple[Schedule, bool]:
    """A classic scheduler's schedule, and whether it is proven optimal (Optimal within
    ``time_limit_s`` seconds; an unproven one is the best found, and may vary with load)."""
    if name == "optimal":
        solution = solve(instance, time_limit_s=time_limit_s)
        return solution.schedule, solution.proven
    return evaluate(instance, SCHEDULERS[name](instance, np.random.default_rng(seed))), False


def evaluate_run(
    run: Path,
    episodes: int,
    time_limit_s: float = 10.0,
    progress: bool = True,
    references: bool = True,
) -> list[dict[str, float]]:
    """Greedy, masked, non-learning episodes on held-out instances, beside HEFT and
    Optimal unless ``references`` is off (a sweep evaluates those once per setting)."""
    ckpt, learner, env = load_run(run)
    rows = []
    cases = held_out(env.scenario, ckpt["seed"], episodes)
    for e, seed, inst in tqdm(cases, "evaluate", episodes, unit="ep", disable=not progress):
        row = {"episode": e, **run_episode(env, learner, seed, False, inst)}
        if references:
            for name in ("heft", "optimal"):
                row[name] = scheduler_schedule(name, inst, seed, time_limit_s)[0].objective
        rows.append(row)
    write_csv(run / "evaluation.csv", rows)
    return rows


def evaluate_scheduler(
    name: str, scenario: Scenario, seed: int, episodes: int, time_limit_s: float = 10.0
) -> list[dict[str, float]]:
    """A classic scheduler on the same held-out instances a run of ``seed`` is evaluated on,
    with the reward the environment would give its schedule (``env.run_reward``)."""
    rows = []
    for e, eseed, inst in held_out(scenario, seed, episodes):
        schedule, proven = scheduler_schedule(name, inst, eseed, time_limit_s)
        reward = sum(run_reward(scenario, run) for run in schedule.runs)
        rows.append({"episode": e, "reward": reward, "proven": proven, **outcome(schedule)})
    return rows
