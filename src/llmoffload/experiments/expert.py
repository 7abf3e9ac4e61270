"""Expert demonstrations: the CP-SAT schedule of training instances, cached on disk.

The expert is Optimal (``schedulers.optimal.solve``: CP-SAT started from the local
search's schedule, within its time limit); a demonstration is an instance and the
dispatch sequence of its schedule, which replayed through the execution model gives
that schedule exactly (same order, same times). Instances are drawn from given seeds
(the training stream's, so an expert never sees a held-out instance).

Each solved instance is cached as one small JSON file, named by a hash of the scenario,
the instance's seed, the time limit and the solver's code (``solver_code``), under
``$LLMOFFLOAD_CACHE/expert`` (default ``~/.cache/llmoffload/expert``): CP-SAT cut by
its time limit depends on the machine's speed, so the cache also makes a run's expert
the same every time it is trained again.
The instances not cached yet are solved on a pool of ``workers`` processes. Each is
solved under a lock on its cache file, taken without waiting: runs started at once on
the same scenario and seed (gnn-sched and a ``-bc`` learner in the study) share the
instances out instead of each solving all of them, then wait for the other's.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout
from tqdm import tqdm

from llmoffload.experiments.provenance import code_digest
from llmoffload.files import write_text_atomic
from llmoffload.marl.learner import Demo
from llmoffload.model.execution import Dispatch
from llmoffload.model.instance import sample_instance
from llmoffload.model.scenario import Scenario, parse_scenario
from llmoffload.schedulers.optimal import solve

EXPERT_FORMAT = "llmoffload-expert/1"


def cache_dir() -> Path:
    return Path(os.environ.get("LLMOFFLOAD_CACHE", "~/.cache/llmoffload")).expanduser() / "expert"


def demonstrations(
    scenario: Scenario,
    seeds: list[int],
    time_limit_s: float,
    workers: int = 1,
    progress: bool = True,
) -> list[Demo]:
    """The expert's demonstration on the instance of each seed, from the cache or solved."""
    data = scenario.model_dump(mode="json")
    paths = [cache_dir() / f"{key(data, seed, time_limit_s)}.json" for seed in seeds]
    todo = [(seed, path) for seed, path in zip(seeds, paths, strict=True) if not path.is_file()]
    jobs = [(data, seed, time_limit_s, str(path)) for seed, path in todo]
    cache_dir().mkdir(parents=True, exist_ok=True)
    bar = tqdm(
        total=len(seeds),
        initial=len(seeds) - len(todo),
        desc="expert",
        unit="inst",
        disable=not progress,
    )
    with bar:
        if workers > 1 and len(jobs) > 1:
            ctx = multiprocessing.get_context("spawn")  # no forked torch state
            with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx) as pool:
                counted(pool.map(solve_into, *zip(*jobs, strict=True)), bar)
        else:
            counted((solve_into(*job) for job in jobs), bar)
    for job in jobs:  # those another process was solving: wait for it (or solve them here)
        solve_into(*job, wait=True)
    demos = []
    for seed, path in zip(seeds, paths, strict=True):
        order = json.loads(path.read_text())["order"]
        instance = sample_instance(scenario, np.random.default_rng(seed))
        demos.append((instance, [Dispatch(*d) for d in order]))
    return demos


def counted(items: Iterable[object], bar: tqdm) -> None:
    """Go through the items as they come, the bar counting them."""
    for _ in items:
        bar.update()


def key(scenario: dict, seed: int, time_limit_s: float) -> str:
    text = json.dumps(
        {
            "format": EXPERT_FORMAT,
            "scenario": scenario,
            "seed": seed,
            "limit": time_limit_s,
            "solver": solver_code(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@cache
def solver_code() -> str:
    """The digest of the code that solves an instance: a change to it solves afresh."""
    return code_digest([solve.__module__]).digest


def expert_order(scenario: dict, seed: int, time_limit_s: float) -> list[list[int]]:
    """CP-SAT's dispatch sequence on the instance of ``seed`` (a worker's job)."""
    instance = sample_instance(parse_scenario(scenario, "expert"), np.random.default_rng(seed))
    return [list(d) for d in solve(instance, time_limit_s=time_limit_s).schedule.order]


def solve_into(
    scenario: dict, seed: int, time_limit_s: float, path: str, wait: bool = False
) -> None:
    """Solve the instance of ``seed`` into the cache file ``path``, unless it is there or
    (without ``wait``) another process holds its lock, solving it now (a worker's job)."""
    try:
        with FileLock(f"{path}.lock", timeout=-1 if wait else 0):
            if not Path(path).is_file():
                order = expert_order(scenario, seed, time_limit_s)
                text = json.dumps({"format": EXPERT_FORMAT, "order": order}) + "\n"
                write_text_atomic(Path(path), text)
    except Timeout:
        pass
