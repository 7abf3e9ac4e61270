"""Deployment files: which real endpoint plays each server of a scenario.

A deployment binds every server of a scenario (built-in name, or a YAML path relative to
the deployment file) to an OpenAI-compatible endpoint. The scenario the policy plans with
is the deployment's view of it: each server's modalities and price as the endpoint offers
them (a subset of the scenario's; the cloud must still serve every modality). An endpoint
serving a modality with an image or audio in it is sent them along with the prompt, so
it must speak an ``api`` that carries them (chat). The file is read as scenario files
are: a key given twice is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from llmoffload.errors import OffloadError
from llmoffload.model.scenario import (
    BUILTIN,
    Model,
    NonNegative,
    Positive,
    Scenario,
    UniqueKeyLoader,
    load_scenario,
    one_line,
    parse_scenario,
)
from llmoffload.runtime.apis import APIS, Api
from llmoffload.runtime.media import ACCEPTED, kinds

Stage = Literal["analysis", "subtask", "aggregation"]  # the prompt template a subtask uses
DEFAULT_TEMPLATES: dict[Stage, str] = {
    "analysis": "Plan the steps for this request.\nRequest: {request}\n",
    "subtask": "Do the {modality} step '{node}' of this request.\n"
    "Request: {request}\nEarlier results:\n{context}\n",
    "aggregation": "Combine the results into one answer.\nRequest: {request}\n"
    "Results:\n{context}\n",
}
FIELDS = ("request", "node", "modality", "context")


class Endpoint(Model):
    """One OpenAI-compatible server playing one scenario server."""

    base_url: str
    model: str = Field(min_length=1)
    api: str = "chat"  # a kind of runtime.apis.APIS
    modalities: Annotated[list[str], Field(min_length=1)] | None = None  # default: the server's
    usd_per_ghz: NonNegative | None = None  # default: the scenario server's price
    timeout_s: Positive = 30.0
    concurrency: Annotated[int, Field(gt=0)] | None = None  # default: edge 1, cloud 16
    distance_m: Positive | None = None  # edges: device-edge distance; default mid-range

    @field_validator("base_url")
    @classmethod
    def _url(cls, url: str) -> str:
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018 - parsing the port is the check
        except ValueError:
            raise ValueError(f"'{url}' has a bad port") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"'{url}' is not an http(s) URL with a host")
        return url.rstrip("/")

    @field_validator("api")
    @classmethod
    def _kind(cls, api: str) -> str:
        if api not in APIS:  # worded as pydantic words a Literal's error
            expected = " or ".join(f"'{k}'" for k in APIS)
            raise PydanticCustomError(
                "literal_error", "Input should be {expected}", {"expected": expected}
            )
        return api

    @property
    def kind(self) -> Api:
        """The protocol this endpoint speaks."""
        return APIS[self.api]


class Deployment(Model):
    """Endpoints for every server, generation settings, and the per-stage prompts."""

    scenario: str = "paper"
    endpoints: dict[str, Endpoint] = Field(min_length=1)
    max_tokens: Annotated[int, Field(gt=0)] = 64
    # a longer prompt is refused before any call: endpoints burn CPU on what they must read
    max_prompt_tokens: Annotated[int, Field(gt=0)] = 4096
    temperature: NonNegative = 0.0
    templates: dict[Stage, str] = dict(DEFAULT_TEMPLATES)

    @field_validator("templates", mode="before")
    @classmethod
    def _merge(cls, value: object) -> object:
        """A file may override some stages; the others keep their defaults."""
        return {**DEFAULT_TEMPLATES, **value} if isinstance(value, dict) else value

    @field_validator("templates")
    @classmethod
    def _placeholders(cls, templates: dict[Stage, str]) -> dict[Stage, str]:
        for stage, text in templates.items():
            try:
                text.format(**dict.fromkeys(FIELDS, ""))
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    f"template '{stage}' has a bad placeholder {exc} "
                    f"(allowed: {', '.join('{' + f + '}' for f in FIELDS)})"
                ) from None
        return templates


class Bound:
    """A validated deployment with its effective scenario, one endpoint per server index."""

    def __init__(self, deployment: Deployment, scenario: Scenario) -> None:
        self.deployment = deployment
        self.scenario = scenario
        self.endpoints = [deployment.endpoints[s.name] for s in scenario.servers]
        self.concurrency = [
            e.concurrency or (1 if s.kind == "edge" else 16)
            for e, s in zip(self.endpoints, scenario.servers, strict=True)
        ]
        span = scenario.network.channel.distance_m
        self.distances_m = [
            e.distance_m or (span.low + span.high) / 2
            for e, s in zip(self.endpoints, scenario.servers, strict=True)
            if s.kind == "edge"
        ]


def bind(deployment: Deployment, base: Scenario, source: str) -> Bound:
    """Check the deployment against the scenario and build the scenario the policy sees."""
    names = [s.name for s in base.servers]
    for name in deployment.endpoints:
        if name not in names:
            raise OffloadError(
                f"{source}: endpoint '{name}' is not a server of scenario '{base.name}' "
                f"(servers: {', '.join(names)})"
            )
    servers = []
    for server in base.servers:
        ep = deployment.endpoints.get(server.name)
        if ep is None:
            raise OffloadError(f"{source}: server '{server.name}' has no endpoint")
        if server.kind == "edge" and ep.concurrency not in (None, 1):
            raise OffloadError(
                f"{source}: edge '{server.name}' must have concurrency 1 (edges are FIFO queues "
                "in the execution model)"
            )
        if server.kind == "cloud" and ep.distance_m is not None:
            raise OffloadError(f"{source}: the cloud '{server.name}' takes no distance_m")
        modalities = ep.modalities or server.modalities
        extra = [m for m in modalities if m not in server.modalities]
        if extra:
            raise OffloadError(
                f"{source}: endpoint '{server.name}' lists modality '{extra[0]}', which the "
                f"scenario's server does not serve ({', '.join(server.modalities)})"
            )
        media = [m for m in modalities if set(kinds(m)) & set(ACCEPTED)]
        if media and not ep.kind.media:
            carriers = " or ".join(k for k, api in APIS.items() if api.media)
            raise OffloadError(
                f"{source}: endpoint '{server.name}' serves modality '{media[0]}', which needs "
                f"api: {carriers} (a {ep.api} prompt carries no image or audio)"
            )
        price = server.usd_per_ghz if ep.usd_per_ghz is None else ep.usd_per_ghz
        servers.append(server.model_dump() | {"modalities": modalities, "usd_per_ghz": price})
    data = base.model_dump() | {"servers": servers}
    return Bound(deployment, parse_scenario(data, f"{source} (scenario '{base.name}')"))


def load_deployment(path: str | Path) -> Bound:
    """Read, validate and bind a deployment YAML file; every problem is one OffloadError."""
    path = Path(path)
    if not path.is_file():
        raise OffloadError(f"deployment file not found: {path}")
    try:
        data = yaml.load(path.read_text(), Loader=UniqueKeyLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        problem = getattr(exc, "problem", None) or "unreadable"
        raise OffloadError(f"{path}: not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise OffloadError(f"{path}: a deployment must be a mapping of fields")
    try:
        deployment = Deployment.model_validate(data)
    except ValidationError as exc:
        raise OffloadError(f"{path}: {one_line(exc)}") from None
    spec = deployment.scenario
    scenario = load_scenario(spec if spec in BUILTIN else path.parent / spec)
    return bind(deployment, scenario, str(path))
