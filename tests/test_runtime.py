"""The runtime against real llama.cpp servers (tiny random-weight models), no mocks.

Four servers play the scenario's three edges and the cloud. The test scenario is the
paper's with a slow, dear cloud, so that the policy sends the single-modality subtasks to
the edges and only the multimodal ones to the cloud: every kind of server does real work.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import httpx
import numpy as np
import pytest
import typer
import yaml
from scipy.stats import binom
from typer.testing import CliRunner, Result

from llmoffload.cli.app import ReportingGroup
from llmoffload.cli.app import app as main_app
from llmoffload.cli.runtime import calibrate_cmd, run_cmd, serve_cmd
from llmoffload.errors import OffloadError
from llmoffload.model.execution import Schedule
from llmoffload.model.scenario import Scenario, load_scenario
from llmoffload.runtime.calibrate import (
    Sample,
    fit,
    measure,
    prediction_error,
    relative_errors,
    step_errors,
    trace_error,
)
from llmoffload.runtime.deployment import load_deployment
from llmoffload.runtime.executor import Attempt, Batch, Executor, Request, Step, planner
from llmoffload.runtime.local import (
    LlamaServer,
    llama_servers,
    serve_app,
    write_deployment,
)
from llmoffload.runtime.service import create_app

pytestmark = pytest.mark.xdist_group("llama")  # one set of servers under --dist loadgroup
SERVERS = ["edge-text", "edge-image", "edge-audio", "cloud"]
WORKFLOWS = ["text-analysis", "image-analysis", "audio-analysis", "vqa", "audio-text"]


def edgy_scenario(path: Path) -> Path:
    """The paper's scenario with a 1 GHz, 0.3 $/GHz cloud: edges win where they can serve."""
    data = yaml.safe_load(
        resources.files("llmoffload.model.scenarios").joinpath("paper.yaml").read_text()
    )
    data["servers"][3].update(ghz=1.0, usd_per_ghz=0.3)
    path.write_text(yaml.safe_dump(data, sort_keys=False))  # keep the modalities' order
    return path


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LlamaServer]]:
    with llama_servers(SERVERS, tmp_path_factory.mktemp("llama")) as running:
        yield running


@pytest.fixture(scope="module")
def deployment(servers: dict[str, LlamaServer], tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("deploy")
    edgy_scenario(work / "edgy.yaml")
    return write_deployment(work / "deployment.yaml", servers, scenario="edgy.yaml")


def run_batches(path: Path, batches: list[list[Request]], policy: str = "heft") -> list[Batch]:
    """Run the batches concurrently on one executor, as a service would."""

    async def go() -> list[Batch]:
        async with httpx.AsyncClient() as client:
            bound = load_deployment(path)
            ex = Executor(bound, planner(policy, bound, tasks=len(batches[0])), client)
            return list(await asyncio.gather(*(ex.run(b) for b in batches)))

    return asyncio.run(go())


def placement(schedule: Schedule) -> dict[tuple[int, int], int]:
    return {(r.task, r.subtask): r.server for r in schedule.runs}


def test_one_request_runs_all_three_stages_where_the_policy_chose(deployment: Path) -> None:
    (batch,) = run_batches(deployment, [[Request(workflow="vqa", text="Is the valve open?")]])
    (result,) = batch.results
    assert result.error is None
    steps = {s.name: s for s in result.steps}  # in dispatch order
    assert sorted(steps) == sorted(s.name for s in batch.instance.tasks[0].subtasks)
    planned = placement(batch.schedule)
    names = [s.name for s in batch.instance.scenario.servers]
    for step in result.steps:
        assert not step.retried
        assert step.done is not None and step.done.server == planned[step.task, step.subtask]
        assert step.prompt_tokens > 0 and step.completion_tokens > 0
        assert isinstance(step.output, str)
    used = {names[s.done.server] for s in result.steps if s.done}
    assert {"edge-text", "edge-image", "cloud"} <= used  # analysis/aggregate, perceive, answer
    assert names[steps["answer"].done.server] == "cloud"  # image+text: only the cloud
    assert result.answer == steps["aggregate"].output
    # each subtask started only after all its predecessors had answered
    task, by_index = batch.instance.tasks[0], {s.subtask: s for s in result.steps}
    for step in result.steps:
        for p in task.subtasks[step.subtask].preds:
            assert step.done.start >= by_index[p].done.end


def test_five_concurrent_requests_complete_and_edges_never_overlap(deployment: Path) -> None:
    batches = [[Request(workflow=w, text=f"Inspect line {k}.")] for k, w in enumerate(WORKFLOWS)]
    done = run_batches(deployment, batches)
    intervals: dict[int, list[tuple[float, float]]] = {}
    for batch in done:
        (result,) = batch.results
        assert result.error is None and result.answer is not None
        assert result.answer == result.steps[-1].output
        for step in batch.steps:
            for a in step.attempts:
                intervals.setdefault(a.server, []).append(
                    (batch.started + a.start, batch.started + a.end)
                )
    scenario = done[0].instance.scenario
    edges = [k for k, s in enumerate(scenario.servers) if s.kind == "edge"]
    assert all(intervals.get(k) for k in edges)  # every edge did work
    for k in edges:
        spans = sorted(intervals[k])
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end, f"{scenario.servers[k].name} ran two subtasks at once"


def test_killing_an_edge_mid_request_still_answers_via_the_cloud(
    servers: dict[str, LlamaServer], tmp_path: Path
) -> None:
    with llama_servers(["edge-text"], tmp_path) as own:
        path = write_deployment(
            tmp_path / "deployment.yaml",
            servers | own,
            scenario=str(edgy_scenario(tmp_path / "s.yaml")),
        )

        edge_text = list(servers | own).index("edge-text")

        def kill_after_first(step: Step, attempt: Attempt) -> None:
            if attempt.server == edge_text and attempt.error is None:
                own["edge-text"].stop()  # the next call to edge-text finds no server

        async def go() -> Batch:
            async with httpx.AsyncClient() as client:
                bound = load_deployment(path)
                ex = Executor(bound, planner("heft", bound), client, on_attempt=kill_after_first)
                return await ex.run([Request(workflow="text-analysis", text="Why?")])

        batch = asyncio.run(go())
    (result,) = batch.results
    names = [s.name for s in batch.instance.scenario.servers]
    assert all(names[s.planned] == "edge-text" for s in result.steps)  # the plan: all on the edge
    assert result.error is None and result.answer == result.steps[-1].output
    retried = [s for s in result.steps if s.retried]
    assert retried, "no subtask noticed the dead edge"
    for step in retried:
        assert names[step.attempts[0].server] == "edge-text" and step.attempts[0].error
        assert names[step.done.server] == "cloud"
    assert result.steps[0].done.server == names.index("edge-text")  # ran before the kill


# --- deployment files: one clear error for every bad input ---------------------------------


def write(tmp_path: Path, data: dict[str, object]) -> Path:
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def endpoints(**changes: dict[str, object]) -> dict[str, dict[str, object]]:
    base = {
        name: {"base_url": f"http://127.0.0.1:{9000 + k}", "model": "m"}
        for k, name in enumerate(SERVERS)
    }
    """The four servers on made-up ports, with ``edge_text={...}``-style changes merged in."""
    for key, change in changes.items():
        name = key.replace("_", "-")
        base[name] = base.get(name, {}) | change
    return base


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (
            {"endpoints": endpoints(edge_gpu={"base_url": "http://h", "model": "m"})},
            "edge-gpu' is not a server",
        ),
        ({"endpoints": endpoints(edge_text={"modalities": ["image"]})}, "lists modality 'image'"),
        ({"endpoints": endpoints(edge_text={"base_url": "ftp://x"})}, "not an http(s) URL"),
        ({"endpoints": endpoints(edge_text={"base_url": "http://h:99999"})}, "bad port"),
        ({"endpoints": endpoints(edge_text={"modalities": []})}, "at least 1 item"),
        (
            {"endpoints": endpoints(edge_text={"api": "grpc"})},
            "edge-text.api: Input should be 'chat' or 'completions'",
        ),
        (
            {"endpoints": endpoints(cloud={"timeout_s": -1})},
            "timeout_s: Input should be greater than 0",
        ),
        ({"endpoints": endpoints(edge_audio={"concurrency": 2})}, "must have concurrency 1"),
        (
            {"endpoints": endpoints(cloud={"modalities": ["text"]})},
            "the cloud must serve every modality",
        ),
        ({"endpoints": {"cloud": endpoints()["cloud"]}}, "server 'edge-text' has no endpoint"),
        ({"endpoints": endpoints(), "scenario": "missing.yaml"}, "scenario file not found"),
        ({"endpoints": endpoints(), "templates": {"subtask": "{oops}"}}, "bad placeholder"),
        ({"endpoints": endpoints(), "max_tokens": 0}, "max_tokens"),
    ],
)
def test_bad_deployment_is_one_clear_error(
    tmp_path: Path, data: dict[str, object], fragment: str
) -> None:
    with pytest.raises(OffloadError) as err:
        load_deployment(write(tmp_path, data))
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_and_unreadable_deployment_files(tmp_path: Path) -> None:
    with pytest.raises(OffloadError, match="deployment file not found"):
        load_deployment(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("endpoints: [unclosed")
    with pytest.raises(OffloadError, match="not valid YAML"):
        load_deployment(tmp_path / "bad.yaml")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("max_tokens: 8\nendpoints: {}\nmax_tokens: 9\n", "max_tokens"),  # 9 won silently
        ("endpoints:\n  cloud: {base_url: 'http://h', model: a, model: b}\n", "model"),
    ],
)
def test_a_key_given_twice_is_refused_as_in_scenario_files(
    tmp_path: Path, text: str, key: str
) -> None:
    """A deployment is read as scenario files are: a pasted-in override does not hide the
    first value."""
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    with pytest.raises(OffloadError) as err:
        load_deployment(path)
    assert str(err.value) == f"{path}: not valid YAML: duplicate key '{key}'"


def test_deployment_shapes_the_scenario_the_policy_sees(tmp_path: Path) -> None:
    data = {"endpoints": endpoints(edge_text={"usd_per_ghz": 0.5})}
    bound = load_deployment(write(tmp_path, data))
    assert bound.scenario.servers[0].usd_per_ghz == 0.5
    assert bound.concurrency == [1, 1, 1, 16]
    assert bound.distances_m == [75.0, 75.0, 75.0]  # mid-range of the paper's [50, 100] m


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"base_url": "http://127.0.0.1:9"}, "ConnectError"),  # nothing listens: refused
        ({"timeout_s": 0.0001}, "timed out"),
        ({"path": "/no/such/api"}, "HTTP 404"),  # a server that is not an LLM API
    ],
)
def test_a_failing_edge_is_retried_on_the_cloud(
    servers: dict[str, LlamaServer], tmp_path: Path, change: dict[str, object], error: str
) -> None:
    path = write_deployment(
        tmp_path / "deployment.yaml", servers, scenario=str(edgy_scenario(tmp_path / "s.yaml"))
    )
    data = yaml.safe_load(path.read_text())
    image = data["endpoints"]["edge-image"]
    image["base_url"] += change.pop("path", "")
    image.update(change)
    path.write_text(yaml.safe_dump(data))
    (batch,) = run_batches(path, [[Request(workflow="image-analysis", text="Any cracks?")]])
    (result,) = batch.results
    assert result.error is None and result.answer == result.steps[-1].output
    names = [s.name for s in batch.instance.scenario.servers]
    on_image = [s for s in result.steps if names[s.planned] == "edge-image"]
    assert sorted(s.name for s in on_image) == ["detect", "segment"]
    first, second = on_image  # in dispatch order: the first call fails, the second skips
    assert error in (first.attempts[0].error or "")
    assert "skipped" in (second.attempts[0].error or "")
    for step in on_image:
        assert names[step.attempts[0].server] == "edge-image"
        assert step.done is not None and names[step.done.server] == "cloud"


@pytest.mark.alone
def test_calibration_predicts_real_subtask_times_better(deployment: Path) -> None:
    """The fitted timings predict held-out calls and real workflow subtasks closer than
    the scenario's own. It measures the machine, so it runs alone: beside the parallel
    suite's training a call takes several times as long, which flatters a model that
    overestimates (in CI the paper's clock came out ahead, 7.1 against 8.2 ms)."""
    bound = load_deployment(deployment)

    async def go() -> tuple[list[Sample], list[Sample], list[Batch]]:
        async with httpx.AsyncClient() as client:
            fitting, held_out = await measure(client, bound, 3), await measure(client, bound)
            ex = Executor(bound, planner("heft", bound), client)
            batches = [await ex.run([Request(workflow=w, text="Check it.")]) for w in WORKFLOWS]
            return fitting, held_out, batches

    fitting, held_out, batches = asyncio.run(go())
    fitted = fit(bound, fitting)
    assert [s.modalities for s in fitted.servers] == [s.modalities for s in bound.scenario.servers]
    assert prediction_error(fitted, bound, held_out) < prediction_error(
        bound.scenario, bound, held_out
    )

    # Over all five workflows' subtasks: one short batch alone is at the mercy of load.
    def error(scenario: Scenario) -> float:
        return sum(trace_error(batch, scenario) for batch in batches) / len(batches)

    assert error(fitted) < error(bound.scenario)
    for batch in batches:  # per subtask, under its own modality; their mean is the batch's
        per_step = step_errors(batch, fitted)
        ran = [s for s in batch.steps if s.done is not None and not s.retried]
        tasks = batch.instance.tasks
        assert [m for m, _ in per_step] == [tasks[s.task].subtasks[s.subtask].modality for s in ran]
        assert np.mean([e for _, e in per_step]) == pytest.approx(trace_error(batch, fitted))


@pytest.mark.alone
def test_the_token_fit_beats_the_cycles_fit_on_held_out_calls(deployment: Path) -> None:
    """Paired on each held-out call (prompts and outputs of several lengths), the token
    model's prediction is closer than the paper's clock on more calls than a coin would
    give: a one-sided sign test at p < 0.01. A loaded machine slows a call for both
    models alike, so the pairing keeps the check fair; what the clock cannot follow is
    the output length. It measures the machine, so it runs alone (`-m alone`, after the
    parallel suite): a busy neighbour makes the same call take from 5 to 40 ms."""
    bound = load_deployment(deployment)

    async def go() -> tuple[list[Sample], list[Sample]]:
        async with httpx.AsyncClient() as client:
            return await measure(client, bound, 2, seed=0), await measure(client, bound, 1, 1)

    fitting, held_out = asyncio.run(go())
    tokens, cycles = (fit(bound, fitting, c) for c in ("tokens", "cycles"))
    t_err, c_err = (np.concatenate(relative_errors(sc, bound, held_out)) for sc in (tokens, cycles))
    wins, calls = int((t_err < c_err).sum()), len(held_out)
    assert binom.sf(wins - 1, calls, 0.5) < 0.01, (wins, calls)
    assert np.median(t_err) < np.median(c_err)


def test_service_answers_reports_and_refuses(deployment: Path) -> None:
    bound = load_deployment(deployment)
    app = create_app(bound, planner("heft", bound), capacity=1)
    with serve_app(app) as url:
        health = httpx.get(f"{url}/health").json()
        assert health["status"] == "ok" and health["capacity"] == 1
        ok = httpx.post(f"{url}/v1/requests", json={"workflow": "vqa", "text": "Why?"}, timeout=60)
        assert ok.status_code == 200, ok.text
        body = ok.json()
        assert body["answer"] == body["trace"][-1]["output"]
        assert [s["subtask"] for s in body["trace"]][-1] == "aggregate"
        assert all(s["server"] == s["planned"] and s["end"] >= s["start"] for s in body["trace"])
        bad = httpx.post(f"{url}/v1/requests", json={"workflow": "nope", "text": "x"})
        assert bad.status_code == 400 and "unknown workflow 'nope'" in bad.json()["detail"]
        assert httpx.post(f"{url}/v1/requests", json={"workflow": "vqa"}).status_code == 422

        async def burst() -> list[int]:
            async with httpx.AsyncClient(timeout=60) as client:
                body = {"workflow": "text-analysis", "text": "Go."}
                replies = await asyncio.gather(
                    *(client.post(f"{url}/v1/requests", json=body) for _ in range(4))
                )
                return [r.status_code for r in replies]

        codes = asyncio.run(burst())
        assert sorted(codes)[0] == 200 and 503 in codes and set(codes) <= {200, 503}


# --- the commands, as cli.py registers them ---------------------------------------------

app = typer.Typer(cls=ReportingGroup, pretty_exceptions_enable=False)
app.command("run")(run_cmd)
app.command("calibrate")(calibrate_cmd)
app.command("serve")(serve_cmd)


def cli(*args: object) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(result: Result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert fragment in result.stderr


def test_run_command_prints_answer_trace_and_draws_real_vs_predicted(
    deployment: Path, tmp_path: Path
) -> None:
    chart = tmp_path / "real.png"
    result = cli(
        "run",
        "--deployment",
        deployment,
        "--workflow",
        "audio-text",
        "--text",
        "Hum?",
        "--json",
        "--gantt",
        chart,
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["answer"] == body["trace"][-1]["output"] and body["error"] is None
    assert body["trace"][0]["subtask"] == "analyse"
    assert chart.read_bytes().startswith(b"\x89PNG")
    table = cli("run", "--deployment", deployment, "--workflow", "vqa", "--text", "Hum?")
    assert table.exit_code == 0 and "predicted s" in table.stdout and "answer: " in table.stdout


def test_commands_refuse_bad_input_in_one_line(deployment: Path, tmp_path: Path) -> None:
    args = ["--workflow", "vqa", "--text", "x"]
    assert_one_line_error(cli("run", "--deployment", tmp_path / "no.yaml", *args), "not found")
    assert_one_line_error(
        cli("run", "--deployment", deployment, "--workflow", "nope", "--text", "x"),
        "unknown workflow 'nope'",
    )
    assert_one_line_error(
        cli("run", "--deployment", deployment, *args, "--policy", "best"), "unknown policy 'best'"
    )
    assert_one_line_error(
        cli("run", "--deployment", deployment, *args, "--gantt", tmp_path / "g.gif"), ".png"
    )
    assert not (tmp_path / "g.gif").exists()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        assert_one_line_error(
            cli("serve", "--deployment", deployment, "--port", port), "cannot listen on"
        )


def test_serve_says_where_it_listens_once_it_does(deployment: Path) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    command = [sys.executable, "-m", "llmoffload", "serve", "--deployment", str(deployment)]
    server = subprocess.Popen([*command, "--port", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # printed once the socket listens
        assert f"on http://127.0.0.1:{port}" in line and "heft" in line
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_calibrate_command_writes_a_scenario_that_loads(deployment: Path, tmp_path: Path) -> None:
    out = tmp_path / "fitted.yaml"
    result = cli("calibrate", "--deployment", deployment, "--out", out, "--rounds", "1")
    assert result.exit_code == 0, result.output
    assert "before" in result.stdout and "after" in result.stdout
    fitted = load_scenario(out)
    assert fitted.name.endswith("-calibrated")
    assert [s.name for s in fitted.servers] == SERVERS


def test_a_trained_run_plans_a_real_batch(deployment: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    trained = CliRunner().invoke(
        main_app, ["train", "--algo", "ucb-coma", "--episodes", "2", "--out", str(run)]
    )
    assert trained.exit_code == 0, trained.output
    requests = [Request(workflow=w, text="Inspect.") for w in WORKFLOWS]  # its 5 agents
    (batch,) = run_batches(deployment, [requests], policy=str(run))
    assert all(r.error is None and r.answer == r.steps[-1].output for r in batch.results)
    planned = placement(batch.schedule)
    assert all(s.done.server == planned[s.task, s.subtask] for s in batch.steps)
    with pytest.raises(OffloadError, match="trained for 5 tasks"):
        run_batches(deployment, [requests[:1]], policy=str(run))


def test_a_trained_gnn_sched_run_plans_and_serves(
    deployment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The centralised planner reads any number of tasks: one request is served as
    planned, and a batch of every workflow runs where its schedule put it."""
    monkeypatch.setenv("LLMOFFLOAD_CACHE", str(tmp_path))  # the expert's solves
    run = tmp_path / "gnn"
    args = ["train", "--algo", "gnn-sched", "--episodes", "4", "--out", str(run), "--workers"]
    args += ["1", "--set", "expert_decisions=1", "--set", "bc_epochs=2"]
    trained = CliRunner().invoke(main_app, args)
    assert trained.exit_code == 0, trained.output
    requests = [Request(workflow=w, text="Inspect.") for w in WORKFLOWS]
    (batch,) = run_batches(deployment, [requests], policy=str(run))
    planned = placement(batch.schedule)
    assert all(s.done.server == planned[s.task, s.subtask] for s in batch.steps)
    bound = load_deployment(deployment)
    with serve_app(create_app(bound, planner(str(run), bound), capacity=1)) as url:
        ok = httpx.post(f"{url}/v1/requests", json={"workflow": "vqa", "text": "Why?"}, timeout=60)
        assert ok.status_code == 200, ok.text
        trace = ok.json()["trace"]
        assert trace and all(s["server"] == s["planned"] for s in trace)
