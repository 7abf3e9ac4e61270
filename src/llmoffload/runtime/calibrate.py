"""Calibration: fit each server's timing to its endpoint, so simulation matches the deployment.

The execution model predicts a subtask's time on server s as upload plus compute
(docs/model.md §3). Calibration sends each endpoint prompts of several lengths, asking
for several output lengths (and, to a server that takes images, prompts with an image
of each of IMAGE_SIDES, counted in D by its bytes and in P by the server's own token
count), measures each call's wall time t and token counts, and fits the compute part
``t - D / r_up(s)`` per server:

- ``tokens`` (the default): ``call + prefill P + decode O`` ms, P and O the call's prompt
  and output tokens. From the server's own prefill and decode milliseconds where it
  reports them (llama.cpp's ``timings``): prefill and decode are their totals over the
  tokens, the per-call overhead the median of what the wall time leaves. Otherwise
  (OpenAI-compatible servers without them) by a non-negative median regression (least
  absolute error) of the wall times on (1, P, O).
- ``cycles`` (the paper's model): the clock f_s, by a median regression through the
  origin of the compute part on ``c D``; output length does not enter it.

Both fits are median regressions, not least squares: on a shared machine a call now
and then waits for the CPU (the same call takes 5 ms or 40 ms), and least squares
would follow those calls.

The link rates stay the scenario's: a loopback or LAN test cannot measure a wireless
uplink. Every probe prompt is new (words drawn from one seeded generator), so a
server's prompt cache cannot skip a prefill the model counts. Errors are measured on a
second, held-out set of calls: per server, the median and 90th percentile of
|predicted - measured| / measured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
import numpy as np

from llmoffload.model.execution import evaluate
from llmoffload.model.instance import Instance, Subtask, Task
from llmoffload.model.scenario import TIMINGS, Scenario, parse_scenario
from llmoffload.runtime.deployment import Bound
from llmoffload.runtime.executor import Batch, EndpointError, Step, complete, token_counts
from llmoffload.runtime.media import Media, checked, pattern_png, takes

PROMPT_WORDS = (2, 12, 40)  # ~16 to ~320 bytes: short requests to long contexts
OUTPUT_TOKENS = (4, 16, 48)  # max_tokens asked for: decode time must vary to be fitted
WORDS = ("check", "the", "pump", "audio", "log", "for", "a", "fault", "and", "explain", "why")
MAX_GHZ = 1e6  # a server whose calls the model's upload time alone already explains
IMAGE_SIDES = (64, 128)  # px, square: the image probes of a server that takes images
Probe = tuple[str, int, tuple[Media, ...]]  # prompt, max_tokens, media sent before it


@dataclass(frozen=True)
class Sample:
    """One measured call: which server, its input bits and tokens, how long it took."""

    server: int
    bits: float
    prompt_tokens: int
    output_tokens: int
    seconds: float
    timings_ms: tuple[float, float] | None = None  # the server's prefill and decode ms
    media_bytes: int = 0  # of the bits, the image's (or audio's)
    pixels: int = 0  # the image's width times height


def probes(rounds: int, rng: np.random.Generator, images: bool) -> list[Probe]:
    """(prompt, max_tokens, media) for every prompt length and output length, ``rounds``
    times; for a server that takes images, also a mid-length prompt with an image of each
    of IMAGE_SIDES, so the fit sees prefill grow with the image's tokens."""
    text = [
        (" ".join(rng.choice(WORDS, size=n)), out, ())
        for _ in range(rounds)
        for n in PROMPT_WORDS
        for out in OUTPUT_TOKENS
    ]
    seen = [
        (" ".join(rng.choice(WORDS, size=PROMPT_WORDS[1])), out, (probe_image(side),))
        for _ in range(rounds if images else 0)
        for side in IMAGE_SIDES
        for out in OUTPUT_TOKENS
    ]
    return text + seen


def probe_image(side: int) -> Media:
    return checked("image", pattern_png(side, side))


async def measure(
    client: httpx.AsyncClient, bound: Bound, rounds: int = 2, seed: int = 0
) -> list[Sample]:
    """Time every endpoint on the probe prompts, one call at a time."""
    rng = np.random.default_rng(seed)
    samples = []
    for server, endpoint in enumerate(bound.endpoints):
        images = takes("image", bound.scenario.servers[server].modalities)
        for prompt, max_tokens, media in probes(rounds, rng, images):
            began = time.perf_counter()
            try:
                reply = await complete(
                    client, endpoint, bound.deployment, prompt, max_tokens, media
                )
            except EndpointError as exc:
                raise EndpointError(f"{bound.scenario.servers[server].name}: {exc}") from None
            seconds = time.perf_counter() - began
            samples.append(
                Sample(
                    server,
                    8.0 * (len(prompt.encode()) + sum(len(m.data) for m in media)),
                    reply.prompt_tokens,
                    reply.completion_tokens,
                    seconds,
                    reply.timings_ms,
                    sum(len(m.data) for m in media),
                    sum(m.pixels for m in media),
                )
            )
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
                    **token_counts(scenario, s.prompt_tokens, s.output_tokens),
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


def relative_errors(scenario: Scenario, bound: Bound, samples: list[Sample]) -> list[np.ndarray]:
    """Per server, |predicted - measured| / measured of each of its calls."""
    pairs = zip(samples, predicted(scenario, bound, samples), strict=True)
    errors: list[list[float]] = [[] for _ in scenario.servers]
    for s, (up, comp) in pairs:
        errors[s.server].append(abs(up + comp - s.seconds) / s.seconds)
    return [np.array(e) for e in errors]


def trace_error(batch: Batch, scenario: Scenario) -> float:
    """Mean |real - predicted| duration of a batch's subtasks that ran where planned."""
    errors = [e for _, e in step_errors(batch, scenario)]
    return sum(errors) / len(errors)


def step_errors(batch: Batch, scenario: Scenario) -> list[tuple[str, float]]:
    """(modality, |real - predicted| duration) of each subtask of a batch that ran where
    planned, predicted with its real token counts under ``compute: tokens``."""
    steps = {(s.task, s.subtask): s for s in batch.steps}
    tasks = [
        task.model_copy(
            update={
                "subtasks": [
                    sub.model_copy(update=measured_tokens(scenario, steps[i, j]))
                    for j, sub in enumerate(task.subtasks)
                ]
            }
        )
        for i, task in enumerate(batch.instance.tasks)
    ]
    instance = Instance(scenario=scenario, tasks=tasks)
    runs = {(r.task, r.subtask): r for r in evaluate(instance, batch.schedule.order).runs}
    errors = []
    for step in batch.steps:
        if step.done is not None and not step.retried:
            run = runs[step.task, step.subtask]
            modality = tasks[step.task].subtasks[step.subtask].modality
            errors.append(
                (modality, abs(step.done.end - step.done.start - run.upload - run.compute))
            )
    return errors


def measured_tokens(scenario: Scenario, step: Step) -> dict[str, int | None]:
    """A step's token fields as it really ran (none under cycles)."""
    counts = token_counts(scenario, step.prompt_tokens, step.completion_tokens)
    return {
        "prompt_tokens": counts.get("prompt_tokens"),
        "output_tokens": counts.get("output_tokens"),
    }


def clock_ghz(samples: list[Sample], uploads: list[float], cycles_per_bit: float) -> float:
    """f_s: compute seconds = (c D) / f, a median regression for 1 / f through the origin."""
    xs = np.array([[cycles_per_bit * s.bits] for s in samples])
    ys = np.array([max(s.seconds - up, 0.0) for s, up in zip(samples, uploads, strict=True)])
    (slope,) = median_fit(xs, ys)
    return MAX_GHZ if slope <= 0 else min(1.0 / slope / 1e9, MAX_GHZ)


def token_timings(samples: list[Sample], uploads: list[float]) -> dict[str, float]:
    """call_ms, prefill_ms_per_token, decode_ms_per_token of one server's samples."""
    wall_ms = np.array([(s.seconds - up) * 1e3 for s, up in zip(samples, uploads, strict=True)])
    prompt = np.array([s.prompt_tokens for s in samples], dtype=float)
    output = np.array([s.output_tokens for s in samples], dtype=float)
    if all(s.timings_ms is not None for s in samples):
        prefill_ms, decode_ms = np.array([s.timings_ms for s in samples]).T
        call = float(np.median(wall_ms - prefill_ms - decode_ms))
        coef = [call, prefill_ms.sum() / prompt.sum(), decode_ms.sum() / output.sum()]
    else:
        coef = median_fit(np.column_stack([np.ones_like(prompt), prompt, output]), wall_ms)
    return dict(zip(TIMINGS, (max(float(c), 0.0) for c in coef), strict=True))


def image_tokens(samples: list[Sample]) -> dict[str, float]:
    """image_tokens_per_mpx of a server that was sent images: its prompt tokens fitted on
    (1, text bytes, pixels), the text probes pinning what the text costs."""
    if not any(s.pixels for s in samples):
        return {}
    xs = np.array([[1.0, s.bits / 8.0 - s.media_bytes, s.pixels] for s in samples])
    coef = median_fit(xs, np.array([s.prompt_tokens for s in samples], dtype=float))
    return {"image_tokens_per_mpx": float(coef[2]) * 1e6}


def median_fit(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """The non-negative coefficients c of least absolute error sum |xs c - ys| (a median
    regression), solved exactly as a linear program: a call a busy machine slowed pulls
    the fit no further than any other call, where least squares would follow it."""
    from scipy.optimize import linprog  # SciPy only when calibrating

    n, k = xs.shape  # minimise sum(u + v) with xs c + u - v = ys and c, u, v >= 0
    cost = np.concatenate([np.zeros(k), np.ones(2 * n)])
    equal = np.hstack([xs, np.eye(n), -np.eye(n)])
    found = linprog(cost, A_eq=equal, b_eq=ys, bounds=(0, None), method="highs")
    return found.x[:k]


def fit(bound: Bound, samples: list[Sample], compute: str = "tokens") -> Scenario:
    """The deployment's scenario with each server's timing fitted to its samples."""
    sc = bound.scenario
    uploads = [up for up, _ in predicted(sc, bound, samples)]
    servers = []
    for k, server in enumerate(sc.servers):
        own = [(s, up) for s, up in zip(samples, uploads, strict=True) if s.server == k]
        mine, ups = [s for s, _ in own], [up for _, up in own]
        if compute == "tokens":
            servers.append(server.model_dump() | token_timings(mine, ups) | image_tokens(mine))
        else:
            ghz = clock_ghz(mine, ups, sc.workload.cycles_per_bit)
            servers.append(server.model_dump(exclude=set(TIMINGS)) | {"ghz": ghz})
    name = f"{sc.name.removesuffix('-calibrated')}-calibrated"
    data = sc.model_dump() | {"name": name, "compute": compute, "servers": servers}
    data["workload"]["sizes"] = sizes(sc, samples, bound.deployment.max_tokens, compute)
    return parse_scenario(data, "calibrated scenario")


def sizes(
    sc: Scenario, samples: list[Sample], max_tokens: int, compute: str
) -> dict[str, dict[str, object]]:
    """Each modality's sizes for ``compute``: under tokens, its own token ranges, or the
    probed prompt lengths and 1 to ``max_tokens`` outputs (what a request's subtask asks
    for) where the scenario has none; under cycles, none."""
    prompts = [max(s.prompt_tokens, 1) for s in samples]
    probed = {"prompt_tokens": [min(prompts), max(prompts)], "output_tokens": [1, max_tokens]}
    out = {}
    for m, size in sc.workload.sizes.items():
        out[m] = size.model_dump(exclude=set(probed))
        if compute == "tokens":
            out[m] |= {k: getattr(size, k) or v for k, v in probed.items()}
    return out
