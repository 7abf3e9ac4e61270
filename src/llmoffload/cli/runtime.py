"""The runtime's commands: ``run`` one request, ``calibrate`` a deployment, ``serve`` it,
``deployment validate`` a file, and ``endpoints up`` to start local servers for it.

Plain functions with Typer parameters; ``cli.app`` registers them. This module imports
only what the core has, so the command line loads without the ``runtime`` extra; each
command checks for the extra first. Bad input raises OffloadError, which the command
line prints as one ``error:`` line.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer
import yaml
from pydantic import ValidationError

from llmoffload.cli.limits import bounds
from llmoffload.display import table
from llmoffload.errors import OffloadError, require
from llmoffload.files import check_output, write_text_atomic
from llmoffload.model.scenario import Server, one_line
from llmoffload.schedulers.registry import SCHEDULERS

if TYPE_CHECKING:
    from llmoffload.runtime.calibrate import Sample
    from llmoffload.runtime.executor import Batch
    from llmoffload.runtime.media import Kind

DeploymentOption = Annotated[
    Path, typer.Option("--deployment", help="Deployment YAML: an endpoint per server.")
]
PolicyOption = Annotated[
    str, typer.Option(help=f"One of: {', '.join(SCHEDULERS)}, or a trained run directory.")
]


def check_choice(option: str, value: str, choices: tuple[str, str]) -> None:
    """A word option checked by hand (this Typer has no choice type for plain strings)."""
    if value not in choices:
        raise OffloadError(f"{option} must be {' or '.join(choices)}, not '{value}'")


def check_free(host: str, port: int) -> None:
    """A taken or foreign address is bad input, not a server's log line after start-up."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise OffloadError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def run_cmd(
    deployment: DeploymentOption,
    workflow: Annotated[str, typer.Option(help="A workflow of the deployment's scenario.")],
    text: Annotated[str, typer.Option(help="The user's request.")],
    image: Annotated[
        Path | None,
        typer.Option(
            help="An image (PNG, JPEG, WebP, GIF) for the image subtasks.", metavar="FILE"
        ),
    ] = None,
    audio: Annotated[
        Path | None,
        typer.Option(help="Audio (WAV, MP3) for the audio subtasks.", metavar="FILE"),
    ] = None,
    policy: PolicyOption = "heft",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    gantt: Annotated[
        Path | None, typer.Option(help="Draw real vs predicted Gantt charts (.png, .pdf, .svg).")
    ] = None,
) -> None:
    """Run one request on the real endpoints; print its answer and per-subtask trace."""
    require("runtime", "run")
    import httpx

    from llmoffload.runtime.deployment import load_deployment
    from llmoffload.runtime.executor import Executor, Request, planner
    from llmoffload.runtime.media import read_media
    from llmoffload.runtime.trace import draw_real_vs_predicted, result_json, trace_table

    given: tuple[tuple[Kind, Path | None], ...] = (("image", image), ("audio", audio))
    media = {}
    for kind, path in given:
        if path is not None:
            try:
                media[kind] = read_media(kind, path)
            except OffloadError as exc:
                raise OffloadError(f"--{kind} {exc}") from None
    try:  # serve's rules for a request body
        request = Request(workflow=workflow, text=text, **media)
    except ValidationError as exc:
        raise OffloadError(f"--{one_line(exc)}") from None
    bound = load_deployment(deployment)
    plan = planner(policy, bound)
    if gantt is not None:
        from llmoffload.model.gantt import check_format  # matplotlib only when asked

        check_format(gantt)

    async def go() -> Batch:
        async with httpx.AsyncClient() as client:
            return await Executor(bound, plan, client).run([request])

    batch = asyncio.run(go())
    (result,) = batch.results
    if gantt is not None:
        draw_real_vs_predicted(batch, gantt)
    if as_json:
        typer.echo(json.dumps(result_json(batch, result)))
    else:
        typer.echo(f"answer: {result.answer}" if result.error is None else "no answer")
        typer.echo(f"planned in {batch.plan_s:.3f} s, ran in {batch.wall_s:.3f} s\n")
        typer.echo(trace_table(batch))
    if result.error is not None:
        raise OffloadError(result.error)


def calibrate_cmd(
    deployment: DeploymentOption,
    out: Annotated[Path, typer.Option("--out", help="Scenario YAML to write.")],
    rounds: Annotated[
        int,
        typer.Option(
            **bounds("rounds"), help="Calls per endpoint, prompt length and output length."
        ),
    ] = 3,
    compute: Annotated[
        str,
        typer.Option(
            help="tokens: fit each server's per-call, per-prompt-token and per-output-token "
            "times; cycles: fit its clock (the paper's model)."
        ),
    ] = "tokens",
    seed: Annotated[
        int, typer.Option(**bounds("seed"), help="Seed of the probe prompts' words.")
    ] = 0,
) -> None:
    """Measure every endpoint and write a scenario whose server timings fit them."""
    require("runtime", "calibrate")
    import httpx

    from llmoffload.runtime.calibrate import fit, measure, relative_errors
    from llmoffload.runtime.deployment import load_deployment
    from llmoffload.runtime.executor import EndpointError

    check_choice("--compute", compute, ("tokens", "cycles"))
    bound = load_deployment(deployment)
    check_output(out)  # before minutes of calls, not after
    if not out.parent.is_dir():
        raise OffloadError(f"{out}: its folder {out.parent} does not exist")

    async def go() -> tuple[list[Sample], list[Sample]]:
        async with httpx.AsyncClient() as client:
            fitting = await measure(client, bound, rounds, seed)
            return fitting, await measure(client, bound, rounds, seed + 1)

    try:
        fitting, held_out = asyncio.run(go())
    except EndpointError as exc:
        raise OffloadError(f"calibration needs every endpoint up: {exc}") from None
    fitted = fit(bound, fitting, compute)
    write_text_atomic(out, yaml.safe_dump(fitted.model_dump(), sort_keys=False))
    typer.echo(f"wrote {out}: scenario {fitted.name} (compute: {compute})")
    before = relative_errors(bound.scenario, bound, held_out)
    after = relative_errors(fitted, bound, held_out)
    rows = [
        [s.name, fitted_timing(s, compute), *spread(b), *spread(a)]
        for s, b, a in zip(fitted.servers, before, after, strict=True)
    ]
    typer.echo(
        f"|predicted - measured| / measured on {len(held_out)} held-out calls "
        f"(median, p90), {bound.scenario.name} -> {fitted.name}:"
    )
    header = ["server", "fitted", "median before", "p90 before", "median after", "p90 after"]
    typer.echo(table(header, rows))


def fitted_timing(server: Server, compute: str) -> str:
    if compute == "cycles":
        return f"{server.ghz:.4g} GHz"
    return (
        f"{server.call_ms:.3g} ms + {server.prefill_ms_per_token:.3g} ms/prompt token "
        f"+ {server.decode_ms_per_token:.3g} ms/output token"
    )


def spread(errors: np.ndarray) -> list[str]:
    """Median and 90th percentile of relative errors, as percentages."""
    return [f"{np.quantile(errors, q):.1%}" for q in (0.5, 0.9)]


def serve_cmd(
    deployment: DeploymentOption,
    policy: PolicyOption = "heft",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    capacity: Annotated[
        int,
        typer.Option(**bounds("capacity"), help="Requests admitted at once; one more gets 503."),
    ] = 8,
    timeout: Annotated[
        float,
        typer.Option(
            **bounds("timeout"), help="Seconds a request may run; then 504, its calls cancelled."
        ),
    ] = 120.0,
    plan: Annotated[
        str,
        typer.Option(
            help="together: plan each request around the work queued before it, edges FIFO "
            "across requests; alone: each as if the servers were idle."
        ),
    ] = "together",
) -> None:
    """Serve the deployment over HTTP: POST /v1/requests, GET /health."""
    require("runtime", "serve")
    import uvicorn

    from llmoffload.runtime.deployment import load_deployment
    from llmoffload.runtime.executor import planner
    from llmoffload.runtime.service import create_app

    check_choice("--plan", plan, ("together", "alone"))
    bound = load_deployment(deployment)
    app = create_app(
        bound, planner(policy, bound), capacity, timeout_s=timeout, together=plan == "together"
    )
    check_free(host, port)

    class Announced(uvicorn.Server):
        """uvicorn's server, saying where it listens once it does (its own log is off)."""

        async def startup(self, sockets: list | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                typer.echo(
                    f"serving {deployment} with {policy} on http://{host}:{port} "
                    f"(POST /v1/requests, GET /health); Ctrl+C stops it",
                )

    Announced(uvicorn.Config(app, host=host, port=port, log_level="warning")).run()


def deployment_validate_cmd(file: Annotated[Path, typer.Argument(metavar="FILE")]) -> None:
    """Check a deployment file against its scenario; print 'ok: ...' or the error."""
    from llmoffload.runtime.deployment import load_deployment

    bound = load_deployment(file)
    typer.echo(
        f"ok: {file}: scenario {bound.scenario.name}, {len(bound.endpoints)} endpoints, "
        f"{len(bound.scenario.workflows)} workflows"
    )


def endpoints_up_cmd(deployment: DeploymentOption) -> None:
    """Start tiny llama.cpp servers at a deployment's endpoint addresses until Ctrl-C.

    Random weights: the answers are gibberish, the servers real. SIGTERM stops them too.
    """
    require("local", "endpoints up")
    from llmoffload.runtime.deployment import load_deployment
    from llmoffload.runtime.local import addresses, started

    at = addresses(load_deployment(deployment))
    for address in at.values():
        check_free(address.host, address.port)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop as Ctrl-C does
    try:
        with tempfile.TemporaryDirectory() as work, started(at, Path(work)) as servers:
            for name, server in servers.items():
                sees = ", sees images" if at[name].vision else ""
                typer.echo(f"up: {name} at {server.url} (model {at[name].model}{sees})")
            typer.echo("Ctrl-C or SIGTERM stops them")
            threading.Event().wait()  # until one of them interrupts it
    except KeyboardInterrupt:  # the servers are killed on the way out of ``started``
        typer.echo("stopped")
