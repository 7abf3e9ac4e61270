"""Scenario files: servers, network, workload and objective, validated on load.

A scenario holds every number of the system model (docs/model.md §1-§3). The built-in
``paper`` scenario (``scenarios/paper.yaml``) carries the paper's §5.1 and
Table 2; each field's unit is in its name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from graphlib import CycleError, TopologicalSorter
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from typing_extensions import Self

from llmoffload.errors import OffloadError
from llmoffload.model.network import dbm_to_watt, path_loss_gain, shannon_bps

# Strict: an int reads as a float, but a YAML ``true`` or ``"2"`` is no number (lax
# pydantic would take them as 1.0 and 2.0).
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Positive = Annotated[Finite, Field(gt=0)]
NonNegative = Annotated[Finite, Field(ge=0)]
Count = Annotated[int, Field(strict=True, gt=0)]
MAX_TASKS = 10_000  # per instance: far past any episode trained on, short of a typo's 10^9
# What compute: tokens needs on every server, and on every modality of the workload.
TIMINGS = ("call_ms", "prefill_ms_per_token", "decode_ms_per_token")
TOKEN_RANGES = ("prompt_tokens", "output_tokens")


def optional() -> Any:
    """A field that defaults to None and is left out of dumps while None: files (and the
    sweep's cache keys) of models that do not use it stay as they were, byte for byte."""
    return Field(None, exclude_if=lambda value: value is None)


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error (plain YAML
    keeps the last one silently, so a pasted-in override would hide the first value)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        keys = [k for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"]
        mapping = super().construct_mapping(node, deep)  # merges '<<' and checks hashability
        seen: set[object] = set()
        for key_node in keys:
            key = self.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}'", key_node.start_mark
                )
            seen.add(key)
        return mapping


class Model(BaseModel):
    """Strict, immutable base: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


N = TypeVar("N", int, float)


class Interval(Model, Generic[N]):
    """[low, high] of numbers of type N, low <= high; a pair [low, high] reads as one."""

    low: N
    high: N

    @model_validator(mode="before")
    @classmethod
    def _from_pair(cls, value: object) -> object:
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return {"low": value[0], "high": value[1]}
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.low > self.high:
            raise ValueError(f"range [{self.low}, {self.high}] has low > high")
        return self


class Range(Interval[Positive]):
    """A closed interval [low, high] that values are drawn from uniformly."""


class TokenRange(Interval[Count]):
    """A closed interval of token counts, drawn from uniformly as integers."""


class Server(Model):
    """An edge server with a light LLM, or the cloud with the multimodal one.

    ``slots``: how many subtasks it runs at once, each at full speed, the rest
    queued in dispatch order. An edge runs one at a time (paper §3.2), the paper's
    cloud any number (``null``); a cloud with ``slots: K`` is one with K replicas.
    ``call_ms``, ``prefill_ms_per_token``, ``decode_ms_per_token``: its LLM's time per
    call, per prompt token and per generated token, for ``compute: tokens`` only.
    ``image_tokens_per_mpx``: the prompt tokens its encoder makes of an image, per
    megapixel (calibration measures it); a plan counts an image's tokens by it.
    """

    name: str
    kind: Literal["edge", "cloud"]
    ghz: Positive
    usd_per_ghz: NonNegative
    modalities: list[str] = Field(min_length=1)
    slots: Count | None = None
    call_ms: NonNegative | None = optional()
    prefill_ms_per_token: NonNegative | None = optional()
    decode_ms_per_token: NonNegative | None = optional()
    image_tokens_per_mpx: NonNegative | None = optional()

    @model_validator(mode="before")
    @classmethod
    def _default_slots(cls, value: object) -> object:
        """An edge runs one subtask at a time unless told otherwise."""
        if isinstance(value, dict) and value.get("kind") == "edge" and "slots" not in value:
            return {**value, "slots": 1}
        return value

    def token_timings(self) -> tuple[float, float, float]:
        """(call_ms, prefill_ms_per_token, decode_ms_per_token), which a ``compute: tokens``
        scenario gives every server (checked on load): refused in one line where missing."""
        call, prefill, decode = self.call_ms, self.prefill_ms_per_token, self.decode_ms_per_token
        if call is None or prefill is None or decode is None:
            raise OffloadError(f"server '{self.name}' has no {', '.join(TIMINGS)}")
        return call, prefill, decode

    @model_validator(mode="after")
    def _finite_edge(self) -> Server:
        if self.kind == "edge" and self.slots is None:
            raise ValueError(f"edge '{self.name}' needs a number of slots (null: cloud only)")
        return self


class Channel(Model):
    """Simplified path-loss model G = 10^(g0/10) * d^-alpha (Goldsmith 2005, §2.6).

    The paper gives no channel gain; device-edge distances are drawn per
    (task, edge) from ``distance_m`` for every instance.
    """

    exponent: Positive = 3.0
    reference_gain_db: Finite = 0.0
    distance_m: Range = Range(low=50.0, high=100.0)


class Network(Model):
    """Wireless device-edge links (OFDMA, Shannon rate) and wired rates."""

    bandwidth_mhz: Positive
    device_power_w: Positive
    edge_power_w: Positive
    noise_dbm: Finite
    channel: Channel = Channel()
    device_cloud_up_mbps: Positive
    device_cloud_down_mbps: Positive
    edge_edge_mbps: Positive
    edge_cloud_mbps: Positive

    def gain(self, distance_m: float) -> float:
        ch = self.channel
        return path_loss_gain(distance_m, ch.exponent, ch.reference_gain_db)

    def rate_bps(self, power_w: float, distance_m: float) -> float:
        """Device-edge Shannon rate at ``distance_m`` for a transmitter of ``power_w``."""
        noise_w = dbm_to_watt(self.noise_dbm)
        return shannon_bps(self.bandwidth_mhz * 1e6, power_w, self.gain(distance_m), noise_w)

    @model_validator(mode="after")
    def _usable(self) -> Network:
        far = self.channel.distance_m.high
        rate = self.rate_bps(min(self.device_power_w, self.edge_power_w), far)
        if not 0 < rate < math.inf:
            raise ValueError(
                f"the device-edge rate at {far} m is {rate} bit/s: check noise and gain"
            )
        return self


class Sizes(Model):
    """Input and output data sizes of one modality's subtasks, in kbit, and, for
    ``compute: tokens`` only, its prompt and output token counts."""

    input_kbit: Range
    output_kbit: Range
    prompt_tokens: TokenRange | None = optional()
    output_tokens: TokenRange | None = optional()

    def token_ranges(self) -> tuple[TokenRange, TokenRange]:
        """(prompt, output) token ranges, which a ``compute: tokens`` scenario gives every
        modality (checked on load): refused in one line where they are missing."""
        prompt, output = self.prompt_tokens, self.output_tokens
        if prompt is None or output is None:
            raise OffloadError(f"compute 'tokens' needs {' and '.join(TOKEN_RANGES)} in sizes")
        return prompt, output


class Workflow(Model):
    """A task DAG: node name -> modality, and edges (predecessor, successor)."""

    nodes: dict[str, str] = Field(min_length=1)
    edges: list[tuple[str, str]] = []

    def order(self) -> list[str]:
        """Node names in a topological order, ties kept in declaration order."""
        sorter = TopologicalSorter({n: [] for n in self.nodes})
        for pred, succ in self.edges:
            sorter.add(succ, pred)
        sorter.prepare()
        rank = {n: k for k, n in enumerate(self.nodes)}
        order: list[str] = []
        while sorter.is_active():
            ready = sorted(sorter.get_ready(), key=rank.__getitem__)
            order.extend(ready)
            sorter.done(*ready)
        return order

    def predecessors(self, node: str) -> list[str]:
        return [p for p, s in self.edges if s == node]

    def nodes_in_order(self) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
        """(name, modality, predecessors' indices) of each node in ``order()``: the shape
        of every task drawn from this workflow, worked out once per distinct workflow."""
        return shape_of(tuple(self.nodes.items()), tuple(self.edges))

    @model_validator(mode="after")
    def _dag(self) -> Workflow:
        for pred, succ in self.edges:
            for end in (pred, succ):
                if end not in self.nodes:
                    raise ValueError(f"edge ({pred}, {succ}) names unknown node '{end}'")
            if pred == succ:
                raise ValueError(f"edge ({pred}, {succ}) is a self-loop")
        try:
            self.order()
        except CycleError as exc:
            raise ValueError(f"workflow has a cycle through {' -> '.join(exc.args[1])}") from None
        sources = [n for n in self.nodes if not self.predecessors(n)]
        sinks = [n for n in self.nodes if all(p != n for p, _ in self.edges)]
        if len(sources) != 1 or len(sinks) != 1:
            raise ValueError(
                "workflow needs one analysis (source) and one aggregation (sink) node, "
                f"found sources {sources} and sinks {sinks}"
            )
        return self


@cache
def shape_of(
    nodes: tuple[tuple[str, str], ...], edges: tuple[tuple[str, str], ...]
) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
    """``Workflow.nodes_in_order``, cached by the workflow's content."""
    flow = Workflow(nodes=dict(nodes), edges=list(edges))
    order = flow.order()
    index = {name: j for j, name in enumerate(order)}
    return tuple(
        (name, flow.nodes[name], tuple(sorted(index[p] for p in flow.predecessors(name))))
        for name in order
    )


class Workload(Model):
    """What one episode holds: how many tasks, drawn from which workflows, arriving when.

    ``tasks``: at most ``MAX_TASKS``. ``arrivals_per_s``: tasks arrive as a Poisson
    process of this rate, the first at t = 0 (the episode starts with a request);
    ``null``: all at t = 0, as the paper.
    """

    tasks: Annotated[Count, Field(le=MAX_TASKS)] = 5
    arrivals_per_s: Positive | None = None
    workflows: list[str] = Field(min_length=1)
    cycles_per_bit: Positive = 1900.0
    sizes: dict[str, Sizes] = Field(min_length=1)


class Reward(Model):
    """The MDP's reward: its form and constants (paper Table 2: penalty v, bonus theta).

    ``paper``: an executed dispatch earns the bonus (or the lateness penalty) minus its
    own weighted upload, compute and cost, as the paper's reward. ``objective``: the
    bonus (or lateness penalty) minus what it adds to the episode's weighted objective,
    queue waiting included, so that an episode's return is the bonuses minus the
    objective minus the penalties.
    """

    form: Literal["paper", "objective"] = "paper"
    penalty: NonNegative = 1.0
    bonus: NonNegative = 2.0


class Scenario(Model):
    """Everything needed to sample instances and evaluate schedules.

    ``compute``: how a subtask's compute time is modelled (docs/model.md §3):
    ``cycles``, its CPU cycles over the server's clock (the paper's); ``tokens``, the
    server's per-call, per-prompt-token and per-output-token times, which every server
    and every modality's token ranges must then give.
    """

    name: str = "custom"
    compute: Literal["cycles", "tokens"] = Field(
        "cycles", exclude_if=lambda value: value == "cycles"
    )
    gamma: Annotated[Finite, Field(ge=0, le=1)] = 0.5
    t_max_s: Positive = 3.0
    latency: Literal["span", "arrival"] = "span"
    servers: list[Server] = Field(min_length=1)
    network: Network
    workload: Workload
    reward: Reward = Reward()
    workflows: dict[str, Workflow] = Field(min_length=1)

    @property
    def cloud(self) -> int:
        """Index of the cloud server."""
        return next(k for k, s in enumerate(self.servers) if s.kind == "cloud")

    @property
    def modalities(self) -> list[str]:
        return list(self.workload.sizes)

    def link_rates(self, distances_m: Sequence[float]) -> tuple[list[float], list[float]]:
        """Uplink and downlink rates (bit/s) between one task's device and every server.

        ``distances_m`` holds one distance per edge server, in server order; the
        cloud is reached over the wired core network at fixed rates.
        """
        net = self.network
        distances = iter(distances_m)
        up: list[float] = []
        down: list[float] = []
        for server in self.servers:
            if server.kind == "cloud":
                up.append(net.device_cloud_up_mbps * 1e6)
                down.append(net.device_cloud_down_mbps * 1e6)
            else:
                d = next(distances)
                up.append(net.rate_bps(net.device_power_w, d))
                down.append(net.rate_bps(net.edge_power_w, d))
        return up, down

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        names = [s.name for s in self.servers]
        if len(set(names)) != len(names):
            raise ValueError(f"server names must be unique, got {names}")
        if sum(s.kind == "cloud" for s in self.servers) != 1:
            raise ValueError("exactly one server must have kind 'cloud'")
        known = set(self.modalities)
        for server in self.servers:
            for m in server.modalities:
                if m not in known:
                    raise ValueError(f"server '{server.name}': unknown modality '{m}'")
        cloud = self.servers[self.cloud]
        missing = [m for m in self.modalities if m not in cloud.modalities]
        if missing:
            raise ValueError(f"the cloud must serve every modality, but not {missing}")
        for name, flow in self.workflows.items():
            for node, m in flow.nodes.items():
                if m not in known:
                    raise ValueError(f"workflow '{name}' node '{node}': unknown modality '{m}'")
        for name in self.workload.workflows:
            if name not in self.workflows:
                raise ValueError(f"workload names unknown workflow '{name}'")
        return self._fits_compute()

    def _fits_compute(self) -> Scenario:
        """Token timings and ranges on every server and modality with ``compute: tokens``,
        on none without it (a timing the model would ignore is a mistake to report)."""
        tokens = self.compute == "tokens"
        holders = [(f"server '{s.name}'", s, TIMINGS) for s in self.servers] + [
            (f"modality '{m}'", sizes, TOKEN_RANGES) for m, sizes in self.workload.sizes.items()
        ]
        for what, holder, fields in holders:
            given = [f for f in fields if getattr(holder, f) is not None]
            missing = [f for f in fields if f not in given]
            if tokens and missing:
                raise ValueError(f"compute 'tokens': {what} needs {', '.join(missing)}")
            if not tokens and given:
                raise ValueError(
                    f"{what} gives {', '.join(given)}, which only compute 'tokens' uses "
                    "(this scenario's compute is 'cycles')"
                )
        return self


FOLDER = resources.files("llmoffload.model.scenarios")  # the built-in scenarios' files


def builtin() -> tuple[str, ...]:
    """The built-in scenarios' names: every ``NAME.yaml`` in FOLDER, ``paper`` first and
    the rest in alphabetical order, so a file dropped there is loadable by name."""
    names = sorted(
        f.name.removesuffix(".yaml") for f in FOLDER.iterdir() if f.name.endswith(".yaml")
    )
    return tuple(sorted(names, key=lambda name: name != "paper"))


BUILTIN = builtin()
REWARD_FORMS = get_args(Reward.model_fields["form"].annotation)


def with_reward(scenario: Scenario, form: str) -> Scenario:
    """The scenario with its reward in ``form`` (``train --reward``)."""
    if form not in REWARD_FORMS:
        raise OffloadError(f"unknown reward form '{form}' (choose from {', '.join(REWARD_FORMS)})")
    return scenario.model_copy(update={"reward": scenario.reward.model_copy(update={"form": form})})


def one_line(exc: ValidationError) -> str:
    """Pydantic's first error as 'where: what', on one line."""
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


def parse_scenario(data: object, source: str) -> Scenario:
    """Validate already-parsed data; errors name the source and the field."""
    if not isinstance(data, dict):
        raise OffloadError(f"{source}: a scenario must be a mapping of fields")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise OffloadError(f"{source}: {one_line(exc)}") from None


def load_scenario(spec: str | Path, _seen: tuple[str, ...] = ()) -> Scenario:
    """Load a built-in scenario by name, or a YAML scenario file by path.

    A file may start from another scenario with ``base: NAME_OR_PATH`` (a path
    relative to the file): it then gives only what differs, mappings merged key by
    key, lists and values replaced whole.
    """
    if str(spec) in builtin():
        text = FOLDER.joinpath(f"{spec}.yaml").read_text()
        source = f"built-in scenario '{spec}'"
    else:
        path = Path(spec)
        if not path.is_file():
            raise OffloadError(
                f"scenario file not found: {path} (built-in: {', '.join(builtin())})"
            )
        source = str(path)
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            raise OffloadError(f"{source}: not a text file") from None
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "unreadable"
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark else ""
        raise OffloadError(f"{source}: not valid YAML: {problem}{line}") from None
    if isinstance(data, dict) and "base" in data:
        data = dict(data)
        base = str(data.pop("base"))
        base = base if base in builtin() else str(Path(spec).parent / base)
        seen = (*_seen, identity(spec))
        if identity(base) in seen:
            raise OffloadError(f"{source}: base '{base}' leads back to itself")
        data = merged(load_scenario(base, seen).model_dump(mode="json"), data)
    return parse_scenario(data, source)


def identity(spec: str | Path) -> str:
    """A built-in's name, or a file's resolved path: what a chain of bases may not repeat."""
    return str(spec) if str(spec) in builtin() else str(Path(spec).resolve())


def merged(base: dict, over: dict) -> dict:
    """``base`` with ``over``'s values: mappings merged key by key, the rest replaced."""
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = merged(base[key], value) if both else value
    return out
