"""``scenario show``, ``scenario validate`` and ``instance``: what a scenario holds and the
instances it draws."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from llmoffload.cli.limits import bounds
from llmoffload.display import table
from llmoffload.files import write_text_atomic
from llmoffload.model.instance import sample_instance
from llmoffload.model.network import dbm_to_watt
from llmoffload.model.scenario import TIMINGS, Scenario, load_scenario


def db(ratio: float) -> float:
    return 10.0 * math.log10(ratio) if ratio > 0 else -math.inf


def describe_scenario(sc: Scenario) -> str:
    """Every number of a scenario, and the device-edge rates they imply."""
    net, ch, load = sc.network, sc.network.channel, sc.workload
    latency = {"span": "max EN - min ST + downlink", "arrival": "from the task's arrival"}
    tokens = sc.compute == "tokens"
    out = [
        f"scenario {sc.name}",
        f"  gamma {sc.gamma:g}, T_max {sc.t_max_s:g} s, latency {sc.latency} "
        f"({latency[sc.latency]})",
        "",
        "servers",
        table(
            ["name", "kind", "GHz", "$/GHz", "slots", "modalities"]
            + (["call ms", "prefill ms/token", "decode ms/token"] if tokens else []),
            [
                [s.name, s.kind, s.ghz, s.usd_per_ghz, s.slots or "any", ", ".join(s.modalities)]
                + ([f"{getattr(s, f):g}" for f in TIMINGS] if tokens else [])
                for s in sc.servers
            ],
        ),
        "",
        "network",
        f"  wireless: W {net.bandwidth_mhz:g} MHz, device {net.device_power_w:g} W, "
        f"edge {net.edge_power_w:g} W, noise {net.noise_dbm:g} dBm",
        f"  channel: G = 10^({ch.reference_gain_db:g}/10) d^-{ch.exponent:g}, "
        f"d ~ U[{ch.distance_m.low:g}, {ch.distance_m.high:g}] m per (task, edge)",
        f"  wired: device-cloud up {net.device_cloud_up_mbps:g} Mbps, "
        f"down {net.device_cloud_down_mbps:g} Mbps; edge-edge {net.edge_edge_mbps:g} Mbps; "
        f"edge-cloud {net.edge_cloud_mbps:g} Mbps",
        "",
        "device-edge links at the nearest and farthest distance (W log2(1 + P G / sigma2))",
        describe_links(sc),
        "",
        "workload",
        f"  {load.tasks} tasks per instance, workflow drawn uniformly from: "
        f"{', '.join(load.workflows)}",
        "  arrivals: "
        + (
            f"Poisson, {load.arrivals_per_s:g} per s, the first at t = 0"
            if load.arrivals_per_s
            else "all at t = 0"
        ),
        (
            "  compute: tokens, a call takes call + prefill x prompt + decode x output "
            "tokens (ms), priced per GHz-second"
            if tokens
            else f"  {load.cycles_per_bit:g} CPU cycles per input bit"
        ),
        table(
            ["modality", "input kbit", "output kbit"]
            + (["prompt tokens", "output tokens"] if tokens else []),
            [
                [
                    m,
                    f"{s.input_kbit.low:g}-{s.input_kbit.high:g}",
                    f"{s.output_kbit.low:g}-{s.output_kbit.high:g}",
                ]
                + (
                    [  # both set under compute: tokens (the scenario's check)
                        f"{r.low}-{r.high}"
                        for r in (s.prompt_tokens, s.output_tokens)
                        if r is not None
                    ]
                    if tokens
                    else []
                )
                for m, s in load.sizes.items()
            ],
        ),
        "",
        f"reward: penalty v {sc.reward.penalty:g}, bonus theta {sc.reward.bonus:g}",
        "",
        "workflows",
    ]
    for name, flow in sc.workflows.items():
        out.append(f"  {name}")
        out.append("    nodes: " + ", ".join(f"{n} ({m})" for n, m in flow.nodes.items()))
        out.append("    edges: " + (", ".join(f"{p} -> {s}" for p, s in flow.edges) or "none"))
    return "\n".join(out)


def describe_links(sc: Scenario) -> str:
    """Uplink and downlink SNR and Shannon rate per edge server, as the model computes them."""
    net = sc.network
    edges = [s.name for s in sc.servers if s.kind == "edge"]
    noise_w = dbm_to_watt(net.noise_dbm)
    rows = []
    for d in sorted({net.channel.distance_m.low, net.channel.distance_m.high}):
        gain = net.gain(d)
        up, down = sc.link_rates([d] * len(edges))
        rates = [(u, w) for s, u, w in zip(sc.servers, up, down, strict=True) if s.kind == "edge"]
        for name, (u, w) in zip(edges, rates, strict=True):
            rows.append(
                [
                    name,
                    f"{d:g}",
                    f"{db(gain):.1f}",
                    f"{db(net.device_power_w * gain / noise_w):.1f}",
                    f"{u / 1e6:.2f}",
                    f"{db(net.edge_power_w * gain / noise_w):.1f}",
                    f"{w / 1e6:.2f}",
                ]
            )
    header = ["server", "distance_m", "gain_db", "up_snr_db", "up_mbps", "down_snr_db"]
    return table([*header, "down_mbps"], rows)


def scenario_show(
    name_or_file: Annotated[
        str, typer.Argument(metavar="NAME_OR_FILE", help="A built-in scenario or a YAML file.")
    ],
) -> None:
    """Print a scenario and the device-edge link rates it implies."""
    typer.echo(describe_scenario(load_scenario(name_or_file)))


def scenario_validate(
    file: Annotated[str, typer.Argument(metavar="FILE", help="The scenario YAML file to check.")],
) -> None:
    """Check a scenario file; print 'ok: ...' or the error."""
    sc = load_scenario(file)
    typer.echo(f"ok: {sc.name} ({len(sc.servers)} servers, {len(sc.workflows)} workflows)")


def instance_cmd(
    out: Annotated[Path, typer.Option("--out", help="JSON file to write.")],
    scenario: Annotated[str, typer.Option(help="Built-in name or YAML file.")] = "paper",
    seed: Annotated[int, typer.Option(**bounds("seed"), help="Seed of numpy's default_rng.")] = 0,
    tasks: Annotated[
        int | None, typer.Option(min=1, help="Tasks to draw (default: the scenario's).")
    ] = None,
) -> None:
    """Sample one problem instance from a scenario and save it as JSON."""
    inst = sample_instance(load_scenario(scenario), np.random.default_rng(seed), tasks)
    write_text_atomic(out, inst.dumps())
    flows = ", ".join(t.workflow for t in inst.tasks)
    subtasks = sum(len(t.subtasks) for t in inst.tasks)
    typer.echo(
        f"wrote {out}: scenario {inst.scenario.name}, seed {seed}, {len(inst.tasks)} tasks "
        f"({flows}), {subtasks} subtasks"
    )
