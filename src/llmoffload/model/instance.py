"""Problem instances: concrete tasks sampled from a scenario, saved as JSON.

An instance file embeds its scenario, so it replays exactly anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import Field, ValidationError, model_validator

from llmoffload.errors import OffloadError
from llmoffload.model.scenario import (
    MAX_TASKS,
    Count,
    Model,
    NonNegative,
    Positive,
    Scenario,
    Sizes,
    one_line,
    optional,
)

FORMAT = "llmoffload-instance/1"


class Subtask(Model):
    """L_ij = (C_ij, D_ij, M_ij, R_ij) plus its predecessors (indices in the task), and
    the tokens its LLM call reads and writes, present exactly when the scenario's
    compute is ``tokens`` (``cycles`` is then recorded but not used)."""

    name: str
    modality: str
    input_bits: Positive
    output_bits: Positive
    cycles: Positive
    preds: list[Annotated[int, Field(strict=True, ge=0)]] = []
    prompt_tokens: Count | None = optional()
    output_tokens: Count | None = optional()

    def token_counts(self) -> tuple[int, int]:
        """(prompt, output) tokens, which a ``compute: tokens`` instance gives every subtask
        (checked on load): refused in one line where they are missing."""
        prompt, output = self.prompt_tokens, self.output_tokens
        if prompt is None or output is None:
            raise OffloadError(f"subtask '{self.name}' has no prompt_tokens and output_tokens")
        return prompt, output


class Task(Model):
    """One request's DAG; subtasks are in topological order, the last aggregates."""

    workflow: str
    arrival_s: NonNegative = 0.0
    distances_m: list[Positive]
    subtasks: list[Subtask] = Field(min_length=1)

    @model_validator(mode="after")
    def _shape(self) -> Task:
        last = len(self.subtasks) - 1
        successors: set[int] = set()
        for j, sub in enumerate(self.subtasks):
            for p in sub.preds:
                if p >= j:
                    raise ValueError(
                        f"subtask {j} ('{sub.name}') lists predecessor {p}, which does not "
                        "come before it (a cycle, or not in topological order)"
                    )
            successors.update(sub.preds)
        sinks = [j for j in range(last + 1) if j not in successors]
        if sinks != [last]:
            raise ValueError(f"only the last subtask may have no successor, found {sinks}")
        return self


class Instance(Model):
    """A scenario and the tasks of one episode.

    A task whose ``workflow`` is one of the scenario's has that workflow's shape: the
    nodes in ``Workflow.order()``, each with its name, modality and predecessors, as
    ``sample_task`` draws them. A task naming a workflow the scenario lacks is made by
    hand (tests, calibration probes) and held to its own shape only; an instance file
    may not hold one (``load_instance``).

    ``busy_s`` (optional) is work already queued before t = 0: per server, when each of
    its slots frees, one time per slot (an edge: one), none for a server without a slot
    limit. Absent, every slot is free at 0 and the instance dumps as before.
    """

    format: str = FORMAT
    scenario: Scenario
    tasks: list[Task] = Field(min_length=1, max_length=MAX_TASKS)
    busy_s: list[list[NonNegative]] | None = optional()

    @model_validator(mode="after")
    def _fits_scenario(self) -> Instance:
        edges = sum(s.kind == "edge" for s in self.scenario.servers)
        known = set(self.scenario.modalities)
        tokens = self.scenario.compute == "tokens"
        for i, task in enumerate(self.tasks):
            if len(task.distances_m) != edges:
                raise ValueError(
                    f"task {i} has {len(task.distances_m)} distances for {edges} edge servers"
                )
            for sub in task.subtasks:
                if sub.modality not in known:
                    raise ValueError(f"task {i} subtask '{sub.name}': unknown modality")
                counted = (sub.prompt_tokens, sub.output_tokens)
                if tokens and None in counted:
                    raise ValueError(
                        f"task {i} subtask '{sub.name}': compute 'tokens' needs its "
                        "prompt_tokens and output_tokens"
                    )
                if not tokens and counted != (None, None):
                    raise ValueError(
                        f"task {i} subtask '{sub.name}' has token counts, which only "
                        "compute 'tokens' uses (its scenario's compute is 'cycles')"
                    )
            if task.workflow in self.scenario.workflows:
                shape = self.scenario.workflows[task.workflow].nodes_in_order()
                if differs := difference(task, shape):
                    raise ValueError(f"task {i} (workflow '{task.workflow}'): {differs}")
        if self.busy_s is not None:
            slots = [s.slots or 0 for s in self.scenario.servers]
            if [len(times) for times in self.busy_s] != slots:
                raise ValueError(
                    f"busy_s needs one time per slot of each server, {slots} "
                    "(none for a server without a slot limit)"
                )
        return self

    def dumps(self) -> str:
        return self.model_dump_json(indent=1) + "\n"


def difference(task: Task, shape: tuple[tuple[str, str, tuple[int, ...]], ...]) -> str:
    """How a task's subtasks differ from its workflow's nodes (``nodes_in_order``); ''
    if they do not."""
    if len(task.subtasks) != len(shape):
        return f"{len(task.subtasks)} subtasks, but the workflow has {len(shape)} nodes"
    where = "where the workflow has"
    for j, (sub, (name, modality, preds)) in enumerate(zip(task.subtasks, shape, strict=True)):
        if sub.name != name:
            return f"subtask {j} is '{sub.name}' {where} '{name}'"
        if sub.modality != modality:
            return f"subtask {j} '{name}' has modality '{sub.modality}' {where} '{modality}'"
        if sorted(sub.preds) != list(preds):
            return f"subtask {j} '{name}' has predecessors {sub.preds} {where} {list(preds)}"
    return ""


def sample_task(scenario: Scenario, workflow: str, rng: np.random.Generator) -> Task:
    """Draw one task of ``workflow``: sizes per modality and device-edge distances.

    All of a task's numbers come from one call, in the order of one call per
    number: each subtask's input then output size (kbit), then one distance per edge.
    """
    nodes = scenario.workflows[workflow].nodes_in_order()
    load = scenario.workload
    span = scenario.network.channel.distance_m
    edges = sum(s.kind == "edge" for s in scenario.servers)
    ranges = [
        (r.low, r.high)
        for _, modality, _ in nodes
        for r in (load.sizes[modality].input_kbit, load.sizes[modality].output_kbit)
    ]
    low, high = np.array(ranges + [(span.low, span.high)] * edges).T
    # what rng.uniform(low, high) computes, without its slow broadcasting path
    draws = (low + (high - low) * rng.random(len(low))).tolist()
    bits = [kbit * 1e3 for kbit in draws[: 2 * len(nodes)]]
    subtasks = [
        Subtask(
            name=name,
            modality=modality,
            input_bits=bits[2 * j],
            output_bits=bits[2 * j + 1],
            cycles=load.cycles_per_bit * bits[2 * j],
            preds=list(preds),
        )
        for j, (name, modality, preds) in enumerate(nodes)
    ]
    return Task(workflow=workflow, distances_m=draws[2 * len(nodes) :], subtasks=subtasks)


def sample_instance(
    scenario: Scenario, rng: np.random.Generator, tasks: int | None = None
) -> Instance:
    """Draw an episode: each task's workflow uniformly from the workload's list, then,
    if the workload has an arrival rate, the gaps between arrivals (exponential), then,
    with ``compute: tokens``, the token counts. Each extension draws after all that came
    before it, so a scenario without it draws exactly what it drew before."""
    load = scenario.workload
    count = load.tasks if tasks is None else tasks
    if not 1 <= count <= MAX_TASKS:
        raise OffloadError(f"tasks per instance must be from 1 to {MAX_TASKS}, not {count}")
    names = load.workflows
    drawn = [sample_task(scenario, names[int(rng.integers(len(names)))], rng) for _ in range(count)]
    if load.arrivals_per_s is not None:
        arrivals = np.cumsum([0.0, *rng.exponential(1.0 / load.arrivals_per_s, count - 1)])
        drawn = [
            task.model_copy(update={"arrival_s": float(at)})
            for task, at in zip(drawn, arrivals, strict=True)
        ]
    if scenario.compute == "tokens":
        drawn = with_tokens(drawn, load.sizes, rng)
    return Instance(scenario=scenario, tasks=drawn)


def with_tokens(tasks: list[Task], sizes: dict[str, Sizes], rng: np.random.Generator) -> list[Task]:
    """The tasks with each subtask's prompt then output token count drawn uniformly from
    its modality's ranges (integers, both ends included), all in one call."""
    ranges = [
        (r.low, r.high)
        for task in tasks
        for sub in task.subtasks
        for r in sizes[sub.modality].token_ranges()
    ]
    low, high = np.array(ranges).T
    counts = iter(rng.integers(low, high, endpoint=True).tolist())
    return [
        task.model_copy(
            update={
                "subtasks": [
                    sub.model_copy(
                        update={"prompt_tokens": next(counts), "output_tokens": next(counts)}
                    )
                    for sub in task.subtasks
                ]
            }
        )
        for task in tasks
    ]


def load_instance(path: str | Path) -> Instance:
    """Read and validate an instance JSON file."""
    path = Path(path)
    if not path.is_file():
        raise OffloadError(f"instance file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OffloadError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise OffloadError(f"{path}: not an instance file (expected format '{FORMAT}')")
    try:
        inst = Instance.model_validate(data)
    except ValidationError as exc:
        raise OffloadError(f"{path}: {one_line(exc)}") from None
    for i, task in enumerate(inst.tasks):
        if task.workflow not in inst.scenario.workflows:
            raise OffloadError(
                f"{path}: task {i} names workflow '{task.workflow}', which its scenario lacks "
                f"(it has {', '.join(inst.scenario.workflows)})"
            )
    return inst
