"""Every entry point of the runtime refuses bad input clearly and stays up (issue 13).

The llama.cpp servers here are started by the command under test, ``llmoffload endpoints
up``, in a subprocess: the fixture's teardown stops it with SIGTERM and checks that every
server went down with it.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi import FastAPI
from test_runtime import SERVERS, assert_one_line_error, cli
from typer.testing import CliRunner, Result

from llmoffload.cli.app import app as main_app
from llmoffload.runtime.deployment import load_deployment
from llmoffload.runtime.executor import planner, refusal
from llmoffload.runtime.local import free_port, serve_app
from llmoffload.runtime.service import MAX_BODY_BYTES, create_app

pytestmark = pytest.mark.xdist_group("llama")  # with test_runtime: one worker's cores
REPO = Path(__file__).resolve().parents[1]
VQA = {"workflow": "vqa", "text": "Is the valve open?"}


def write_deployment(path: Path, urls: dict[str, str], **settings: object) -> Path:
    endpoints = {
        name: {"base_url": url, "model": f"tiny-{name}", "timeout_s": 20}
        for name, url in urls.items()
    }
    data = {"scenario": "paper", "max_tokens": 8, "endpoints": endpoints, **settings}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there: refused at once


@pytest.fixture(scope="module")
def urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The four servers of the paper scenario, started by ``llmoffload endpoints up``."""
    urls = {name: f"http://127.0.0.1:{free_port()}" for name in SERVERS}
    path = write_deployment(tmp_path_factory.mktemp("up") / "deployment.yaml", urls)
    command = [sys.executable, "-m", "llmoffload", "endpoints", "up", "--deployment", path]
    up = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert up.stdout is not None
    lines = [up.stdout.readline() for _ in range(len(SERVERS) + 1)]
    assert lines[-1].startswith("Ctrl-C or SIGTERM"), "".join(lines) + up.stdout.read()
    for name, url in urls.items():
        sees = ", sees images" if name in ("edge-image", "cloud") else ""  # image modalities
        assert f"up: {name} at {url} (model tiny-{name}{sees})\n" in lines
    yield urls
    up.send_signal(signal.SIGTERM)
    assert up.wait(timeout=30) == 0 and up.stdout.read() == "stopped\n"
    for url in urls.values():
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/v1/models")


@pytest.fixture(scope="module")
def deployment(urls: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_deployment(tmp_path_factory.mktemp("deploy") / "deployment.yaml", urls)


def service(path: Path, policy: str = "heft", **options: float) -> FastAPI:
    bound = load_deployment(path)
    return create_app(bound, planner(policy, bound), **options)


def test_endpoints_up_serves_each_endpoints_model(urls: dict[str, str]) -> None:
    for name, url in urls.items():
        models = httpx.get(f"{url}/v1/models").json()["data"]
        assert [m["id"] for m in models] == [f"tiny-{name}"]


def test_oversized_bodies_are_refused_and_the_next_request_runs_as_usual(
    deployment: Path,
) -> None:
    with serve_app(service(deployment)) as url, httpx.Client(timeout=60) as client:
        began = time.perf_counter()
        assert client.post(f"{url}/v1/requests", json=VQA).status_code == 200
        usual = time.perf_counter() - began
        big = b'{"workflow": "vqa", "text": "' + b"a" * 2 * MAX_BODY_BYTES + b'"}'
        declared = client.post(f"{url}/v1/requests", content=big)
        chunked = client.post(f"{url}/v1/requests", content=iter([big[:4096], big[4096:]]))
        for reply in (declared, chunked):
            assert reply.status_code == 413
            assert reply.json() == {"detail": f"request body over {MAX_BODY_BYTES} bytes"}
        began = time.perf_counter()
        after = client.post(f"{url}/v1/requests", json=VQA)
        assert after.status_code == 200, after.text
        assert time.perf_counter() - began < 5 * usual + 1.0  # no endpoint is still busy


def test_a_prompt_over_max_prompt_tokens_is_refused_by_run_and_serve(deployment: Path) -> None:
    text = "b" * 20_000  # about 5000 tokens at 4 bytes a token: over the default 4096
    with serve_app(service(deployment)) as url:
        reply = httpx.post(f"{url}/v1/requests", json={"workflow": "vqa", "text": text})
    assert reply.status_code == 413
    assert "over the deployment's max_prompt_tokens (4096)" in reply.json()["detail"]
    result = cli("run", "--deployment", deployment, "--workflow", "vqa", "--text", text)
    assert_one_line_error(result, "over the deployment's max_prompt_tokens (4096)")


def test_whitespace_text_is_refused_alike_by_run_and_serve(deployment: Path) -> None:
    rule = "must not be empty or whitespace only"
    result = cli("run", "--deployment", deployment, "--workflow", "vqa", "--text", " \n\t")
    assert_one_line_error(result, f"--text: {rule}")
    with serve_app(service(deployment)) as url:
        reply = httpx.post(f"{url}/v1/requests", json={"workflow": "vqa", "text": " \n\t"})
    assert reply.status_code == 422
    (error,) = reply.json()["detail"]
    assert error["loc"] == ["body", "text"] and rule in error["msg"]


def test_calibrate_checks_where_it_writes_before_calling_anyone(tmp_path: Path) -> None:
    """A missing folder or a link as --out: one line at once, no endpoint called (these
    are not running: the refusal would otherwise be about them, minutes later)."""
    dead = write_deployment(tmp_path / "d.yaml", dict.fromkeys(SERVERS, dead_url()))
    link = tmp_path / "link.yaml"
    link.symlink_to(tmp_path / "elsewhere.yaml")
    for out, fragment in ((tmp_path / "no" / "f.yaml", "does not exist"), (link, "symbolic")):
        began = time.perf_counter()
        assert_one_line_error(cli("calibrate", "--deployment", dead, "--out", out), fragment)
        assert time.perf_counter() - began < 1.0
    assert not (tmp_path / "elsewhere.yaml").exists()


@pytest.mark.parametrize(
    ("status", "body", "said"),
    [
        (
            422,
            {
                "detail": [
                    {
                        "loc": ["body", "messages", 1, "content"],
                        "msg": "Input should be a valid string",
                        "type": "string_type",
                    }
                ]
                * 15
            },
            "refused body.messages.1.content: Input should be a valid string (and 14 more)",
        ),
        (400, {"error": {"message": "no audio\n here", "type": "x"}}, "no audio here"),
        (503, {"detail": "loading model"}, "loading model"),
        (500, "<html> oops\n</html>", "<html> oops </html>"),
    ],
    ids=["validation errors", "openai error", "detail", "not json"],
)
def test_a_servers_refusal_is_one_line(status: int, body: object, said: str) -> None:
    """What an endpoint refused, as ``run`` and the trace show it: one line, not a cut-off
    dump of a llama.cpp server's 15 validation errors."""
    made = (
        httpx.Response(status, text=body)
        if isinstance(body, str)
        else httpx.Response(status, json=body)
    )
    assert refusal(made) == said


def test_a_bad_payload_is_refused_without_echoing_it(deployment: Path) -> None:
    """A 3 MB image that is not base64: 422 naming the field, in an answer of a few
    hundred bytes (FastAPI's default echoed the whole input)."""
    bad = {"workflow": "vqa", "text": "What is it?", "image": "#" * 3_000_000}
    with serve_app(service(deployment)) as url:
        reply = httpx.post(f"{url}/v1/requests", json=bad, timeout=30)
    assert reply.status_code == 422
    assert len(reply.content) < 1000
    (error,) = reply.json()["detail"]
    assert error["loc"] == ["body", "image"] and "input" not in error


def test_health_names_unreachable_endpoints_and_is_503_without_the_cloud(
    urls: dict[str, str], tmp_path: Path
) -> None:
    no_audio = write_deployment(tmp_path / "a.yaml", urls | {"edge-audio": dead_url()})
    with serve_app(service(no_audio)) as url:
        degraded = httpx.get(f"{url}/health")
    assert degraded.status_code == 200 and degraded.json()["status"] == "degraded"
    reachable = {s["name"]: s["reachable"] for s in degraded.json()["servers"]}
    assert reachable == {"edge-text": True, "edge-image": True, "edge-audio": False, "cloud": True}

    no_cloud = write_deployment(tmp_path / "c.yaml", urls | {"cloud": dead_url()})
    with serve_app(service(no_cloud)) as url:
        down = httpx.get(f"{url}/health")
    assert down.status_code == 503
    body = down.json()
    assert body["status"] == "down" and "the cloud 'cloud' is unreachable" in body["reason"]
    assert [s["name"] for s in body["servers"] if not s["reachable"]] == ["cloud"]


class Silent:
    """An endpoint that takes calls and never answers; counts the calls and hang-ups."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.calls = 0
        self.closed = 0
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # the listener was closed: the test is over
                return
            self.calls += 1
            threading.Thread(target=self.drain, args=(conn,), daemon=True).start()

    def drain(self, conn: socket.socket) -> None:
        with conn:
            while conn.recv(65536):
                pass
        self.closed += 1

    def all_hung_up(self, within_s: float) -> bool:
        deadline = time.monotonic() + within_s
        while self.closed < self.calls and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.calls > 0 and self.closed == self.calls


def test_a_timed_out_or_abandoned_request_cancels_its_endpoint_calls(tmp_path: Path) -> None:
    silent = Silent()
    path = write_deployment(tmp_path / "d.yaml", dict.fromkeys(SERVERS, silent.url))
    try:
        with serve_app(service(path, timeout_s=2.0)) as url:
            with pytest.raises(httpx.ReadTimeout):  # the client gives up and hangs up
                httpx.post(f"{url}/v1/requests", json=VQA, timeout=0.3)
            assert silent.all_hung_up(within_s=1.0)  # before the 2 s timeout could
            calls = silent.calls
            reply = httpx.post(f"{url}/v1/requests", json=VQA, timeout=10)
            assert reply.status_code == 504
            assert reply.json()["detail"].startswith("no answer in 2 s")
            assert silent.calls > calls and silent.all_hung_up(within_s=1.0)
    finally:
        silent.listener.close()


def train(out: Path, *args: str) -> Path:
    result = CliRunner().invoke(
        main_app, ["train", "--algo", "ucb-coma", "--episodes", "1", "--out", str(out), *args]
    )
    assert result.exit_code == 0, result.output
    return out


def test_serve_refuses_a_run_that_cannot_serve_at_start(deployment: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert_one_line_error(
        cli("serve", "--deployment", deployment, "--policy", damaged),
        "checkpoint.pt: not a readable checkpoint",
    )
    five = train(tmp_path / "five")  # the paper's 5 tasks; serve plans one at a time
    assert_one_line_error(
        cli("serve", "--deployment", deployment, "--policy", five),
        "cannot plan workflow 'text-analysis' of this deployment: the run was trained for 5 tasks",
    )


def test_a_run_for_one_task_is_loaded_once_and_serves(
    deployment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmoffload.experiments import training

    scenario = yaml.safe_load((REPO / "src/llmoffload/model/scenarios/paper.yaml").read_text())
    scenario["workload"]["tasks"] = 1
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(scenario, sort_keys=False))
    run = train(tmp_path / "one", "--scenario", str(tmp_path / "one.yaml"))
    real, loads = training.load_run, []

    def counted(path: Path) -> object:
        loads.append(path)
        return real(path)

    monkeypatch.setattr(training, "load_run", counted)
    with serve_app(service(deployment, str(run))) as url:

        async def two() -> list[int]:
            async with httpx.AsyncClient(timeout=60) as client:
                replies = await asyncio.gather(
                    *(client.post(f"{url}/v1/requests", json=VQA) for _ in range(2))
                )
                return [r.status_code for r in replies]

        assert asyncio.run(two()) == [200, 200]
    assert loads == [run]


def validate(path: Path) -> Result:
    return CliRunner().invoke(main_app, ["deployment", "validate", str(path)])


def test_deployment_validate(tmp_path: Path) -> None:
    example = validate(REPO / "examples/deployment.yaml")
    assert example.exit_code == 0, example.output
    assert example.stdout.startswith("ok: ") and "4 endpoints" in example.stdout
    urls = dict.fromkeys(SERVERS, "http://127.0.0.1:9")
    good = validate(write_deployment(tmp_path / "good.yaml", urls))
    assert good.exit_code == 0 and good.stdout.count("\n") == 1
    assert_one_line_error(
        validate(write_deployment(tmp_path / "bad.yaml", urls, max_prompt_tokens=0)),
        "max_prompt_tokens",
    )
    assert_one_line_error(validate(tmp_path / "missing.yaml"), "deployment file not found")


def endpoints_up(path: Path) -> Result:
    return CliRunner().invoke(main_app, ["endpoints", "up", "--deployment", str(path)])


def test_endpoints_up_refuses_addresses_it_cannot_serve(tmp_path: Path) -> None:
    urls = {name: dead_url() for name in SERVERS}
    https = write_deployment(tmp_path / "s.yaml", urls | {"cloud": "https://127.0.0.1:8443"})
    assert_one_line_error(endpoints_up(https), "endpoint 'cloud': https://127.0.0.1:8443")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        path = write_deployment(tmp_path / "t.yaml", urls | {"cloud": f"http://127.0.0.1:{port}"})
        assert_one_line_error(endpoints_up(path), f"cannot listen on 127.0.0.1:{port}")
