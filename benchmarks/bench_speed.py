"""Benchmark the speed targets of issue 11: env steps, decisions, training, scaling.

    python benchmarks/bench_speed.py [--parts env train scale floor] [--cpu]
        [--algos ucb-coma ...] [--episodes 700] [--lockstep 8] [--tasks 5 20 50 100]
        [--edges 20] [--scale-episodes 8] [--plot cost.png] [--floor-episodes 50]

Prints, on the paper scenario: the environment's joint steps per second at
5 agents (uniformly random valid actions, resets included, through
``OffloadEnv.play``, the trainer's path), each learner's decision latency for
one joint action of 5 agents (exploring) alone and per episode when
``--lockstep`` episodes act in one call, and the wall time of a training run
per learner (run directory included), one episode at a time (the default) and
``--lockstep`` at a time. Then, on the
paper scenario widened to ``--edges`` edge servers (the paper's three edges
repeated) and ``--tasks`` agents, the cost of one decision: UCB-COMA's joint
action, one env step, and one training step (the wall time of a few UCB-COMA
training episodes per joint step, updates included), plotted against the
number of tasks to ``--plot``.

Last, the floor under each neural learner's training time: the floating-point
work of one joint training step (acting and updates, counted by PyTorch's
``FlopCounterMode`` once the learner updates), the rate it runs at now, and
the seconds an ``--episodes`` run would take if every FLOP ran at the
machine's own peak for a float32 matrix product on one thread: what no
change short of less arithmetic can beat, and how far the code is from it.

A planner among ``--algos`` (gnn-sched: its config declares ``planner``) makes no
per-agent decisions; it is skipped with a line saying so (``bench_gnn.py`` times it).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from llmoffload.experiments.training import (
    LOCKSTEP,
    is_planner,
    make_config,
    new_learner,
    run_episodes,
    train,
)
from llmoffload.marl.env import OffloadEnv
from llmoffload.marl.learner import Learner
from llmoffload.marl.registry import LEARNERS
from llmoffload.model.scenario import Scenario, load_scenario

clock = time.perf_counter  # --cpu: time.process_time, steadier on a shared machine


def widened(tasks: int, edges: int, base: str = "paper") -> Scenario:
    """The ``base`` scenario with ``tasks`` tasks and ``edges`` edge servers: its edges
    (the paper's text, image, audio) repeated in turn, then its cloud; where tasks arrive
    over time, their rate scaled by the edges added, so each edge's load stays."""
    sc = load_scenario(base)
    base_edges = [s for s in sc.servers if s.kind == "edge"]
    servers = [
        base_edges[k % len(base_edges)].model_copy(
            update={"name": f"{base_edges[k % len(base_edges)].name}-{k}"}
        )
        for k in range(edges)
    ]
    servers.append(sc.servers[sc.cloud])
    rate = sc.workload.arrivals_per_s
    rate = rate and rate * edges / len(base_edges)
    workload = sc.workload.model_copy(update={"tasks": tasks, "arrivals_per_s": rate})
    return sc.model_copy(update={"servers": servers, "workload": workload})


def random_valid(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One uniformly random valid action per row of masks (I, A)."""
    return (rng.random(masks.shape) * masks).argmax(-1)


def env_step_seconds(scenario: Scenario, seconds: float) -> tuple[float, int]:
    """Seconds per joint env step with random valid actions, and the steps timed."""
    env = OffloadEnv(scenario)
    rng = np.random.default_rng(0)
    steps, began = 0, clock()
    env.reset(seed=0)
    while clock() - began < seconds:
        if not env.agents:
            env.reset()
        actions = random_valid(env.masks(), rng)
        actions[np.array(env.ex.left) == 0] = -1
        env.play(actions)
        steps += 1
    return (clock() - began) / steps, steps


def env_learner(algo: str, env: OffloadEnv) -> Learner:
    """A fresh learner that acts in the env; a planner is refused (``acts_in_env``)."""
    learner = new_learner(algo, make_config(algo, {}), env, seed=0)
    if is_planner(learner):
        raise ValueError(f"{algo} is a planner: it does not act in the env")
    return learner


def acts_in_env(algo: str) -> bool:
    """Whether the learner acts in the env (what this benchmark times), as its config
    declares: a planner (gnn-sched) plans whole instances, ``bench_gnn.py`` times it."""
    return not LEARNERS[algo].config.planner


def decision_seconds(algo: str, scenario: Scenario, seconds: float, lockstep: int = 1) -> float:
    """Seconds per episode for one exploring joint action of every agent at an episode's
    start, ``lockstep`` episodes in one call."""
    env = OffloadEnv(scenario)
    learner = env_learner(algo, env)
    env.reset(seed=0)
    agents = len(env.possible_agents)
    state = np.stack([env.state().reshape(agents, -1)] * lockstep)
    masks = np.stack([env.masks()] * lockstep)
    active = np.ones((lockstep, agents), bool)
    return per_call(lambda: learner.act(state, active, masks, True), seconds) / lockstep


def per_call(fn: Callable[[], object], seconds: float) -> float:
    """Mean seconds per call over about ``seconds``, after a few warm-up calls."""
    for _ in range(5):
        fn()
    calls, began = 0, clock()
    while clock() - began < seconds:
        fn()
        calls += 1
    return (clock() - began) / calls


def train_seconds(algo: str, scenario: Scenario, episodes: int, lockstep: int) -> tuple[float, int]:
    """Wall seconds of a training run, its run directory included, and its joint steps."""
    with tempfile.TemporaryDirectory() as out:
        began = clock()
        config = make_config(algo, {})
        rows = train(
            algo, scenario, episodes, 0, Path(out), config, progress=False, lockstep=lockstep
        )
        return clock() - began, sum(int(row["steps"]) for row in rows)


def work_per_step(algo: str, scenario: Scenario, episodes: int) -> tuple[float, float]:
    """FLOPs and seconds per joint training step once the learner updates: after
    ``episodes`` episodes of warm-up, the seconds of ``episodes`` more, then the FLOPs
    of ``episodes`` more again, counted (the counter slows what it counts)."""
    envs = [OffloadEnv(scenario)]
    learner = env_learner(algo, envs[0])
    play(envs, learner, range(episodes))
    began = clock()
    steps = play(envs, learner, range(episodes, 2 * episodes))
    seconds = (clock() - began) / steps
    with FlopCounterMode(display=False) as counter:
        steps = play(envs, learner, range(2 * episodes, 3 * episodes))
    return counter.get_total_flops() / steps, seconds


def peak_flops(seconds: float) -> float:
    """FLOP/s of a 512 x 512 x 512 float32 matrix product on one thread: about the best
    the networks' own products reach here (theirs measured within a few percent)."""
    torch.set_num_threads(1)
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    return 2 * 512**3 / per_call(lambda: a @ b, seconds)


def episode_seconds(
    algo: str, scenario: Scenario, episodes: int, lockstep: int
) -> tuple[float, int]:
    """Wall seconds of ``episodes`` training episodes (acting and learning, no run
    directory), ``lockstep`` at a time, and the joint steps they took."""
    envs = [OffloadEnv(scenario) for _ in range(lockstep)]
    learner = env_learner(algo, envs[0])
    began = clock()
    steps = play(envs, learner, range(episodes))
    return clock() - began, steps


def play(envs: list[OffloadEnv], learner: Learner, seeds: range) -> int:
    """The joint steps of training episodes with these seeds, ``len(envs)`` at a time."""
    steps = 0
    for first in range(0, len(seeds), len(envs)):
        block = list(seeds[first : first + len(envs)])
        played = run_episodes(envs[: len(block)], learner, block, True)
        steps += sum(int(s["steps"]) for s in played)
    return steps


PARTS = ("env", "train", "scale", "floor")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=list(LEARNERS))
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--episodes", type=int, default=700, help="training episodes per run")
    parser.add_argument("--lockstep", type=int, default=8, help="episodes at once")
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per measurement")
    parser.add_argument("--tasks", nargs="+", type=int, default=[5, 20, 50, 100])
    parser.add_argument("--edges", type=int, default=20)
    parser.add_argument(
        "--scale-episodes", type=int, default=8, help="enough to fill a batch and update"
    )
    parser.add_argument("--plot", type=Path, help="PNG of the cost per decision vs tasks")
    parser.add_argument(
        "--floor-episodes", type=int, default=50, help="warm-up, timed and counted, each"
    )
    parser.add_argument("--cpu", action="store_true", help="CPU seconds instead of wall")
    args = parser.parse_args()
    global clock
    clock = time.process_time if args.cpu else time.perf_counter

    paper = load_scenario("paper")
    for algo in [a for a in args.algos if not acts_in_env(a)]:
        print(f"{algo}: skipped, a planner (no per-agent decisions): see benchmarks/bench_gnn.py")
    args.algos = [a for a in args.algos if acts_in_env(a)]
    if "env" in args.parts:
        step, _ = env_step_seconds(paper, args.seconds)
        print(f"env: {1 / step:,.0f} joint steps/s (5 agents, random valid actions)\n")
    steps = training(args, paper) if "train" in args.parts else {}
    if "scale" in args.parts:
        scaling(args)
    if "floor" in args.parts:
        floor(args, paper, steps)


def training(args: argparse.Namespace, paper: Scenario) -> dict[str, int]:
    """Each learner's decision latency and training time, one by one and in lockstep;
    returns the joint steps of each one-by-one run, for ``floor``."""
    k = args.lockstep
    print(
        f"| method | decision ms, alone | decision ms per episode, {k} at once "
        f"| train s ({args.episodes} episodes), one by one | train s, {k} at once |"
    )
    print("|---|---:|---:|---:|---:|")
    steps = {}
    for algo in args.algos:
        alone = decision_seconds(algo, paper, args.seconds) * 1e3
        batched = decision_seconds(algo, paper, args.seconds, k) * 1e3
        one, steps[algo] = train_seconds(algo, paper, args.episodes, LOCKSTEP)
        many = train_seconds(algo, paper, args.episodes, k)[0]
        print(f"| {algo} | {alone:.3f} | {batched:.3f} | {one:.1f} | {many:.1f} |")
    return steps


def scaling(args: argparse.Namespace) -> None:
    """UCB-COMA's cost per decision on the widened scenario, per number of tasks."""
    print(f"\nucb-coma, {args.edges} edges: cost of a decision (ms) and of an episode (s)\n")
    print("| tasks | act ms | env step ms | training ms per step | training s per episode |")
    print("|---:|---:|---:|---:|---:|")
    costs: dict[str, list[float]] = {"act": [], "env step": [], "training step": []}
    for tasks in args.tasks:
        sc = widened(tasks, args.edges)
        act = decision_seconds("ucb-coma", sc, args.seconds) * 1e3
        step = env_step_seconds(sc, args.seconds)[0] * 1e3
        wall, steps = episode_seconds("ucb-coma", sc, args.scale_episodes, LOCKSTEP)
        per_step = wall / steps * 1e3
        for key, value in zip(costs, (act, step, per_step), strict=True):
            costs[key].append(value)
        print(
            f"| {tasks} | {act:.3f} | {step:.3f} | {per_step:.1f} "
            f"| {wall / args.scale_episodes:.2f} |"
        )
    if args.plot:
        from llmoffload.experiments.plots import Panel, line_chart  # matplotlib only when plotting

        zero = np.zeros(len(args.tasks))
        series = {key: (np.array(v), zero) for key, v in costs.items()}
        line_chart([Panel("tasks (agents)", "ms per decision", args.tasks, series)], args.plot)
        print(f"\nplot: {args.plot}")


def floor(args: argparse.Namespace, paper: Scenario, steps: dict[str, int]) -> None:
    """Each neural learner's FLOPs per joint training step, the rate they run at, and
    the seconds of an ``--episodes`` run were every FLOP at the machine's peak; the
    run's joint steps from ``steps`` where ``training`` counted them, else trained."""
    peak = peak_flops(args.seconds)
    print(f"\nfloor: one thread multiplies float32 matrices at {peak / 1e9:.0f} GFLOP/s\n")
    print(
        f"| method | MFLOP per joint step | GFLOP/s reached | joint steps in {args.episodes} "
        "episodes | train s at peak | train s now (steps x s per step) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for algo in args.algos:
        flops, seconds = work_per_step(algo, paper, args.floor_episodes)
        if flops == 0:
            continue  # no network: nothing for a matrix product to bound
        if algo not in steps:
            steps[algo] = train_seconds(algo, paper, args.episodes, LOCKSTEP)[1]
        run = steps[algo]
        print(
            f"| {algo} | {flops / 1e6:.1f} | {flops / seconds / 1e9:.1f} | {run} "
            f"| {flops * run / peak:.1f} | {seconds * run:.1f} |"
        )


if __name__ == "__main__":
    main()
