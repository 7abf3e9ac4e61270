"""docs/architecture.md's "Where to add", followed step by step: a scheduler is its own
function and one registry line, an endpoint kind one class and one line in ``APIS``;
everything above picks them up by name with no other edit."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from llmoffload.cli.app import app
from llmoffload.errors import OffloadError
from llmoffload.experiments.policies import resolve_policy
from llmoffload.model.execution import Dispatch, evaluate
from llmoffload.model.instance import Instance, load_instance, sample_instance
from llmoffload.model.scenario import load_scenario
from llmoffload.model.validate import check, violations
from llmoffload.runtime import apis
from llmoffload.runtime.apis import Api
from llmoffload.runtime.deployment import load_deployment
from llmoffload.runtime.executor import complete, planner
from llmoffload.runtime.service import probe
from llmoffload.schedulers import heuristics, registry
from llmoffload.schedulers.optimal import solve

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
runner = CliRunner()


def where_to_add(item: str) -> str:
    """The docs' paragraph on adding ``item`` ("A scheduler", "An endpoint kind")."""
    text = DOC.read_text().split("## Where to add", 1)[1]
    return " ".join(text.split(f"- **{item}.**", 1)[1].split("\n- **", 1)[0].split())


# --- a scheduler ------------------------------------------------------------------------------


def last_task_first(instance: Instance, rng: np.random.Generator) -> list[Dispatch]:
    """The dummy: every subtask on the cloud, the last task's first."""
    cloud = instance.scenario.cloud
    return [
        Dispatch(i, j, cloud)
        for i in reversed(range(len(instance.tasks)))
        for j in range(len(instance.tasks[i].subtasks))
    ]


@pytest.fixture
def instance_file(tmp_path: Path) -> Path:
    path = tmp_path / "i.json"
    path.write_text(sample_instance(load_scenario("paper"), np.random.default_rng(3), 3).dumps())
    return path


def test_the_docs_name_the_steps_this_test_follows() -> None:
    steps = where_to_add("A scheduler")
    for step in ("schedulers/registry.SCHEDULERS", "heuristics.CLASSIC", "model.validate.check"):
        assert step in steps
    assert "one registry line" in steps or "one line" in steps
    assert "APIS" in where_to_add("An endpoint kind")


def test_a_scheduler_is_its_function_and_one_registry_line(
    monkeypatch: pytest.MonkeyPatch, instance_file: Path, tmp_path: Path
) -> None:
    monkeypatch.setitem(registry.SCHEDULERS, "last-task-first", last_task_first)  # the line
    inst = load_instance(instance_file)
    cloud = inst.scenario.cloud
    assert [len(t.subtasks) for t in inst.tasks] == [5, 4, 5]  # what by_hand assumes
    by_hand = [[2, j, cloud] for j in range(5)] + [[1, j, cloud] for j in range(4)]
    by_hand += [[0, j, cloud] for j in range(5)]

    result = runner.invoke(
        app, ["schedule", str(instance_file), "--policy", "last-task-first", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["order"] == by_hand
    schedule = evaluate(inst, [Dispatch(*d) for d in by_hand])
    assert data["objective"] == pytest.approx(schedule.objective, rel=1e-12)
    check(inst, schedule)  # the validator, re-deriving every number, accepts it
    assert violations(inst, schedule) == []

    # the runtime plans with it by the same name
    endpoints = {
        s.name: {"base_url": "http://127.0.0.1:9", "model": "m"} for s in inst.scenario.servers
    }
    deployment = tmp_path / "deployment.yaml"
    deployment.write_text(yaml.safe_dump({"endpoints": endpoints}))
    plan = planner("last-task-first", load_deployment(deployment))
    assert {run.server for run in plan(inst).runs} == {cloud}

    # and a misspelling lists it among the choices
    with pytest.raises(OffloadError, match="last-task-first"):
        resolve_policy("last-task-first-typo", 1.0)


def test_a_scheduler_in_classic_is_one_best_classic_considers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The docs' other place for the line: best-classic (and so the sweep's best-classic
    reference) takes the best of CLASSIC. An oracle that returns CP-SAT's schedule, here
    better than every classic rule's, is what best-classic must now match."""
    inst = sample_instance(load_scenario("slow-uplink"), np.random.default_rng(1), 2)
    solution = solve(inst, time_limit_s=10.0)
    best = resolve_policy("best-classic", 1.0)
    without = best(inst, np.random.default_rng(0)).schedule.objective
    assert without > solution.schedule.objective + 1e-6  # so the oracle can make a difference

    def oracle(instance: Instance, rng: np.random.Generator) -> list[Dispatch]:
        return [Dispatch(*d) for d in solution.schedule.order]

    monkeypatch.setitem(heuristics.CLASSIC, "oracle", oracle)  # the line in CLASSIC, which
    monkeypatch.setitem(registry.SCHEDULERS, "oracle", oracle)  # SCHEDULERS spreads at import
    with_oracle = best(inst, np.random.default_rng(0)).schedule.objective
    assert with_oracle == pytest.approx(solution.schedule.objective, rel=1e-12)


# --- an endpoint kind -------------------------------------------------------------------------


class Echo(Api):
    """The dummy kind: a prompt in ``input``, the answer in ``output``."""

    path = "/v2/echo"
    health_path = "/v2/alive"

    def request(self, prompt: str, media: Any) -> dict[str, Any]:
        return {"input": prompt}

    def text(self, choice: Any) -> Any:
        return choice["output"]


def test_an_endpoint_kind_is_one_class_and_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(apis.APIS, "echo", Echo())  # the line
    servers = load_scenario("paper").servers
    endpoints = {s.name: {"base_url": f"http://{s.name}", "model": "m"} for s in servers}
    endpoints["edge-text"]["api"] = "echo"
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump({"endpoints": endpoints, "max_tokens": 7}))
    bound = load_deployment(path)
    endpoint = bound.endpoints[[s.name for s in servers].index("edge-text")]
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "GET":
            return httpx.Response(200 if request.url.path == "/v2/alive" else 404)
        reply = {"choices": [{"output": "hi"}], "usage": {"prompt_tokens": 3}}
        return httpx.Response(200, json=reply)

    async def go() -> tuple[Any, str | None]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
            return await complete(client, endpoint, bound.deployment, "Hello?"), await probe(
                client, endpoint
            )

    reply, down = asyncio.run(go())
    assert (reply.text, reply.prompt_tokens, reply.completion_tokens) == ("hi", 3, 0)
    assert down is None  # the health check asked the kind's own path
    post, get = seen
    assert str(post.url) == "http://edge-text/v2/echo"
    assert json.loads(post.content) == {
        "model": "m",
        "max_tokens": 7,
        "temperature": 0.0,
        "input": "Hello?",
    }
    assert str(get.url) == "http://edge-text/v2/alive"

    # it carries no media, so it may not play a server of images
    endpoints["edge-image"]["api"] = "echo"
    path.write_text(yaml.safe_dump({"endpoints": endpoints}))
    with pytest.raises(OffloadError, match="needs api: chat \\(a echo prompt carries no image"):
        load_deployment(path)
