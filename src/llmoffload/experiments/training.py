"""Train a learner on the environment, save the run, and evaluate it on held-out instances.

A run directory holds ``config.json``, ``episodes.csv`` (one row per episode),
``updates.csv`` (one row per update of the learner), ``checkpoint.pt``,
``reward_curve.png`` and, if TensorBoard is installed, ``tensorboard/`` (the episodes'
scalars under ``episode/``, the updates' under ``update/``, both against the episode).

``updates.csv``'s columns: ``episode``, the training episode whose step set the update
off (a planner's: the first of the group it sampled), then what the algorithm's update
reports (``numerics.Diagnostics``), each the update's value (the mean over its minibatch
steps or epochs where it takes several):

- UCB-COMA, COMA: ``critic_loss`` (TD error, in the targets' standardised units),
  ``actor_loss``, ``entropy`` (of pi, mean over the acting agents),
  ``explained_variance`` (of the TD targets by Q(S, A), over the acting agents);
- MAPPO: ``actor_loss``, ``value_loss`` (clipped Huber, normalised units), ``entropy``,
  ``approx_kl`` (of the acting policy to the new, ((r - 1) - log r)),
  ``clip_fraction`` (of the ratios the clip cut), ``explained_variance`` (of the GAE
  returns by the values at acting time);
- MADDPG: ``critic_loss``, ``actor_loss``, ``entropy``;
- gnn-sched: ``loss``, ``entropy``, ``approx_kl``, ``clip_fraction``;
- CS-UCB and Random report none: a table of means, and no learning (header only).

The checkpoint holds only tensors and plain data (dicts, lists, numbers, strings) and is
read with ``torch.load(weights_only=True)``: a run directory from elsewhere cannot run
code when loaded. Every random draw flows from the run's seed: training episode e uses
instance seed ``(seed, 0, e)`` and evaluation episode e uses ``(seed, 1, e)``, so
evaluation never sees a training instance.
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm

from llmoffload.errors import OffloadError
from llmoffload.experiments.expert import demonstrations
from llmoffload.files import check_output, replacing, write_csv, write_text_atomic
from llmoffload.marl.env import VIOLATIONS, OffloadEnv, lateness, outcome, schedule_reward
from llmoffload.marl.learner import (
    Imitation,
    Imitator,
    Learner,
    LearnerConfig,
    Planner,
    ProtocolMask,
    Transition,
)
from llmoffload.marl.numerics import Diagnostics, seeded
from llmoffload.marl.ranges import Range, check_config, settings_of
from llmoffload.marl.registry import LEARNERS
from llmoffload.model.execution import Schedule, evaluate
from llmoffload.model.instance import Instance, sample_instance
from llmoffload.model.scenario import Scenario, parse_scenario
from llmoffload.schedulers.registry import Outcome, classic
from llmoffload.schedulers.search import Budget, anneal

if TYPE_CHECKING:
    from typing_extensions import TypeIs  # typing's own from Python 3.13

TRAIN, EVAL = 0, 1
# training episodes played at once by default: one, since K > 1 acts on a policy up to
# K episodes old and cost UCB-COMA and COMA reward (docs/assumptions.md, measured)
LOCKSTEP = 1
EVAL_LOCKSTEP = 50  # held-out episodes played at once (greedy: each plays as if alone)
# How the learners treat invalid actions: "paper" learns from the env's penalties (the
# paper's agents); "masked" acts on valid actions only, as CS-UCB always does.
PROTOCOLS = ("paper", "masked")
# At 1 every edge is down at every step: the cloud alone is left, nothing to learn.
FAILURE_PROBS = Range(0.0, 1.0, high_open=True)
CHECKPOINT_FORMAT = "llmoffload-checkpoint/1"  # 1: tensors and plain data only
# what a run directory holds (``train``), cleared by --force; anything else is not a run's
RUN_FILES = (
    "config.json",
    "episodes.csv",
    "updates.csv",
    "checkpoint.pt",
    "reward_curve.png",
    "tensorboard",
    "evaluation.csv",
)


def episode_seed(seed: int, stream: int, episode: int) -> int:
    """A seed per (run, train/eval stream, episode), disjoint across streams."""
    return int(np.random.SeedSequence([seed, stream, episode]).generate_state(1)[0])


def make_config(algo: str, overrides: dict[str, str], protocol: str = "paper") -> Any:
    """The algorithm's config: its defaults, the protocol's masking (where its config is a
    ``ProtocolMask``), then ``--set key=value`` overrides, each setting checked against
    its range."""
    if algo not in LEARNERS:
        raise OffloadError(f"unknown algorithm '{algo}' (choose from {', '.join(LEARNERS)})")
    check_protocol(protocol)
    cls = LEARNERS[algo].config
    kinds = {name: kind for name, (kind, _) in settings_of(cls).items()}
    values: dict[str, Any] = dict(LEARNERS[algo].defaults)
    if issubclass(cls, ProtocolMask):
        values["mask"] = protocol == "masked"
    for key, text in overrides.items():
        if key not in kinds:
            known = ", ".join(kinds) or "it has none"
            raise OffloadError(f"--set {key}: {algo} has no such setting ({known})")
        parse = {bool: parse_bool, int: int, float: float, str: str}[kinds[key]]
        try:
            values[key] = parse(text)
        except ValueError:
            raise OffloadError(f"--set {key}={text}: not a {kinds[key].__name__}") from None
    config = cls(**values)
    check_config(config)
    return config


def check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise OffloadError(f"unknown protocol '{protocol}' (choose from {', '.join(PROTOCOLS)})")


def check_failure_prob(p: float) -> None:
    """One rule for ``train`` and ``reproduce``: an edge failure probability in [0, 1)."""
    FAILURE_PROBS.check("failure_prob", p)


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
    """Play one episode; an exploring learner also learns from it."""
    return run_episodes([env], learner, [seed], explore, [instance])[0]


def run_episodes(
    envs: list[OffloadEnv],
    learner: Learner,
    seeds: list[int],
    explore: bool,
    instances: Sequence[Instance | None] | None = None,
    updates: list[tuple[int, Diagnostics]] | None = None,
) -> list[dict[str, float]]:
    """Play one episode in each env, in lockstep: each step, one ``act`` for all of them
    (one forward of the networks instead of one per episode), then each env's step and
    transition in env order. An exploring learner learns from the transitions as they
    come, and each update it makes is appended to ``updates`` as (the env whose step set
    it off, its diagnostics). Each episode's instance and env draws come from its own
    seed, so a greedy learner (``explore=False``, Random excepted) plays each episode
    as if alone.

    The masks a learner acts on: the env's valid actions when it is evaluated, or when
    its config says it acts on them (``LearnerConfig.masked``: the masked protocol, and
    CS-UCB, whose constraint filter they are); else, under the paper protocol, every
    action but those refused in the state the agent is still in. A refused action
    changes nothing, so the agent knows a retry fails: it learns validity from the
    penalties without ever repeating a refusal.
    """
    for env, seed, inst in zip(envs, seeds, instances or [None] * len(envs), strict=True):
        env.reset(seed=seed, options={"instance": inst} if inst else None)
    agents, actions = len(envs[0].possible_agents), envs[0].layout.actions
    told = not explore or learner.config.masked
    refused = np.zeros((len(envs), agents, actions), bool)
    active = np.stack([env.acting() for env in envs])
    state = np.stack([env.state() for env in envs])
    masks = np.stack([allowed(env, active[e], refused[e], told) for e, env in enumerate(envs)])
    while any(env.agents for env in envs):
        chosen = learner.act(state.reshape(len(envs), agents, -1), active, masks, explore)
        next_state, next_active, next_masks = state.copy(), active.copy(), masks.copy()
        for e, env in enumerate(envs):
            if not env.agents:
                continue
            rewards, infos = env.play(chosen[e])
            executed = np.array([info.get("run") is not None for info in infos])
            failed = active[e] & ~executed
            refused[e, failed, chosen[e, failed]] = True
            refused[e, executed] = False  # the agent's task moved on: nothing refused yet
            # the step limit aside: a truncated episode bootstraps from the state it
            # stopped in, with the agents that would act there
            next_active[e] = env.acting()
            next_state[e] = env.state()
            next_masks[e] = allowed(env, next_active[e], refused[e], told)
            if explore:
                diagnostics = learner.observe(
                    Transition(
                        state=state[e],
                        actions=chosen[e],
                        active=active[e],
                        masks=masks[e],
                        rewards=rewards,
                        next_state=next_state[e],
                        next_active=next_active[e],
                        next_masks=next_masks[e],
                        terminal=not next_active[e].any(),
                        truncated=next_active[e].any() and not env.agents,
                        env=e,
                    )
                )
                if diagnostics and updates is not None:
                    updates.append((e, diagnostics))
        state, active, masks = next_state, next_active, next_masks
    return [env.summary() for env in envs]


def allowed(env: OffloadEnv, active: np.ndarray, refused: np.ndarray, told: bool) -> np.ndarray:
    """(I, A) int8: the env's valid actions if the agents are ``told`` them, else every
    action not yet refused in the current state; zeros for inactive agents."""
    ok = env.masks() > 0 if told else ~refused
    return (ok & active[:, None]).astype(np.int8)


def new_learner(algo: str, config: LearnerConfig, env: OffloadEnv, seed: int) -> Learner | Planner:
    """A fresh learner (a ``Planner`` where its config declares one) whose every draw flows
    from ``seed``: its initial weights drawn in ``numerics.seeded(seed)``, the rest from
    a generator seeded ``seed``.

    The networks are tiny, so one CPU thread is fastest: more threads only
    spin and wait (measured 0.5 ms vs 35 ms per actor call on a busy 2-core box).
    """
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    with seeded(seed):
        return LEARNERS[algo].build(env.layout, len(env.possible_agents), config, rng)


def is_planner(learner: Learner | Planner) -> TypeIs[Planner]:
    """A centralised planner (gnn-sched) schedules a whole instance at once (``plan``)
    and trains on instances (``train_on``), not on the multi-agent env's steps: its
    config declares it (``LearnerConfig.planner``)."""
    return learner.config.planner


def imitates(learner: Learner) -> TypeIs[Imitator]:
    """Whether the learner can clone the expert: its config is warm-startable
    (``Imitation``), and such a learner offers ``imitate`` (``Imitator``)."""
    return isinstance(learner.config, Imitation)


def expert_seeds(scenario: Scenario, seed: int, decisions: int) -> list[int]:
    """The first instances of the training stream whose subtasks add up to ``decisions``:
    the expert's budget counts dispatch decisions, so one instance of 20 tasks weighs as
    four of 5 (in states to clone and, roughly, in CP-SAT's work)."""
    seeds: list[int] = []
    total = 0
    while total < decisions:
        seeds.append(episode_seed(seed, TRAIN, len(seeds)))
        instance = sample_instance(scenario, np.random.default_rng(seeds[-1]))
        total += sum(len(task.subtasks) for task in instance.tasks)
    return seeds


def schedule_row(instance: Instance, schedule: Schedule) -> dict[str, float]:
    """A planner's episode as the env would report it: no refused action, every subtask
    done, the deadline violations of its late dispatches."""
    late = sum(lateness(instance, run) > 0 for run in schedule.runs)
    violations = {f"violations_{k}": late if k == "deadline" else 0 for k in VIOLATIONS}
    return {
        "reward": schedule_reward(instance, schedule),
        "steps": len(schedule.runs),
        "undone": 0,
        **violations,
        **outcome(schedule),
    }


def train(
    algo: str,
    scenario: Scenario,
    episodes: int,
    seed: int,
    out: Path,
    config: Any,
    failure_prob: float = 0.0,
    progress: bool = True,
    lockstep: int = LOCKSTEP,
    plot: bool = True,
    force: bool = False,
    workers: int = 1,
) -> list[dict[str, float]]:
    """Train ``episodes`` episodes, ``lockstep`` at a time (``run_episodes``; a planner:
    ``group`` schedules per training instance), after behaviour cloning of the expert
    if ``init="bc"`` (its CP-SAT schedules solved on ``workers`` processes), and write
    the run directory (``reward_curve.png`` if ``plot``; an earlier run's there is
    cleared only if ``force``); returns the episodes' rows."""
    check_failure_prob(failure_prob)
    envs = [OffloadEnv(scenario, failure_prob=failure_prob) for _ in range(lockstep)]
    learner = new_learner(algo, config, envs[0], seed)
    run_directory(out, force)
    began = time.perf_counter()
    clock = warm_start(learner, envs[0], seed, workers, progress)
    board = tensorboard(out)
    bar = tqdm(total=episodes, desc=f"train {algo}", unit="ep", disable=not progress)
    rows: list[dict[str, float]] = []
    updates: list[dict[str, float]] = []
    if is_planner(learner):
        blocks = planner_blocks(learner, scenario, episodes, seed)
    else:
        blocks = learner_blocks(learner, envs, episodes, seed)
    for played, updated in blocks:
        rows += played
        updates += updated
        log_scalars(board, played, updated)
        bar.update(len(played))
    bar.close()
    if board:
        board.close()
    clock["train_s"] = time.perf_counter() - began
    meta = {
        "algo": algo,
        "seed": seed,
        "episodes": episodes,
        "lockstep": lockstep,
        "failure_prob": failure_prob,
        "config": asdict(config),
        "scenario": scenario.model_dump(mode="json"),
    }
    write_run(out, meta, clock, rows, updates, learner)
    if plot:
        from llmoffload.experiments.plots import (
            reward_curve,  # matplotlib only when writing figures
        )

        reward_curve({algo: [r["reward"] for r in rows]}, out / "reward_curve.png")
    return rows


Block = tuple[list[dict[str, float]], list[dict[str, float]]]  # (episodes' rows, updates' rows)


def warm_start(
    learner: Learner | Planner, env: OffloadEnv, seed: int, workers: int, progress: bool
) -> dict[str, float]:
    """Behaviour cloning before RL where the config asks for it (``init="bc"``): the
    expert's CP-SAT schedules of the first training instances (solved on ``workers``
    processes, cached), cloned by a planner on its own view, by the paper's learners per
    agent, a bar over the epochs if ``progress``. Returns the seconds each part took and
    the agreement with the expert on its states after (nothing without a warm start)."""
    warm = learner.config.warm_start
    if warm is None:
        return {}
    began = time.perf_counter()
    seeds = expert_seeds(env.scenario, seed, warm.expert_decisions)
    demos = demonstrations(env.scenario, seeds, warm.expert_time_limit_s, workers, progress)
    expert_s = time.perf_counter() - began
    if is_planner(learner):
        agreement = learner.imitate(demos, progress)
    elif imitates(learner):
        agreement = learner.imitate(demos, env, progress)
    else:
        raise OffloadError(f"{type(learner).__name__}: init=bc, but it cannot clone the expert")
    return {
        "expert_s": expert_s,
        "bc_agreement": agreement,
        "bc_s": time.perf_counter() - began - expert_s,
    }


def learner_blocks(
    learner: Learner, envs: list[OffloadEnv], episodes: int, seed: int
) -> Iterator[Block]:
    """Training episodes ``len(envs)`` at a time (episode e on instance seed
    ``(seed, TRAIN, e)``): each block's rows and its updates' rows."""
    step = len(envs)
    for first in range(0, episodes, step):
        block = range(first, min(first + step, episodes))
        learner.progress = first / episodes
        seeds = [episode_seed(seed, TRAIN, e) for e in block]
        updated: list[tuple[int, Diagnostics]] = []
        played = run_episodes(envs[: len(block)], learner, seeds, True, updates=updated)
        rows = [{"episode": e, **summary} for e, summary in zip(block, played, strict=True)]
        yield rows, [{"episode": block[e], **d} for e, d in updated]


def planner_blocks(
    learner: Planner, scenario: Scenario, episodes: int, seed: int
) -> Iterator[Block]:
    """A planner's training: on training instance u (seed ``(seed, TRAIN, u)``) it samples
    schedules (gnn-sched: ``group`` of them), an episode each, and updates once."""
    first = 0
    for u in itertools.count():
        if first >= episodes:
            return
        learner.progress = first / episodes
        instance = sample_instance(scenario, np.random.default_rng(episode_seed(seed, TRAIN, u)))
        sampled, diagnostics = learner.train_on(instance)
        block = range(first, min(first + len(sampled), episodes))
        rows = [
            {"episode": e, **schedule_row(instance, schedule)}
            for e, schedule in zip(block, sampled[: len(block)], strict=True)
        ]
        yield rows, [{"episode": first, **diagnostics}]
        first = block.stop


def log_scalars(board: Any, rows: list[dict[str, float]], updates: list[dict[str, float]]) -> None:
    """The episodes' scalars under ``episode/`` and the updates' under ``update/``, each
    against its episode (no-op without TensorBoard)."""
    if not board:
        return
    for row in rows:
        for key in ("reward", "objective", "latency", "cost", "undone"):
            board.add_scalar(f"episode/{key}", row[key], row["episode"])
    for row in updates:
        for key, value in row.items():
            if key != "episode":
                board.add_scalar(f"update/{key}", value, row["episode"])


def write_run(
    out: Path,
    meta: dict[str, Any],
    clock: dict[str, float],
    rows: list[dict[str, float]],
    updates: list[dict[str, float]],
    learner: Learner | Planner,
) -> None:
    """The run directory's record: ``config.json`` (the settings and timings),
    ``episodes.csv``, ``updates.csv`` (header only where the learner made no update) and
    the checkpoint."""
    write_text_atomic(out / "config.json", json.dumps({**meta, **clock}, indent=1) + "\n")
    write_csv(out / "episodes.csv", rows)
    if updates:
        write_csv(out / "updates.csv", updates)
    else:
        write_text_atomic(out / "updates.csv", "episode\n")
    with replacing(out / "checkpoint.pt") as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **meta, "learner": learner.state_dict()}, tmp)


def run_directory(out: Path, force: bool) -> None:
    """Make ``out`` an empty directory for a new run. A non-empty one is refused unless
    ``force``: its files (an old evaluation.csv, TensorBoard events) would mix with the
    new run's. ``force`` deletes only a run's own files, so a mistyped --out never
    empties a directory of other things."""
    check_output(out, directory=True)
    found = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if found and not force:
        raise OffloadError(f"{out}: not empty (an earlier run?); --force clears it first")
    foreign = [name for name in found if name not in RUN_FILES]
    if foreign:
        raise OffloadError(
            f"{out}: holds files no run writes ({', '.join(foreign)}); choose another --out"
        )
    for name in found:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def tensorboard(out: Path) -> Any:
    """A TensorBoard writer if TensorBoard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


def load_run(run: Path) -> tuple[dict[str, Any], Learner | Planner, OffloadEnv]:
    """The run's metadata, its learner restored from the checkpoint, and its env.

    A damaged or foreign checkpoint is one OffloadError naming it; one holding
    anything but tensors and plain data is refused unread (unpickling it could run code).
    """
    path = run / "checkpoint.pt"
    if not path.is_file():
        raise OffloadError(f"no trained run at {run} (missing checkpoint.pt)")
    try:
        with warnings.catch_warnings():  # torch warns on some foreign pickles: no stderr
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, weights_only=True)
    except Exception:  # torch raises many kinds for bad bytes; each means the same here
        raise OffloadError(
            f"{path}: not a readable checkpoint (empty, truncated, foreign, or holding "
            "objects other than tensors and plain data, which are never unpickled)"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise OffloadError(
            f"{path}: not a checkpoint of 'llmoffload train' in format {CHECKPOINT_FORMAT} "
            "(an older version's run must be trained again)"
        )
    try:
        env = OffloadEnv(parse_scenario(ckpt["scenario"], "scenario"), ckpt["failure_prob"])
        algo = ckpt["algo"]
        config = LEARNERS[algo].config(**ckpt["config"])
        check_config(config)
        learner = new_learner(algo, config, env, ckpt["seed"])
        learner.load_state_dict(ckpt["learner"])
    except (OffloadError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        reason = str(exc).strip().partition("\n")[0]
        raise OffloadError(f"{path}: damaged ({type(exc).__name__}: {reason})") from None
    return ckpt, learner, env


def check_fits(env: OffloadEnv, instance: Instance, any_size: bool = False) -> None:
    """Refuse an instance the run's networks cannot read: they are sized for the number
    of tasks, the servers, the modalities and the longest workflow it was trained on (a
    planner, ``any_size``, reads any number of tasks, subtasks and servers: only the
    modalities fix its shapes)."""
    trained = sizes(len(env.possible_agents), env.scenario)
    given = sizes(len(instance.tasks), instance.scenario)
    read = [k for k in trained if not (any_size and k in ("tasks", "servers"))]
    differs = [f"{given[k]} {k}" for k in read if given[k] != trained[k]]
    longest = max(len(task.subtasks) for task in instance.tasks)
    if longest > env.layout.subtasks and not any_size:
        differs.append(f"a task of {longest} subtasks")
    if differs:
        shape = ", ".join(f"{v} {k}" for k, v in trained.items())
        raise OffloadError(
            f"the run was trained for {shape} and up to {env.layout.subtasks} subtasks per "
            f"task; this instance has {' and '.join(differs)}"
        )


def sizes(tasks: int, scenario: Scenario) -> dict[str, object]:
    return {
        "tasks": tasks,
        "servers": len(scenario.servers),
        "modalities": "/".join(scenario.modalities),
    }


def trained_policy(run: Path) -> Callable[[Instance], Schedule]:
    """A trained run as a scheduler: greedy over valid actions, its checkpoint loaded (and
    so checked) once, now, rather than for every instance."""
    _, learner, env = load_run(run)

    def schedule(instance: Instance) -> Schedule:
        check_fits(env, instance, is_planner(learner))
        if is_planner(learner):
            return evaluate(instance, learner.plan(instance))
        summary = run_episode(env, learner, 0, False, instance)
        if summary["undone"]:
            raise OffloadError(
                f"the policy left {summary['undone']} subtasks undone after {env.max_steps} steps"
            )
        return env.ex.schedule()

    return schedule


def held_out(scenario: Scenario, seed: int, episodes: int) -> Iterator[tuple[int, int, Instance]]:
    """Evaluation episode e's seed and instance: stream EVAL, never seen in training."""
    for e in range(episodes):
        eseed = episode_seed(seed, EVAL, e)
        yield e, eseed, sample_instance(scenario, np.random.default_rng(eseed))


def scheduler_schedule(name: str, instance: Instance, seed: int, time_limit_s: float) -> Outcome:
    """A classic scheduler's outcome (Optimal within ``time_limit_s`` seconds; an unproven
    one is the best found, and may vary with load)."""
    return classic(name, time_limit_s)(instance, np.random.default_rng(seed))


def yardsticks(instance: Instance, seed: int, plan_s: float) -> dict[str, float]:
    """What a plan that took ``plan_s`` seconds faces on its instance: the search given
    the same time (``search``) and ten times it (``search_10x``), with the seconds each
    took (its start, best classic, is kept even when it alone takes longer)."""
    row = {"plan_s": plan_s}
    for key, factor in (("search", 1), ("search_10x", 10)):
        found = anneal(instance, np.random.default_rng(seed), Budget(seconds=factor * plan_s))
        row[key], row[f"{key}_s"] = found.objective, found.seconds
    return row


def evaluate_run(
    run: Path,
    episodes: int,
    time_limit_s: float = 10.0,
    progress: bool = True,
    references: bool = True,
) -> list[dict[str, float]]:
    """Greedy, masked, non-learning episodes on held-out instances, ``EVAL_LOCKSTEP`` at a
    time, each beside the search at the policy's own planning time and ten times it
    (``yardsticks``; a block's planning seconds shared by its instances), and beside HEFT
    and Optimal with its lower bound unless ``references`` is off (a sweep evaluates
    those once per setting)."""
    ckpt, learner, env = load_run(run)
    cases = list(held_out(env.scenario, ckpt["seed"], episodes))
    envs = [env] + [OffloadEnv(env.scenario, env.failure_prob) for _ in cases[1:EVAL_LOCKSTEP]]
    rows = []
    bar = tqdm(total=episodes, desc="evaluate", unit="ep", disable=not progress)
    for first in range(0, episodes, EVAL_LOCKSTEP):
        block = cases[first : first + EVAL_LOCKSTEP]
        seeds, instances = [seed for _, seed, _ in block], [inst for *_, inst in block]
        if is_planner(learner):
            played, seconds = [], []
            for inst in instances:
                began = time.perf_counter()
                schedule = evaluate(inst, learner.plan(inst))
                seconds.append(time.perf_counter() - began)
                played.append(schedule_row(inst, schedule))
        else:
            began = time.perf_counter()
            played = run_episodes(envs[: len(block)], learner, seeds, False, instances)
            seconds = [(time.perf_counter() - began) / len(block)] * len(block)
        for (e, seed, inst), summary, plan_s in zip(block, played, seconds, strict=True):
            row = {"episode": e, **summary, **yardsticks(inst, seed, plan_s)}
            if references:
                row["heft"] = scheduler_schedule(
                    "heft", inst, seed, time_limit_s
                ).schedule.objective
                solved = scheduler_schedule("optimal", inst, seed, time_limit_s).solution
                assert solved is not None  # Optimal's outcome carries its solution
                row.update(optimal=solved.schedule.objective, bound=solved.bound)
            rows.append(row)
            bar.update()
    bar.close()
    write_csv(run / "evaluation.csv", rows)
    return rows


def evaluate_scheduler(
    name: str, scenario: Scenario, seed: int, episodes: int, time_limit_s: float = 10.0
) -> list[dict[str, float]]:
    """A classic scheduler on the same held-out instances a run of ``seed`` is evaluated on,
    with the reward the environment would give its schedule (``env.schedule_reward``),
    its planning seconds, and Optimal's lower bound."""
    rows = []
    for e, eseed, inst in held_out(scenario, seed, episodes):
        began = time.perf_counter()
        found = scheduler_schedule(name, inst, eseed, time_limit_s)
        plan_s = time.perf_counter() - began
        reward = schedule_reward(inst, found.schedule)
        solved = {"bound": found.solution.bound} if found.solution else {}
        rows.append(
            {
                "episode": e,
                "reward": reward,
                "proven": found.proven,
                "plan_s": plan_s,
                **solved,
                **outcome(found.schedule),
            }
        )
    return rows
