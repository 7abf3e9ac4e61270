"""The paper's experiments (paper §5) as independent, cached runs on a process pool or Ray.

A sweep is a ``Grid`` of settings. ``plan`` turns it into the runs Figs. 4-9
need (each method at each bandwidth, deadline and, for one method, failure
probability, per seed and protocol; shared points once), plus the references
(HEFT, best classic, Optimal) on the same held-out instances at every
setting. A run is named by a hash of everything that decides its numbers (the
setting, the resolved scenario, the method's config under its protocol, the
result format, and the digest of the code the run executes: ``run_code``), so an
interrupted sweep resumes where it stopped, and a changed setting, or a change to
code a run executes, reruns only the runs it touches.
A run the protocol does not change (CS-UCB, which always masks; the references)
has the protocol ``any`` and serves every protocol's figures. A run is done
when its ``result.json`` exists: the driver writes it last and atomically; a
run directory without one is a leftover and is redone from scratch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import cache, cached_property
from itertools import product
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from llmoffload.errors import OffloadError, require
from llmoffload.experiments.provenance import SRC, CodeDigest, changed, closure
from llmoffload.experiments.training import (
    LOCKSTEP,
    PROTOCOLS,
    check_failure_prob,
    check_protocol,
    evaluate_run,
    evaluate_scheduler,
    make_config,
    train,
)
from llmoffload.files import write_text_atomic
from llmoffload.marl.registry import LEARNERS, PAPER
from llmoffload.model.scenario import Scenario, load_scenario, parse_scenario

RESULT_FORMAT = "llmoffload-result/4"  # 2: protocol; 3: code; 4: planning times, yardsticks
# what a learner's run records per held-out instance beside its own numbers (training.yardsticks)
YARDSTICKS = ("search", "search_s", "search_10x", "search_10x_s")
REFERENCES = ("heft", "best-classic", "optimal")  # beside the learners, never trained
ANY = "any"  # the protocol of a run that every protocol would run alike
ALGORITHMS = "llmoffload.marl.algorithms."  # one learner per module: a run executes one


@dataclass(frozen=True)
class Grid:
    """What to sweep; the defaults are the paper's (paper §5, Table 2)."""

    methods: tuple[str, ...] = PAPER
    bandwidths_mhz: tuple[float, ...] = (5.0, 5.5, 6.0)  # Figs. 5/6
    deadlines_s: tuple[float, ...] = (2.5, 2.8, 3.0)  # Figs. 7/8
    failure_probs: tuple[float, ...] = (0.0, 0.1, 0.2)  # Fig. 9
    bandwidth_mhz: float = 6.0  # where Figs. 4, 7, 8, 9 hold W
    deadline_s: float = 3.0  # where Figs. 4, 5, 6, 9 hold T_max
    failure_method: str = "ucb-coma"  # Fig. 9's one method
    protocols: tuple[str, ...] = PROTOCOLS  # each gets its own figures and claims
    seeds: tuple[int, ...] = (0, 1, 2)
    episodes: int = 700  # the paper's
    lockstep: int = LOCKSTEP  # training episodes played at once
    eval_episodes: int = 50
    time_limit_s: float = 10.0  # Optimal, per held-out instance
    scenario: str = "paper"

    @property
    def budget(self) -> Budget:
        """What the grid gives each of its runs."""
        return Budget(
            self.methods,
            self.seeds,
            self.episodes,
            self.lockstep,
            self.eval_episodes,
            self.time_limit_s,
        )

    def check(self) -> None:
        """One clear error for a grid that cannot run, before any run starts."""
        check_runs(self.budget)
        if self.failure_method not in self.methods:
            raise OffloadError(f"the failure method '{self.failure_method}' is not swept")
        for protocol in self.protocols:
            check_protocol(protocol)
        for p in self.failure_probs:
            check_failure_prob(p)
        base = load_scenario(self.scenario)
        for w, t in self.settings():
            variant(base, w, t)  # raises on a bad W or T_max

    def settings(self) -> list[tuple[float, float]]:
        """Every (bandwidth, deadline) a figure needs, the shared one once."""
        pairs = [(w, self.deadline_s) for w in self.bandwidths_mhz]
        pairs += [(self.bandwidth_mhz, t) for t in self.deadlines_s]
        pairs.append((self.bandwidth_mhz, self.deadline_s))
        return list(dict.fromkeys(pairs))


# `make run`: within 90 s on 2 cores. Each axis keeps the base point and the far end, so
# every figure has two points and every claim is still judged at each of them.
QUICK = Grid(
    bandwidths_mhz=(5.0, 6.0),
    deadlines_s=(2.5, 3.0),
    failure_probs=(0.0, 0.2),
    seeds=(0, 1),
    episodes=50,
    eval_episodes=10,
    time_limit_s=1.0,
)


@dataclass(frozen=True)
class Budget:
    """What a plan gives each run: the learners, seeds and how long each run works
    (``Grid.budget``; ``study.plan``'s per scenario)."""

    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    episodes: int
    lockstep: int
    eval_episodes: int
    time_limit_s: float


def check_runs(budget: Budget) -> None:
    """The checks every plan shares: known learners, a seed, work to do."""
    for method in budget.methods:
        if method not in LEARNERS:
            raise OffloadError(f"unknown method '{method}' (choose from {', '.join(LEARNERS)})")
    if not budget.seeds:
        raise OffloadError("at least one seed is needed")
    if min(budget.episodes, budget.eval_episodes, budget.lockstep) < 1:
        raise OffloadError("episodes, held-out episodes and lockstep must be at least 1")


@dataclass(frozen=True)
class RunSpec:
    """One run: a method under a protocol at one setting and seed. ``scenario`` is the
    base scenario's JSON."""

    method: str
    protocol: str  # one of training.PROTOCOLS, or ANY where the protocol changes nothing
    bandwidth_mhz: float
    deadline_s: float
    failure_prob: float
    seed: int
    episodes: int  # 0 for the references, which do not train
    lockstep: int  # training episodes played at once; 0 for the references
    eval_episodes: int
    time_limit_s: float  # 0 for learners, whose numbers it does not change
    scenario: str = field(repr=False)

    @cached_property  # a frozen dataclass: hashed once, on first use
    def key(self) -> str:
        """A hash of everything that decides this run's numbers: the resolved config and
        the code it executes too."""
        config = asdict(self.config()) if self.method in LEARNERS else {}
        text = json.dumps(
            {"format": RESULT_FORMAT, **asdict(self), "config": config, "code": self.code.digest},
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @cached_property  # computed where the run is planned, and pickled with it to a worker
    def code(self) -> CodeDigest:
        return run_code(self.method, SRC)

    def config(self) -> Any:
        """The learner's config under this run's protocol (under ANY, all give the same)."""
        return make_config(self.method, {}, PROTOCOLS[0] if self.protocol == ANY else self.protocol)

    @property
    def name(self) -> str:
        """A directory name a person can read, unique by the key."""
        return (
            f"{self.method}-{self.protocol}-W{self.bandwidth_mhz:g}-T{self.deadline_s:g}"
            f"-p{self.failure_prob:g}-s{self.seed}-{self.key}"
        )

    def resolved_scenario(self) -> Scenario:
        base = parse_scenario(json.loads(self.scenario), "sweep")
        return variant(base, self.bandwidth_mhz, self.deadline_s)

    @classmethod
    def of(
        cls,
        method: str,
        protocol: str,
        setting: tuple[float, float, float],
        seed: int,
        budget: Budget,
        scenario: str,
    ) -> RunSpec:
        """``method``'s run at (W, T_max, failure probability) under ``protocol``. A
        reference trains nothing and a learner's numbers do not hang on the CP-SAT limit:
        their budgets are 0, so that they change no key."""
        learner = method not in REFERENCES
        return cls(
            method=method,
            protocol=protocol_of(method, protocol),
            bandwidth_mhz=setting[0],
            deadline_s=setting[1],
            failure_prob=setting[2],
            seed=seed,
            episodes=budget.episodes if learner else 0,
            lockstep=budget.lockstep if learner else 0,
            eval_episodes=budget.eval_episodes,
            time_limit_s=0.0 if learner else budget.time_limit_s,
            scenario=scenario,
        )


@cache  # once per process, as its code is imported once: a plan asks for every run
def run_code(method: str, src: Path) -> CodeDigest:
    """The code a run of ``method`` executes, read under ``src``: the sweep's modules with
    what they import, but of the algorithms only the method's own module (the registry's
    constructor's) and what it imports; a reference's, none. Editing one algorithm's file
    so reruns only that algorithm's runs."""
    shared = closure([__name__], src, skip=lambda module: module.startswith(ALGORITHMS))
    own = LEARNERS[method].build.__module__ if method in LEARNERS else None
    return CodeDigest.of(shared | (closure([own], src) if own else {}))


def variant(base: Scenario, bandwidth_mhz: float, deadline_s: float) -> Scenario:
    """The base scenario at bandwidth W and deadline T_max, validated like a file."""
    data = base.model_dump(mode="json")
    data["network"]["bandwidth_mhz"] = bandwidth_mhz
    data["t_max_s"] = deadline_s
    return parse_scenario(data, f"W={bandwidth_mhz:g} MHz, T_max={deadline_s:g} s")


def protocol_of(method: str, protocol: str) -> str:
    """``protocol``, or ANY where every protocol gives ``method`` the same run."""
    if method in REFERENCES:
        return ANY
    config = make_config(method, {}, protocol)
    return ANY if all(make_config(method, {}, p) == config for p in PROTOCOLS) else protocol


def plan(grid: Grid) -> list[RunSpec]:
    """Every run the figures need, each once: a run the protocol does not change is
    shared by every protocol's figures."""
    grid.check()
    # in the scenario's own order: a workflow's node order decides the instances drawn,
    # so sorted keys would give other instances than ``train --scenario`` for one seed
    base = json.dumps(load_scenario(grid.scenario).model_dump(mode="json"))
    at = grid.bandwidth_mhz, grid.deadline_s
    points = [(m, w, t, 0.0) for m in grid.methods for w, t in grid.settings()]
    points += [(grid.failure_method, *at, p) for p in grid.failure_probs]
    points += [(m, w, t, 0.0) for m in REFERENCES for w, t in grid.settings()]
    specs = {}
    for seed, protocol, (method, w, t, p) in product(grid.seeds, grid.protocols, points):
        spec = RunSpec.of(method, protocol, (w, t, p), seed, grid.budget, base)
        specs.setdefault(spec.key, spec)
    return list(specs.values())


def run_one(spec: RunSpec, root: str) -> dict[str, Any]:
    """Train and evaluate one run (or evaluate a reference) and return its numbers.

    Runs in a worker process or a Ray task; the training artifacts land in
    ``root/runs/<name>/`` (on a cluster, make ``root`` a shared directory to
    keep them), and the numbers travel back to the driver.
    """
    torch.set_num_threads(1)
    out = Path(root) / "runs" / spec.name
    shutil.rmtree(out, ignore_errors=True)  # a leftover of an interrupted run
    scenario = spec.resolved_scenario()
    began = time.perf_counter()
    train_s = 0.0
    if spec.method in REFERENCES:
        curve: list[float] = []
        rows = evaluate_scheduler(
            spec.method, scenario, spec.seed, spec.eval_episodes, spec.time_limit_s
        )
    else:
        config = spec.config()
        trained = train(
            spec.method,
            scenario,
            spec.episodes,
            spec.seed,
            out,
            config,
            spec.failure_prob,
            progress=False,
            lockstep=spec.lockstep,
            plot=False,  # the sweep draws its own figures
        )
        curve = [row["reward"] for row in trained]
        train_s = time.perf_counter() - began
        rows = evaluate_run(out, spec.eval_episodes, progress=False, references=False)
    keys = ("reward", "objective", "latency", "cost", "proven", "bound", "plan_s", *YARDSTICKS)
    held = {k: [row[k] for row in rows] for k in keys if k in rows[0]}
    return {
        "format": RESULT_FORMAT,
        "spec": spec_fields(spec),
        "key": spec.key,
        "code": spec.code.modules,  # what a result of other code names as changed
        "wall_s": time.perf_counter() - began,
        "train_s": train_s,  # training alone (a planner's expert data included)
        "train_reward": curve,
        "held_out": held,
    }


def result_path(root: Path, spec: RunSpec) -> Path:
    return root / "runs" / spec.name / "result.json"


def outdated(specs: list[RunSpec], root: Path) -> list[str]:
    """What changed since ``root``'s results of the runs ``specs`` plans were made: for
    each planned run without a result, a result there of the same spec (another key) names
    the modules whose code differs, or that it predates results recording their code, or,
    its code the same, that its scenario or config differed; none found, nothing."""
    planned = {spec.key for spec in specs}
    undone = [spec for spec in specs if not result_path(root, spec).is_file()]
    todo = {json.dumps(spec_fields(spec), sort_keys=True): spec for spec in undone}
    found: set[str] = set()
    for path in root.glob("runs/*/result.json"):
        result = json.loads(path.read_text())
        spec = todo.get(json.dumps(result["spec"], sort_keys=True))
        if spec is None or result["key"] in planned:
            continue
        if "code" not in result:
            found.add(f"unknown, made as {result['format']}")
        else:
            found.update(changed(result["code"], spec.code.modules) or ["scenario or config"])
    return sorted(found)


def spec_fields(spec: RunSpec) -> dict[str, Any]:
    """A run's settings as its result.json records them (the scenario aside)."""
    return {k: v for k, v in asdict(spec).items() if k != "scenario"}


@dataclass
class SweepResults:
    """What a sweep produced: results by key, and one error line per failed run."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    ran: int = 0  # runs executed now, not taken from the cache


Submit = Callable[[RunSpec, str], Future]


def execute(
    specs: list[RunSpec],
    root: Path,
    workers: int = 2,
    ray_address: str | None = None,
    progress: bool = True,
) -> SweepResults:
    """Run what is not cached yet; one run's failure is recorded and the others go on.

    ``root`` is made once the pool is up, so a pool that cannot start (a Ray cluster out
    of reach) leaves no empty directory. Ctrl-C or SIGTERM ends the workers and is one
    OffloadError; the runs finished by then are kept, and the next call resumes there.
    """
    root = root.resolve()
    out = SweepResults()
    todo = []
    for spec in specs:
        path = result_path(root, spec)
        if path.is_file():
            out.results[spec.key] = json.loads(path.read_text())
        else:
            todo.append(spec)
    pool = ray_pool(ray_address) if ray_address else process_pool(workers)
    done = len(specs) - len(todo)
    try:
        with (
            sigterm_as_interrupt(),
            pool as (submit, slots),  # before the bar and root: it may fail to start
            tqdm(
                total=len(specs), initial=done, desc="sweep", unit="run", disable=not progress
            ) as bar,
        ):
            root.mkdir(parents=True, exist_ok=True)
            pending = {submit(spec, str(root)): spec for spec in todo}
            bar.set_postfix(running=min(slots, len(pending)), failed=0)
            for future in as_completed(pending):
                spec = pending.pop(future)
                try:
                    result = future.result()
                except Exception as exc:  # a run's own error: report it, keep the others
                    out.failures[spec.key] = f"{spec.name}: {type(exc).__name__}: {exc}"
                    bar.write(f"failed: {out.failures[spec.key]}")
                else:
                    path = result_path(root, spec)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_text_atomic(path, json.dumps(result) + "\n")
                    out.results[spec.key] = result
                    out.ran += 1
                bar.update()
                bar.set_postfix(running=min(slots, len(pending)), failed=len(out.failures))
    except KeyboardInterrupt:
        raise OffloadError(
            f"interrupted: {len(out.results)} of {len(specs)} runs are done and kept in {root}; "
            "the same command resumes from them"
        ) from None
    return out


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises KeyboardInterrupt, as Ctrl-C does, so that the
    pool's cleanup ends its workers; by default SIGTERM kills the driver alone and its
    workers go on as orphans. Python runs signal handlers in the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def process_pool(workers: int) -> Iterator[tuple[Submit, int]]:
    """A local pool of fresh (spawned) processes: no service to start.

    Whatever ends the block early, Ctrl-C and SIGTERM included, ends the workers at
    once, so that no run goes on writing after the driver is gone.
    """
    ctx = multiprocessing.get_context("spawn")  # no forked torch or tqdm state
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=worker_setup) as pool:
        try:
            yield (lambda spec, root: pool.submit(run_one, spec, root)), workers
        except BaseException:
            for process in pool._processes.values():  # Python 3.14: pool.terminate_workers()
                process.terminate()
            pool.shutdown(cancel_futures=True)  # waits for the workers to end
            raise


def worker_setup() -> None:
    """A worker ignores Ctrl-C, which the terminal sends it too: the driver ends it. Its
    tqdm lock is a thread lock, not tqdm's default semaphore, which a worker so ended
    would leave registered (a 'leaked semaphore' warning when the driver exits)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tqdm.set_lock(threading.RLock())


@contextmanager
def ray_pool(address: str) -> Iterator[tuple[Submit, int]]:
    """The same runs as Ray tasks on an existing cluster (``pip install 'llmoffload[ray]'``).

    ``address`` is the head's ``host:port`` (or ``ray://host:port`` for Ray Client).
    """
    require("ray", "--ray")
    import ray

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not (host and port.isdigit() and int(port) < 2**16):
        raise OffloadError(f"--ray {address}: expected host:port of the Ray head")
    try:  # ray.init retries an absent cluster for minutes; a socket answers at once
        socket.create_connection((host, int(port)), timeout=10).close()
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    except (OSError, RuntimeError) as exc:
        raise OffloadError(f"cannot reach the Ray cluster at {address}: {exc}") from None
    try:
        task = ray.remote(num_cpus=1)(run_one)
        slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
        yield (lambda spec, root: task.remote(spec, root).future()), slots
    finally:
        ray.shutdown()
