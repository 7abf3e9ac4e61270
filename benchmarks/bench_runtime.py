"""Benchmark the runtime against local llama.cpp servers with tiny random-weight models.

    python benchmarks/bench_runtime.py [--rounds 3] [--seconds 4] [--capacity 8]
    python benchmarks/bench_runtime.py --flood [--requests 150] [--flood-mb 100]

``--json FILE`` also writes every table printed (title, header, rows) as JSON.

Starts four servers (three edges and the cloud of the paper scenario, one thread each),
then prints three tables:

1. orchestration overhead per subtask: the real time of a subtask minus the endpoint's
   own time (llama.cpp's ``total time``, read from the server's verbose log), split into
   the executor's scheduling gap (ready -> call sent) and the HTTP stack (call time
   minus llama.cpp's time: httpx, uvicorn, FastAPI, llama-cpp-python's Python layer);
2. prediction error before and after calibration: on held-out probe calls, and on the
   subtasks of real workflow requests, all and per modality (the workflows with an image
   subtask carry a 64 px PNG, which edge-image and the cloud, loading a tiny vision
   projector, encode; the pinned server takes no audio, so audio subtasks get text);
3. requests per second the service sustains before it answers 503: an open-loop ramp of
   request rates, each for ``--seconds``, stopping at the first rate that gets a 503.

``--flood`` prints one table instead: the service's latency for ``--requests`` normal
requests, one at a time, alone and then while another process floods it with bodies of
``--flood-mb`` MB (over the 1 MiB limit: each is refused with 413 and its connection
closed, which the flooder may see as a read error; neither should slow the others).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from llmoffload.cli.runtime import fitted_timing
from llmoffload.runtime.calibrate import (
    Sample,
    fit,
    measure,
    prediction_error,
    probe_image,
    step_errors,
)
from llmoffload.runtime.deployment import Bound, load_deployment
from llmoffload.runtime.executor import Batch, Executor, Request, planner
from llmoffload.runtime.local import llama_servers, serve_app, write_deployment
from llmoffload.runtime.media import takes
from llmoffload.runtime.service import create_app

if TYPE_CHECKING:
    from multiprocessing.sharedctypes import Synchronized
    from multiprocessing.synchronize import Event

SERVERS = ["edge-text", "edge-image", "edge-audio", "cloud"]
VISION = ("edge-image", "cloud")  # they load the tiny projector: they see images
WORKFLOWS = ["text-analysis", "image-analysis", "audio-analysis", "vqa", "audio-text"]
RATES = (1, 2, 4, 8, 12, 16, 20, 24, 28, 32, 48, 64)  # offered requests per second
TOTAL = re.compile(rb"llama_perf_context_print:\s+total time =\s+([\d.]+) ms")


def own_times(log: Path) -> list[float]:
    """llama.cpp's own seconds for every completion a server has logged, in order."""
    return [float(ms) / 1e3 for ms in TOTAL.findall(log.read_bytes())]


def ready_time(batch: Batch, k: int) -> float:
    """When step k could have been sent: its inputs were in and its edge was free."""
    step = batch.steps[k]
    by_key = {(s.task, s.subtask): s for s in batch.steps}
    preds = batch.instance.tasks[step.task].subtasks[step.subtask].preds
    ends = [by_key[step.task, p].done.end for p in preds]
    server = step.done.server
    if batch.instance.scenario.servers[server].kind == "edge":
        ends += [a.end for s in batch.steps[:k] for a in s.attempts if a.server == server]
    return max(ends, default=0.0)


def overhead(bound: Bound, logs: dict[str, Path]) -> dict[str, list[float]]:
    """Run every workflow once, alone, and split each subtask's time into its parts."""
    names = [s.name for s in bound.scenario.servers]
    seen = {name: len(own_times(log)) for name, log in logs.items()}

    async def go() -> list[Batch]:
        async with httpx.AsyncClient() as client:
            ex = Executor(bound, planner("heft", bound), client)
            return [await ex.run([Request(workflow=w, text="Check the pump.")]) for w in WORKFLOWS]

    batches = asyncio.run(go())
    time.sleep(0.5)  # let the servers flush their logs
    own = {name: own_times(log)[seen[name] :] for name, log in logs.items()}
    parts: dict[str, list[float]] = {"gap": [], "http": [], "own": [], "total": []}
    for batch in batches:
        # a server logs its calls in the order it served them: match them by start time
        for k in sorted(range(len(batch.steps)), key=lambda k: batch.steps[k].done.start):
            step = batch.steps[k]
            done = step.done
            server_own = own[names[done.server]].pop(0)
            gap = done.start - ready_time(batch, k)
            http = done.end - done.start - server_own
            parts["gap"].append(gap)
            parts["http"].append(http)
            parts["own"].append(server_own)
            parts["total"].append(gap + http)
    return parts


def request(bound: Bound, workflow: str, text: str) -> Request:
    """A request of ``workflow``, with a 64 px PNG where a subtask of it takes images."""
    image = takes("image", bound.scenario.workflows[workflow].nodes.values())
    return Request(workflow=workflow, text=text, image=probe_image(64) if image else None)


def calibration(bound: Bound, rounds: int) -> list[list[str]]:
    async def go() -> tuple[list[Sample], list[Sample], list[Batch]]:
        async with httpx.AsyncClient() as client:
            fitting = await measure(client, bound, rounds)
            held_out = await measure(client, bound, rounds)
            ex = Executor(bound, planner("heft", bound), client)
            runs = [await ex.run([request(bound, w, "Check it.")]) for w in WORKFLOWS]
            return fitting, held_out, runs

    fitting, held_out, batches = asyncio.run(go())
    fitted = fit(bound, fitting)
    rows = [
        [
            "held-out probe calls",
            prediction_error(bound.scenario, bound, held_out),
            prediction_error(fitted, bound, held_out),
        ]
    ]
    paper, calibrated = (
        [e for b in batches for e in step_errors(b, s)] for s in (bound.scenario, fitted)
    )
    for modality in [None, *dict.fromkeys(m for m, _ in paper)]:  # all, then each modality
        chosen = [
            statistics.fmean(e for m, e in errors if modality in (None, m))
            for errors in (paper, calibrated)
        ]
        rows.append([f"workflow subtasks{f', {modality}' if modality else ''}", *chosen])
    for server in fitted.servers:
        print(f"fitted {server.name}: {fitted_timing(server, fitted.compute)}")
    return [[name, f"{b * 1e3:.2f}", f"{a * 1e3:.2f}"] for name, b, a in rows]


async def offered(url: str, rate: float, seconds: float) -> tuple[int, int, float, float]:
    """Send requests at ``rate`` per second for ``seconds``: (ok, 503s, ok/s, median s)."""
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=512)) as client:
        latencies: list[float] = []
        codes: list[int] = []

        async def one(k: int) -> None:
            began = time.perf_counter()
            body = {"workflow": WORKFLOWS[k % len(WORKFLOWS)], "text": "Inspect it."}
            reply = await client.post(url, json=body)
            codes.append(reply.status_code)
            if reply.status_code == 200:
                latencies.append(time.perf_counter() - began)

        began = time.perf_counter()
        jobs = []
        for k in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, began + k / rate - time.perf_counter()))
            jobs.append(asyncio.ensure_future(one(k)))
        await asyncio.gather(*jobs)
        elapsed = time.perf_counter() - began
    ok, full = codes.count(200), codes.count(503)
    return ok, full, ok / elapsed, statistics.median(latencies) if latencies else float("nan")


def throughput(bound: Bound, capacity: int, seconds: float) -> list[list[str]]:
    rows = []
    with serve_app(create_app(bound, planner("heft", bound), capacity)) as base:
        url = f"{base}/v1/requests"
        for rate in RATES:
            ok, full, per_s, median = asyncio.run(offered(url, rate, seconds))
            rows.append([f"{rate:g}", str(ok), str(full), f"{per_s:.2f}", f"{median:.3f}"])
            if full:
                break
    return rows


async def one_at_a_time(url: str, requests: int) -> list[float]:
    """Seconds each of ``requests`` normal requests took, sent one after another."""
    async with httpx.AsyncClient(timeout=120) as client:
        seconds = []
        for k in range(requests):
            began = time.perf_counter()
            body = {"workflow": WORKFLOWS[k % len(WORKFLOWS)], "text": "Inspect it."}
            reply = await client.post(url, json=body)
            reply.raise_for_status()
            seconds.append(time.perf_counter() - began)
        return seconds


def flood(url: str, megabytes: float, stop: Event, refused: Synchronized[int]) -> None:
    """Post oversized bodies over four connections until ``stop``; count the refusals."""
    body = b'{"workflow": "vqa", "text": "' + b"a" * int(megabytes * 1e6) + b'"}'

    async def stream() -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            while not stop.is_set():
                try:
                    reply = await client.post(url, content=body)
                    assert reply.status_code == 413, reply.status_code
                except httpx.TimeoutException:
                    continue
                except httpx.ReadError:  # the 413's connection closed mid-upload
                    pass
                with refused.get_lock():
                    refused.value += 1

    async def streams() -> None:
        await asyncio.gather(*(stream() for _ in range(4)))

    asyncio.run(streams())


def latency_row(name: str, seconds: list[float], refused_per_s: float) -> list[str]:
    ranked = sorted(seconds)
    p99 = ranked[round(0.99 * (len(ranked) - 1))]
    median = statistics.median(ranked)
    return [
        name,
        str(len(ranked)),
        f"{median * 1e3:.1f}",
        f"{p99 * 1e3:.1f}",
        f"{refused_per_s:.1f}",
    ]


def flooded(bound: Bound, requests: int, megabytes: float) -> list[list[str]]:
    """Latency of normal requests alone, then while another process floods big bodies."""
    spawn = multiprocessing.get_context("spawn")
    stop, refused = spawn.Event(), spawn.Value("i", 0)
    with serve_app(create_app(bound, planner("heft", bound))) as base:
        url = f"{base}/v1/requests"
        rows = [latency_row("alone", asyncio.run(one_at_a_time(url, requests)), 0.0)]
        flooder = spawn.Process(target=flood, args=(url, megabytes, stop, refused))
        flooder.start()
        time.sleep(2.0)  # let the flood get going
        before, began = refused.value, time.perf_counter()
        seconds = asyncio.run(one_at_a_time(url, requests))
        rate = (refused.value - before) / (time.perf_counter() - began)
        stop.set()
        flooder.join()
    return [*rows, latency_row("flooded", seconds, rate)]


SHOWN: list[dict[str, object]] = []  # every table printed, for --json


def show(title: str, header: list[str], rows: list[list[str]]) -> None:
    from llmoffload.display import table

    print(f"\n{title}\n{table(header, rows)}")
    SHOWN.append({"title": title, "header": header, "rows": rows})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="calibration calls per size")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per offered rate")
    parser.add_argument("--capacity", type=int, default=8, help="service admission limit")
    parser.add_argument("--flood", action="store_true", help="only: latency under a flood")
    parser.add_argument("--requests", type=int, default=150, help="normal requests, --flood")
    parser.add_argument("--flood-mb", type=float, default=100.0, help="flood body size, MB")
    parser.add_argument("--json", type=Path, help="also write every table here, as JSON")
    args = parser.parse_args()
    try:
        measure_all(args)
    finally:
        if args.json:
            args.json.write_text(json.dumps(SHOWN, indent=1) + "\n")


def measure_all(args: argparse.Namespace) -> None:
    """Start the servers and print the tables ``args`` asks for."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with llama_servers(SERVERS, work, verbose=True, vision=VISION) as servers:
            bound = load_deployment(write_deployment(work / "deployment.yaml", servers))
            print(f"deployment: {len(servers)} llama.cpp servers, tiny random model, max_tokens 8")
            if args.flood:
                show(
                    f"service latency, ms, one request at a time; flood: {args.flood_mb:g} MB "
                    "bodies over 4 connections from another process",
                    ["while", "requests", "median", "p99", "flood refused/s"],
                    flooded(bound, args.requests, args.flood_mb),
                )
                return
            parts = overhead(bound, {name: work / f"{name}.log" for name in servers})
            show(
                f"per-subtask time, ms (n = {len(parts['total'])}, heft, one request at a time)",
                ["part", "mean", "median", "max"],
                [
                    [
                        name,
                        *(f"{f(v) * 1e3:.2f}" for f in (statistics.fmean, statistics.median, max)),
                    ]
                    for name, v in parts.items()
                ],
            )
            show(
                "mean |real - predicted| per subtask, ms",
                ["measured on", "paper scenario", "calibrated"],
                calibration(bound, args.rounds),
            )
            show(
                f"service, capacity {args.capacity}, {args.seconds:g} s per offered rate",
                ["offered/s", "200", "503", "served/s", "median s"],
                throughput(bound, args.capacity, args.seconds),
            )


if __name__ == "__main__":
    main()
