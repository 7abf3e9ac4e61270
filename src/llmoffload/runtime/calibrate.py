"""Calibration: fit each server's speed to its endpoint, so simulation matches the deployment.

The execution model predicts a subtask's time on server s as ``D / r_up(s) + c D / f_s``
(upload plus compute, c cycles per bit). Calibration sends each endpoint prompts of a few
sizes, measures each call's wall time t, and fits the one free number per server, its
clock f_s, by least squares through the origin on the compute part ``t - D / r_up(s)``.
The link rates stay the scenario's: a loopback or LAN test cannot measure a wireless
uplink, and the compute slope absorbs what the rates do not explain. Prediction error is
the mean absolute difference between measured and predicted per-subtask times.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from llmoffload.model.execution import evaluate
from llmoffload.model.instance import Instance, Subtask, Task
from llmoffload.model.scenario import Scenario, parse_scenario
from llmoffload.runtime.deployment import Bound
from llmoffload.runtime.executor import Batch, EndpointError, complete

PROMPT_WORDS = (2, 8, 24)  # 16 to 192 bytes: the sizes of the default templates' prompts
MAX_GHZ = 1e6  # a server whose calls the model's upload time alone already explains


@dataclass(frozen=True)
class Sample:
    """One measured call: which server, how many input bits, how long it took."""

    server: int
    bits: float
    seconds: float


def probe_prompts(rounds: int) -> list[str]:
    """Prompts of the sampled sizes, ``rounds`` of each, made of plain words."""
    return [" ".join(["measure"] * n) for _ in range(rounds) for n in PROMPT_WORDS]


async def measure(client: httpx.AsyncClient, bound: Bound, rounds: int = 2) -> list[Sample]:
    """Time every endpoint on the probe prompts, one call at a time."""
    samples = []
    for server, endpoint in enumerate(bound.endpoints):
        for prompt in probe_prompts(rounds):
            began = time.perf_counter()
            try:
                await complete(client, endpoint, bound.deployment, prompt)
            except EndpointError as exc:
                raise EndpointError(f"{bound.scenario.servers[server].name}: {exc}") from None
            samples.append(Sample(server, 8.0 * len(prompt.encode()), time.perf_counter() - began))
    return samples


def probe_instance(scenario: Scenario, bound: Bound, samples: list[Sample]) -> Instance:
    """One single-subtask task per sample, in a modality its server serves."""
    tasks = [
        Task(
            workflow="probe",
            distances_m=bound.distances_m,
            subtasks=[
                Subtask(
                    name="probe",
                    modality=scenario.servers[s.server].modalities[0],
                    input_bits=s.bits,
                    output_bits=1.0,
                    cycles=scenario.workload.cycles_per_bit * s.bits,
                )
            ],
        )
        for s in samples
    ]
    return Instance(scenario=scenario, tasks=tasks)


def predicted(scenario: Scenario, bound: Bound, samples: list[Sample]) -> list[tuple[float, float]]:
    """(upload, compute) the model predicts for each sample on its server."""
    order = [(i, 0, s.server) for i, s in enumerate(samples)]
    runs = evaluate(probe_instance(scenario, bound, samples), order).runs
    return [(r.upload, r.compute) for r in runs]


def prediction_error(scenario: Scenario, bound: Bound, samples: list[Sample]) -> float:
    """Mean |measured - predicted| seconds per call under ``scenario``."""
    pairs = zip(samples, predicted(scenario, bound, samples), strict=True)
    return sum(abs(s.seconds - up - comp) for s, (up, comp) in pairs) / len(samples)


def trace_error(batch: Batch, scenario: Scenario) -> float:
    """Mean |real - predicted| duration of a batch's subtasks that ran where planned."""
    instance = Instance(scenario=scenario, tasks=batch.instance.tasks)
    runs = {(r.task, r.subtask): r for r in evaluate(instance, batch.schedule.order).runs}
    errors = []
    for step in batch.steps:
        if step.done is not None and not step.retried:
            run = runs[step.task, step.subtask]
            errors.append(abs(step.done.end - step.done.start - run.upload - run.compute))
    return sum(errors) / len(errors)


def fit(bound: Bound, samples: list[Sample]) -> Scenario:
    """The deployment's scenario with each server's GHz fitted to its samples."""
    sc = bound.scenario
    cpb = sc.workload.cycles_per_bit
    uploads = [up for up, _ in predicted(sc, bound, samples)]
    servers = []
    for k, server in enumerate(sc.servers):
        mine = [(s, up) for s, up in zip(samples, uploads, strict=True) if s.server == k]
        # compute seconds = (c D) / f: least squares for 1/f through the origin
        xs = [cpb * s.bits for s, _ in mine]
        ys = [max(s.seconds - up, 0.0) for s, up in mine]
        slope = sum(x * y for x, y in zip(xs, ys, strict=True)) / sum(x * x for x in xs)
        ghz = MAX_GHZ if slope <= 0 else min(1.0 / slope / 1e9, MAX_GHZ)
        servers.append(server.model_dump() | {"ghz": ghz})
    name = f"{sc.name.removesuffix('-calibrated')}-calibrated"
    data = sc.model_dump() | {"name": name, "servers": servers}
    return parse_scenario(data, "calibrated scenario")
