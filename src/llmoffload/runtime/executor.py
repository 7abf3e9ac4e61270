"""Run requests for real: plan with a policy, then send every subtask to its endpoint.

One batch of concurrent requests becomes one ``Instance`` (sizes from the real prompts and
the image or audio each request carries), the policy's dispatch order becomes the plan,
and the execution model's schedule of that order is the prediction every real step is
traced beside. Planned together (the
default), a batch is planned against the work earlier batches still have queued (the
executor's ``Ledger``, as the instance's ``busy_s``) and each edge runs its subtasks in
the order they were planned, across batches; planned alone, a batch sees idle servers
and keeps that order only among its own subtasks. Cloud subtasks run as soon as their
inputs are ready, up to the endpoint's concurrency.
A subtask whose endpoint refuses, times out or answers garbage is retried on the cloud,
then on any other server serving its modality; a server that failed is skipped for the
rest of the batch. Everything is asyncio on one ``httpx.AsyncClient``: no thread per call;
cancelling a batch's task cancels every call it has in flight (closing their connections).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypedDict

import httpx
import numpy as np
from pydantic import field_validator

from llmoffload.errors import OffloadError
from llmoffload.experiments.policies import resolve_policy
from llmoffload.model.execution import Dispatch, Execution, Schedule
from llmoffload.model.instance import Instance, Subtask, Task
from llmoffload.model.scenario import Model, Scenario
from llmoffload.runtime.apis import Reply
from llmoffload.runtime.deployment import Bound, Deployment, Endpoint, Stage
from llmoffload.runtime.ledger import Booking, Ledger
from llmoffload.runtime.media import Audio, Image, Media, kinds, takes

BYTES_PER_TOKEN = 4  # a completion's expected size: max_tokens tokens of about 4 UTF-8 bytes


class Request(Model):
    """One user request: which workflow of the scenario, what the user asked, and the
    image and audio the user sent with it (base64 in a service's JSON body)."""

    workflow: str
    text: str
    image: Image | None = None
    audio: Audio | None = None

    def media(self, modality: str) -> list[Media]:
        """The payloads a subtask of this modality is sent (and sized by)."""
        return [m for m in (self.image, self.audio) if m is not None and m.kind in kinds(modality)]

    @field_validator("text")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        """Whitespace is no question: ``run`` and ``serve`` refuse it by this one rule."""
        if not text.strip():
            raise ValueError("must not be empty or whitespace only")
        return text


class TooLong(OffloadError):
    """A subtask's prompt would exceed the deployment's ``max_prompt_tokens``."""


class EndpointError(Exception):
    """An endpoint refused, timed out, or answered something that is not a completion."""


@dataclass(frozen=True)
class Attempt:
    """One call of one subtask on one server; ``error`` is None when it succeeded."""

    server: int
    start: float
    end: float
    error: str | None = None


@dataclass
class Step:
    """A subtask as planned, predicted and really run (seconds from the batch's start)."""

    task: int
    subtask: int
    name: str
    planned: int
    predicted_start: float
    predicted_end: float
    attempts: list[Attempt] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    output: str | None = None

    @property
    def done(self) -> Attempt | None:
        """The successful attempt, if any."""
        return next((a for a in self.attempts if a.error is None), None)

    @property
    def retried(self) -> bool:
        return len(self.attempts) > 1


@dataclass(frozen=True)
class Result:
    """A request's answer (the aggregation node's completion) or why it has none."""

    request: Request
    answer: str | None
    error: str | None
    steps: list[Step]


@dataclass(frozen=True)
class Batch:
    """Everything one ``Executor.run`` produced: plan, prediction and reality."""

    instance: Instance
    schedule: Schedule
    results: list[Result]
    steps: list[Step]  # every subtask, in dispatch order
    plan_s: float
    wall_s: float
    started: float  # time.perf_counter() at the batch's t = 0, to line batches up


Planner = Callable[[Instance], Schedule]


def planner(
    policy: str, bound: Bound, tasks: int = 1, seed: int = 0, time_limit_s: float = 10.0
) -> Planner:
    """The policy ``--policy`` names (a scheduler or a run directory, loaded once), checked
    now by planning a batch of ``tasks`` requests of every workflow: a policy that cannot
    plan this deployment (a run trained for another number of tasks or another scenario)
    fails here, in one line, rather than on every request."""
    choose = resolve_policy(policy, time_limit_s)

    def plan(inst: Instance) -> Schedule:
        return choose(inst, np.random.default_rng(seed)).schedule

    for workflow in bound.scenario.workflows:
        try:
            plan(build_instance(bound, [Request(workflow=workflow, text="check")] * tasks))
        except OffloadError as exc:
            raise OffloadError(
                f"policy {policy} cannot plan workflow '{workflow}' of this deployment: {exc}"
            ) from None
    return plan


def stage(has_preds: bool, is_last: bool) -> Stage:
    """Which prompt template a subtask uses: the DAG's source, sink, or a middle node."""
    if not has_preds:
        return "analysis"
    return "aggregation" if is_last else "subtask"


def build_instance(
    bound: Bound, requests: list[Request], busy_s: list[list[float]] | None = None
) -> Instance:
    """The instance the policy plans: one task per request, sizes from the real prompts,
    and the servers' queued work (``busy_s``) if given.

    A subtask's input is its prompt without predecessors' outputs (known now) plus the
    outputs it will receive, each estimated as max_tokens * BYTES_PER_TOKEN bytes; its
    output is that same estimate. A subtask sent the request's image or audio (by its
    modality: ``image`` and ``image+text`` take the image) has the payload's bytes in its
    input too. Cycles follow the scenario's cycles per bit; with ``compute: tokens`` the
    prompt is the text input at BYTES_PER_TOKEN bytes a token (a cheap estimate that needs
    no tokenizer) plus the image's tokens (``image_tokens``: what calibration measured the
    servers' encoders make of a megapixel; audio's are not counted) and the output
    ``max_tokens``. A prompt over ``max_prompt_tokens``, or a payload no
    subtask of the workflow takes, is refused now, before any endpoint spends time on it.
    """
    sc, dep = bound.scenario, bound.deployment
    out_bits = 8.0 * BYTES_PER_TOKEN * dep.max_tokens
    tasks = []
    for i, req in enumerate(requests):
        flow = sc.workflows.get(req.workflow)
        if flow is None:
            raise OffloadError(
                f"request {i}: unknown workflow '{req.workflow}' "
                f"(scenario '{sc.name}' has {', '.join(sc.workflows)})"
            )
        order = flow.order()
        for media in (req.image, req.audio):
            if media is not None and not takes(media.kind, flow.nodes.values()):
                raise OffloadError(
                    f"request {i}: workflow '{req.workflow}' has no {media.kind} subtask "
                    f"to send the {media.kind} to"
                )
        subtasks = []
        for name in order:
            preds = sorted(order.index(p) for p in flow.predecessors(name))
            template = dep.templates[stage(bool(preds), name == order[-1])]
            prompt = render(template, req, name, flow.nodes[name], "")
            text_bits = 8.0 * len(prompt.encode()) + out_bits * len(preds)
            media = req.media(flow.nodes[name])
            tokens = text_bits / 8.0 / BYTES_PER_TOKEN + image_tokens(sc, flow.nodes[name], media)
            if tokens > dep.max_prompt_tokens:
                raise TooLong(
                    f"request {i}: subtask '{name}' would get a prompt of about {tokens:.0f} "
                    f"tokens, over the deployment's max_prompt_tokens ({dep.max_prompt_tokens})"
                )
            bits = text_bits + 8.0 * sum(len(m.data) for m in media)
            subtasks.append(
                Subtask(
                    name=name,
                    modality=flow.nodes[name],
                    input_bits=bits,
                    output_bits=out_bits,
                    cycles=sc.workload.cycles_per_bit * bits,
                    preds=preds,
                    **token_counts(sc, math.ceil(tokens), dep.max_tokens),
                )
            )
        tasks.append(Task(workflow=req.workflow, distances_m=bound.distances_m, subtasks=subtasks))
    return Instance(scenario=sc, tasks=tasks, busy_s=busy_s)


def image_tokens(sc: Scenario, modality: str, media: list[Media]) -> float:
    """The prompt tokens a subtask's image makes: its megapixels at the mean rate of the
    servers that serve its modality and were calibrated on images (none: 0)."""
    rates = [
        s.image_tokens_per_mpx
        for s in sc.servers
        if modality in s.modalities and s.image_tokens_per_mpx is not None
    ]
    pixels = sum(m.pixels for m in media)
    return pixels / 1e6 * sum(rates) / len(rates) if rates else 0.0


def ready_times(instance: Instance, order: list[Dispatch]) -> dict[tuple[int, int], float]:
    """Each subtask's data-ready time WT in the plan (docs/model.md §3): the ledger starts
    a queued subtask when its slot frees or its inputs are in, so it moves with reality."""
    ex = Execution(instance)
    ready = {}
    for d in order:
        ready[d.task, d.subtask] = ex.ready_time(*d)
        ex.dispatch(*d)
    return ready


class TokenCounts(TypedDict, total=False):
    """A subtask's token fields, as ``Subtask`` takes them."""

    prompt_tokens: int
    output_tokens: int


def token_counts(scenario: Scenario, prompt: int, output: int) -> TokenCounts:
    """A subtask's token fields: given under ``compute: tokens``, absent under cycles."""
    if scenario.compute != "tokens":
        return {}
    return {"prompt_tokens": max(prompt, 1), "output_tokens": max(output, 1)}


def render(template: str, request: Request, node: str, modality: str, context: str) -> str:
    return template.format(request=request.text, node=node, modality=modality, context=context)


def refusal(resp: httpx.Response) -> str:
    """What a server answering with an error refused, in one line: OpenAI's error message,
    or the first of FastAPI's validation errors (where and why, and how many more; a
    llama.cpp server refusing an audio part lists 15), else the body's start."""
    try:
        data = resp.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        error, detail = data.get("error"), data.get("detail")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return " ".join(error["message"].split())[:200]
        if isinstance(detail, str):
            return " ".join(detail.split())[:200]
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            where = ".".join(str(part) for part in detail[0].get("loc", ()))
            more = f" (and {len(detail) - 1} more)" if len(detail) > 1 else ""
            return f"refused {where}: {detail[0].get('msg', '?')}{more}"
    return " ".join(resp.text.split())[:120]


async def complete(
    client: httpx.AsyncClient,
    ep: Endpoint,
    dep: Deployment,
    prompt: str,
    max_tokens: int | None = None,
    media: Sequence[Media] = (),
) -> Reply:
    """One completion from one endpoint (at most ``max_tokens`` tokens, default the
    deployment's) in its kind's protocol; any failure becomes an EndpointError. ``media``
    go along with the prompt (``bind`` lets only kinds that carry them serve image or
    audio)."""
    api = ep.kind
    body = {
        "model": ep.model,
        "max_tokens": max_tokens or dep.max_tokens,
        "temperature": dep.temperature,
        **api.request(prompt, media),
    }
    try:
        resp = await client.post(ep.base_url + api.path, json=body, timeout=ep.timeout_s)
    except httpx.TimeoutException:
        raise EndpointError(f"timed out after {ep.timeout_s:g} s") from None
    except httpx.HTTPError as exc:
        raise EndpointError(f"{type(exc).__name__}: {exc}") from None
    if resp.status_code != 200:
        raise EndpointError(f"HTTP {resp.status_code}: {refusal(resp)}")
    try:
        return api.parse(resp.json())
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise EndpointError(f"not a completion: {' '.join(resp.text.split())[:120]}") from None


class Executor:
    """Runs batches of requests on a deployment; batches may overlap (shared edge slots)."""

    def __init__(
        self,
        bound: Bound,
        plan: Planner,
        client: httpx.AsyncClient,
        on_attempt: Callable[[Step, Attempt], None] | None = None,
        together: bool = True,
    ) -> None:
        """``on_attempt`` sees every call as it ends (progress output, fault injection);
        ``together``: plan and queue each batch behind the work of the batches before it
        (one ledger for all), else as if the servers were idle (a ledger per batch)."""
        self.bound = bound
        self.plan = plan
        self.client = client
        self.on_attempt = on_attempt
        self.slots = [asyncio.Semaphore(c) for c in bound.concurrency]
        self.ledger = self.new_ledger() if together else None

    def new_ledger(self) -> Ledger:
        return Ledger([s.slots for s in self.bound.scenario.servers])

    async def call(self, server: int, prompt: str, media: list[Media]) -> Reply:
        endpoint = self.bound.endpoints[server]
        return await complete(self.client, endpoint, self.bound.deployment, prompt, media=media)

    async def run(self, requests: list[Request]) -> Batch:
        """Plan the requests together, run them, and trace every subtask."""
        if not requests:
            raise OffloadError("no requests to run")
        began = time.perf_counter()  # the plan's t = 0; no await until it is booked
        busy = None if self.ledger is None else self.ledger.busy_s(began)
        instance = build_instance(self.bound, requests, busy)
        schedule = self.plan(instance)
        plan_s = time.perf_counter() - began
        ledger = self.ledger or self.new_ledger()
        batch = BatchRun(self, instance, requests, schedule, ledger, began)
        await batch.execute()
        steps = [batch.steps[d.task, d.subtask] for d in schedule.order]
        results = []
        for i, req in enumerate(requests):
            own = [s for s in steps if s.task == i]
            last = batch.steps[i, len(instance.tasks[i].subtasks) - 1]
            failed = [s for s in own if s.done is None]
            error = None
            if failed:
                why = failed[0].attempts[-1].error if failed[0].attempts else "a predecessor failed"
                error = f"subtask '{failed[0].name}' failed on every server: {why}"
            results.append(Result(req, last.output, error, own))
        return Batch(instance, schedule, results, steps, plan_s, batch.clock(), batch.t0)


class BatchRun:
    """The state of one batch while it runs: outputs as futures, failed servers, the clock,
    and its bookings in the ledger (``origin``: the plan's t = 0, in perf_counter seconds).

    Made inside the event loop, right before ``execute``: its clock starts at creation.
    """

    def __init__(
        self,
        ex: Executor,
        instance: Instance,
        requests: list[Request],
        schedule: Schedule,
        ledger: Ledger,
        origin: float,
    ) -> None:
        self.ex = ex
        self.instance = instance
        self.requests = requests
        self.ledger = ledger
        self.order: list[Dispatch] = schedule.order
        ready = ready_times(instance, self.order)
        self.steps: dict[tuple[int, int], Step] = {}
        self.bookings: dict[tuple[int, int], Booking | None] = {}
        for r in schedule.runs:  # in dispatch order: the order of each slot's queue
            key = (r.task, r.subtask)
            name = instance.tasks[r.task].subtasks[r.subtask].name
            self.steps[key] = Step(r.task, r.subtask, name, r.server, r.start, r.end)
            self.bookings[key] = ledger.book(
                r.server, origin + ready[key], r.upload + r.compute, origin
            )
        loop = asyncio.get_running_loop()
        self.outputs = {key: loop.create_future() for key in self.steps}
        self.down: set[int] = set()
        self.t0 = time.perf_counter()

    def clock(self) -> float:
        return time.perf_counter() - self.t0

    async def execute(self) -> None:
        """Start a job per subtask; wait for every one."""
        jobs = [asyncio.ensure_future(self.job(d)) for d in self.order]
        try:
            await asyncio.gather(*jobs)
        finally:  # cancelled (the request timed out, its client left): stop every call
            for job in jobs:
                job.cancel()
            for booking in self.bookings.values():  # and free every slot it still held
                self.release(booking)
        # every output is now set; collect the failures so none is reported as unretrieved
        await asyncio.gather(*self.outputs.values(), return_exceptions=True)

    def release(self, booking: Booking | None) -> None:
        if booking is not None:
            self.ledger.finish(booking)

    async def inputs(self, d: Dispatch) -> str | None:
        """The predecessors' outputs as prompt context; None if one of them failed."""
        task = self.instance.tasks[d.task]
        parts = []
        for p in task.subtasks[d.subtask].preds:
            try:
                out = await self.outputs[d.task, p]
            except EndpointError:
                return None
            parts.append(f"[{task.subtasks[p].name}] {out}")
        return "\n".join(parts)

    def prompt(self, d: Dispatch, context: str) -> str:
        task = self.instance.tasks[d.task]
        sub = task.subtasks[d.subtask]
        kind = stage(bool(sub.preds), d.subtask == len(task.subtasks) - 1)
        template = self.ex.bound.deployment.templates[kind]
        return render(template, self.requests[d.task], sub.name, sub.modality, context)

    def fallbacks(self, d: Dispatch) -> list[int]:
        """Other servers for a subtask: the cloud first, then edges serving its modality."""
        sc = self.instance.scenario
        modality = self.instance.tasks[d.task].subtasks[d.subtask].modality
        others = [k for k, s in enumerate(sc.servers) if modality in s.modalities and k != sc.cloud]
        return [k for k in [sc.cloud, *others] if k != d.server]

    async def attempt(self, d: Dispatch, server: int, prompt: str, media: list[Media]) -> bool:
        """Call one server for one subtask, on the planned server once its turn in the
        slot's queue comes (a retry elsewhere was not planned: it has no turn), holding
        the endpoint's slot while it calls; record the outcome."""
        step = self.steps[d.task, d.subtask]
        booking = self.bookings[d.task, d.subtask] if server == d.server else None
        if booking is not None:
            await booking.first.wait()
        if server in self.down:
            self.release(booking)
            now = self.clock()
            self.record(step, Attempt(server, now, now, "skipped: failed earlier in batch"))
            return False
        async with self.ex.slots[server]:
            start = self.clock()
            if booking is not None:
                booking.started = self.t0 + start
            try:
                reply = await self.ex.call(server, prompt, media)
            except EndpointError as exc:
                self.down.add(server)
                self.record(step, Attempt(server, start, self.clock(), str(exc)))
                return False
            finally:
                self.release(booking)
            end = self.clock()
        step.output = reply.text
        step.prompt_tokens, step.completion_tokens = reply.prompt_tokens, reply.completion_tokens
        self.outputs[d.task, d.subtask].set_result(reply.text)
        self.record(step, Attempt(server, start, end))
        return True

    def record(self, step: Step, attempt: Attempt) -> None:
        step.attempts.append(attempt)
        if self.ex.on_attempt is not None:
            self.ex.on_attempt(step, attempt)

    async def retry(self, d: Dispatch, prompt: str, media: list[Media]) -> None:
        for server in self.fallbacks(d):
            if await self.attempt(d, server, prompt, media):
                return
        self.fail(d)

    def fail(self, d: Dispatch) -> None:
        self.outputs[d.task, d.subtask].set_exception(EndpointError("no server could run it"))

    async def job(self, d: Dispatch) -> None:
        """One subtask: its inputs, then its planned server, then the fallbacks. One whose
        predecessor failed fails at once and leaves its slot's queue."""
        context = await self.inputs(d)
        if context is None:
            self.release(self.bookings[d.task, d.subtask])
            self.fail(d)
            return
        prompt = self.prompt(d, context)
        modality = self.instance.tasks[d.task].subtasks[d.subtask].modality
        media = self.requests[d.task].media(modality)
        if not await self.attempt(d, d.server, prompt, media):
            await self.retry(d, prompt, media)
