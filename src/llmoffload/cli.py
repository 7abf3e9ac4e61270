"""The ``llmoffload`` command line: scenarios, instances and schedules.

Bad input of any kind ends in one line ``error: <message>`` on stderr and exit
code 2, never a traceback, and leaves no output file behind: inputs are
validated before anything is written, and every file is written atomically.
"""

from __future__ import annotations

import errno
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from typer.core import TyperGroup

from llmoffload import optimal
from llmoffload.errors import OffloadError
from llmoffload.execution import Schedule, evaluate
from llmoffload.files import check_output, write_text_atomic
from llmoffload.instance import Instance, load_instance, sample_instance
from llmoffload.network import dbm_to_watt, link_rates
from llmoffload.runtime.commands import (
    calibrate_cmd,
    deployment_validate_cmd,
    endpoints_up_cmd,
    run_cmd,
    serve_cmd,
)
from llmoffload.scenario import Scenario, load_scenario, with_reward
from llmoffload.schedulers import SCHEDULERS

EXIT_BAD_INPUT = 2  # the same code Typer uses for usage errors
MAX_SEED = 2**64 - 1  # torch.manual_seed's largest


class ReportingGroup(TyperGroup):
    """Turns OffloadError, OSError and a bad option value (out of its range, missing) from
    any subcommand into one line on stderr, exit 2, instead of Typer's box.

    Catching here, rather than in ``main``, makes in-process runs (tests,
    ``CliRunner``) behave exactly like the installed command.
    """

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except typer.BadParameter as exc:
            message = exc.format_message()
        except OffloadError as exc:
            message = str(exc)
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # a closed pipe: let Typer exit quietly
                raise
            message = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
        typer.echo(f"error: {' '.join(message.split())}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT)


app = typer.Typer(
    cls=ReportingGroup,
    help="Fine-grained LLM inference offloading across edge servers and a cloud.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
scenario_app = typer.Typer(
    help="Inspect and check scenario files.", no_args_is_help=True, add_completion=False
)
app.add_typer(scenario_app, name="scenario")


def main() -> None:
    """Entry point of the ``llmoffload`` script."""
    app()


def print_version(wanted: bool) -> None:
    if wanted:
        typer.echo(f"llmoffload {metadata.version('llmoffload')}")
        raise typer.Exit()


@app.callback()
def options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """The options before any command (the group's help is the app's)."""


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def table(header: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "  ") -> str:
    """Plain aligned columns: numbers to the right, everything else to the left."""
    body = [[str(c) for c in row] for row in rows]
    cells = [list(header), *body]
    widths = [max(len(row[k]) for row in cells) for k in range(len(header))]
    numeric = [bool(body) and all(is_number(row[k]) for row in body) for k in range(len(header))]
    lines = [
        indent
        + "  ".join(
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(row, widths, numeric, strict=True)
        ).rstrip()
        for row in cells
    ]
    return "\n".join(lines)


def db(ratio: float) -> float:
    return 10.0 * math.log10(ratio) if ratio > 0 else -math.inf


def describe_scenario(sc: Scenario) -> str:
    """Every number of a scenario, and the device-edge rates they imply."""
    net, ch, load = sc.network, sc.network.channel, sc.workload
    latency = {"span": "max EN - min ST + downlink", "arrival": "from the task's arrival"}
    out = [
        f"scenario {sc.name}",
        f"  gamma {sc.gamma:g}, T_max {sc.t_max_s:g} s, latency {sc.latency} "
        f"({latency[sc.latency]})",
        "",
        "servers",
        table(
            ["name", "kind", "GHz", "$/GHz", "slots", "modalities"],
            [
                [s.name, s.kind, s.ghz, s.usd_per_ghz, s.slots or "any", ", ".join(s.modalities)]
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
        f"  {load.cycles_per_bit:g} CPU cycles per input bit",
        table(
            ["modality", "input kbit", "output kbit"],
            [
                [
                    m,
                    f"{s.input_kbit.low:g}-{s.input_kbit.high:g}",
                    f"{s.output_kbit.low:g}-{s.output_kbit.high:g}",
                ]
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
        up, down = link_rates(sc, [d] * len(edges))
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


@scenario_app.command("show")
def scenario_show(
    name_or_file: Annotated[
        str, typer.Argument(metavar="NAME_OR_FILE", help="A built-in scenario or a YAML file.")
    ],
) -> None:
    """Print a scenario and the device-edge link rates it implies."""
    typer.echo(describe_scenario(load_scenario(name_or_file)))


@scenario_app.command("validate")
def scenario_validate(
    file: Annotated[str, typer.Argument(metavar="FILE", help="The scenario YAML file to check.")],
) -> None:
    """Check a scenario file; print 'ok: ...' or the error."""
    sc = load_scenario(file)
    typer.echo(f"ok: {sc.name} ({len(sc.servers)} servers, {len(sc.workflows)} workflows)")


@app.command("instance")
def instance_cmd(
    out: Annotated[Path, typer.Option("--out", help="JSON file to write.")],
    scenario: Annotated[str, typer.Option(help="Built-in name or YAML file.")] = "paper",
    seed: Annotated[int, typer.Option(min=0, help="Seed of numpy's default_rng.")] = 0,
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


@dataclass(frozen=True)
class Outcome:
    """What a policy produced; the CP-SAT solution too when the policy is 'optimal'."""

    schedule: Schedule
    solution: optimal.Solution | None = None


Policy = Callable[[Instance, np.random.Generator], Outcome]


def resolve_policy(policy: str, time_limit_s: float) -> Policy:
    """The scheduler that ``--policy`` names, checked before any work is done."""
    if policy == "optimal":

        def solve(inst: Instance, rng: np.random.Generator) -> Outcome:
            solution = optimal.solve(inst, time_limit_s=time_limit_s)
            return Outcome(solution.schedule, solution)

        return solve
    if Path(policy).is_dir():
        from llmoffload.training import trained_policy  # torch only when asked

        schedule = trained_policy(Path(policy))  # a damaged or unsafe checkpoint fails now
        return lambda inst, rng: Outcome(schedule(inst))
    if policy not in SCHEDULERS:
        raise OffloadError(
            f"unknown policy '{policy}' (choose from {', '.join(SCHEDULERS)}, or a run directory)"
        )
    scheduler = SCHEDULERS[policy]
    return lambda inst, rng: Outcome(evaluate(inst, scheduler(inst, rng)))


def schedule_json(policy: str, path: Path, inst: Instance, outcome: Outcome) -> dict[str, Any]:
    """The machine-readable result: dispatch order, every run, every task, the totals."""
    sched, names = outcome.schedule, [s.name for s in inst.scenario.servers]
    result: dict[str, Any] = {
        "policy": policy,
        "instance": str(path),
        "order": [list(d) for d in sched.order],
        "runs": [
            {
                "task": r.task,
                "subtask": r.subtask,
                "name": inst.tasks[r.task].subtasks[r.subtask].name,
                "server": r.server,
                "server_name": names[r.server],
                "start": r.start,
                "upload": r.upload,
                "compute": r.compute,
                "end": r.end,
                "cost": r.cost,
            }
            for r in sched.runs
        ],
        "tasks": [
            {
                "workflow": task.workflow,
                "arrival_s": task.arrival_s,
                "latency": res.latency,
                "cost": res.cost,
                "slack": res.slack,
                "objective": res.objective,
            }
            for task, res in zip(inst.tasks, sched.tasks, strict=True)
        ],
        "objective": sched.objective,
        "deadline_misses": sched.deadline_misses,
    }
    if outcome.solution is not None:
        sol = outcome.solution
        result.update(bound=sol.bound, gap=sol.gap, proven=sol.proven)
    return result


def schedule_text(policy: str, path: Path, inst: Instance, outcome: Outcome) -> str:
    """The readable result: one row per run in dispatch order, one per task, the totals."""
    sched, sc = outcome.schedule, inst.scenario
    runs = [
        [
            r.task,
            inst.tasks[r.task].subtasks[r.subtask].name,
            sc.servers[r.server].name,
            f"{r.start:.4f}",
            f"{r.upload:.4f}",
            f"{r.compute:.4f}",
            f"{r.end:.4f}",
            f"{r.cost:.6f}",
        ]
        for r in sched.runs
    ]
    tasks = [
        [
            i,
            t.workflow,
            f"{t.arrival_s:.4f}",
            f"{res.latency:.4f}",
            f"{res.cost:.6f}",
            f"{res.slack:.4f}",
            f"{res.objective:.6f}",
        ]
        for i, (t, res) in enumerate(zip(inst.tasks, sched.tasks, strict=True))
    ]
    out = [
        f"policy {policy} on {path} (scenario {sc.name}, {len(inst.tasks)} tasks)",
        "",
        "runs in dispatch order (seconds, $)",
        table(
            ["task", "subtask", "server", "start", "upload", "compute", "end", "cost"],
            runs,
        ),
        "",
        "tasks",
        table(["task", "workflow", "arrival", "latency", "cost", "slack", "objective"], tasks),
        "",
        f"objective {sched.objective:.6f} (sum of {sc.gamma:g} T_i + {1 - sc.gamma:g} Cost_i)",
        f"deadline misses {sched.deadline_misses} of {len(inst.tasks)} (T_max {sc.t_max_s:g} s)",
    ]
    if outcome.solution is not None:
        sol = outcome.solution
        out.append(
            f"lower bound {sol.bound:.6f}, gap {sol.gap:.2%}, "
            f"optimality {'proven' if sol.proven else 'not proven'}"
        )
    return "\n".join(out)


@app.command("schedule")
def schedule_cmd(
    instance_file: Annotated[
        Path, typer.Argument(metavar="FILE.json", help="An instance file, as 'instance' writes.")
    ],
    policy: Annotated[
        str, typer.Option(help=f"One of: {', '.join(SCHEDULERS)}, or a trained run directory.")
    ],
    seed: Annotated[int, typer.Option(min=0, help="Seed of numpy's default_rng.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    gantt: Annotated[
        Path | None, typer.Option(help="Also draw a Gantt chart (.png, .pdf or .svg).")
    ] = None,
    time_limit: Annotated[
        float, typer.Option(min=0.001, help="CP-SAT time limit in seconds (optimal only).")
    ] = 10.0,
) -> None:
    """Schedule an instance with a policy and report when, where and at what cost it ran."""
    run = resolve_policy(policy, time_limit)
    inst = load_instance(instance_file)
    if gantt is not None:
        from llmoffload.gantt import check_format, draw_gantt  # matplotlib only when asked

        check_format(gantt)
        check_output(gantt)
    outcome = run(inst, np.random.default_rng(seed))
    if gantt is not None:
        sched = outcome.schedule
        title = (
            f"{policy} on {instance_file.name}: objective {sched.objective:.4f}, "
            f"{sched.deadline_misses} deadline misses"
        )
        draw_gantt(inst, sched, gantt, title)
    if as_json:
        typer.echo(json.dumps(schedule_json(policy, instance_file, inst, outcome)))
    else:
        typer.echo(schedule_text(policy, instance_file, inst, outcome))


LOCKSTEP_HELP = (
    "Training episodes played at once, one forward of the networks for all (default 1: "
    "one by one; more is faster, and cost UCB-COMA and COMA reward, see docs)."
)
PROTOCOL_HELP = (
    "paper: learn which actions are valid from the penalties, as the paper (an agent does "
    "not retry an action refused in the same state); masked: act and learn on valid "
    "actions only (CS-UCB masks under both)."
)


@app.command("train")
def train_cmd(
    out: Annotated[Path, typer.Option("--out", help="Run directory to write.")],
    algo: Annotated[
        str, typer.Option(help="ucb-coma, coma, mappo, maddpg, cs-ucb or random (the paper's).")
    ] = "ucb-coma",
    scenario: Annotated[str, typer.Option(help="Built-in name or YAML file.")] = "paper",
    episodes: Annotated[int, typer.Option(min=1, help="Training episodes (paper: 700).")] = 700,
    seed: Annotated[
        int, typer.Option(min=0, max=MAX_SEED, help="Seed every random draw flows from.")
    ] = 0,
    failure_prob: Annotated[
        float, typer.Option(help="Per-step probability that an edge is down, in [0, 1).")
    ] = 0.0,
    protocol: Annotated[
        str, typer.Option(help=f"{PROTOCOL_HELP} --set mask=... overrides it.")
    ] = "paper",
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a hyperparameter, KEY=VALUE (repeatable)."),
    ] = None,
    lockstep: Annotated[int | None, typer.Option(min=1, help=LOCKSTEP_HELP)] = None,
    reward: Annotated[
        str | None,
        typer.Option(help="Reward form: paper or objective (default: the scenario's)."),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Clear an earlier run's files from --out first.")
    ] = False,
) -> None:
    """Train a learner; writes episodes.csv, checkpoint.pt, reward_curve.png, config.json."""
    from llmoffload.training import LOCKSTEP, make_config, train  # torch only when asked

    config = make_config(algo, parse_settings(settings or []), protocol)
    sc = load_scenario(scenario)
    sc = with_reward(sc, reward) if reward else sc
    lockstep = lockstep or LOCKSTEP
    rows = train(
        algo, sc, episodes, seed, out, config, failure_prob, lockstep=lockstep, force=force
    )
    tail = rows[-min(50, len(rows)) :]
    mean = sum(r["reward"] for r in tail) / len(tail)
    typer.echo(
        f"trained {algo} for {episodes} episodes on {sc.name} (seed {seed}); "
        f"mean reward of the last {len(tail)}: {mean:.2f}; wrote {out}/"
    )


def parse_settings(settings: list[str]) -> dict[str, str]:
    pairs = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise OffloadError(f"--set {item}: expected KEY=VALUE")
        pairs[key.strip()] = value.strip()
    return pairs


@app.command("evaluate")
def evaluate_cmd(
    run: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A directory 'train' wrote.")],
    episodes: Annotated[int, typer.Option(min=1, help="Held-out episodes.")] = 200,
    time_limit: Annotated[
        float, typer.Option(min=0.001, help="CP-SAT time limit per instance, seconds.")
    ] = 10.0,
) -> None:
    """Greedy policy on held-out instances, beside HEFT and Optimal; writes evaluation.csv."""
    from llmoffload.training import evaluate_run, load_run  # torch only when asked

    load_run(run)  # a clear error before any work if the run is missing
    rows = evaluate_run(run, episodes, time_limit)
    typer.echo(
        f"{run}: {episodes} held-out episodes in evaluation mode (no exploration, no learning)"
    )
    typer.echo(table(["metric", "mean", "sd"], evaluation_table(rows)))


def evaluation_table(rows: list[dict[str, float]]) -> list[list[str]]:
    """Mean and spread of each metric, and the per-instance ratios to HEFT and Optimal."""
    columns = {
        "objective": [r["objective"] for r in rows],
        "latency (s)": [r["latency"] for r in rows],
        "cost ($)": [r["cost"] for r in rows],
        "deadline misses": [r["deadline_misses"] for r in rows],
        "ratio to HEFT": [r["objective"] / r["heft"] for r in rows],
        "ratio to Optimal": [r["objective"] / r["optimal"] for r in rows],
    }
    return [
        [name, f"{np.mean(v):.4f}", f"{np.std(v, ddof=1) if len(v) > 1 else 0.0:.4f}"]
        for name, v in columns.items()
    ]


STUDIES = ("paper", "beyond")


@app.command("reproduce")
def reproduce_cmd(
    study: Annotated[
        str,
        typer.Option(
            help="paper: the paper's Figs. 4-9; beyond: every learner, masked and rewarded by "
            "the objective, on the scenarios where scheduling matters (docs/study.md)."
        ),
    ] = "paper",
    quick: Annotated[
        bool, typer.Option(help="2 seeds, fewer episodes and held-out: minutes, not hours.")
    ] = False,
    seeds: Annotated[int | None, typer.Option(min=1, help="Seeds 0..K-1 (default 3).")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Local worker processes (default: every core).")
    ] = None,
    ray: Annotated[
        str | None, typer.Option(help="Run the runs as tasks on this Ray cluster (host:port).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Where runs, figures and REPORT.md go (default runs/reproduce, with --quick "
            "runs/quick; --study beyond: runs/beyond, runs/beyond-quick)."
        ),
    ] = None,
    scenario: Annotated[
        list[str] | None,
        typer.Option(
            help="Base scenario: built-in name or file (default paper); with --study beyond, "
            "a scenario to study (repeatable; default dear-cloud, slow-uplink, contended)."
        ),
    ] = None,
    episodes: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Training episodes per run (default 700, with --quick 100; --study beyond: "
            "700, on contended 190, with --quick 50).",
        ),
    ] = None,
    eval_episodes: Annotated[
        int | None, typer.Option(min=1, help="Held-out instances per run.")
    ] = None,
    time_limit: Annotated[
        float | None, typer.Option(min=0.001, help="CP-SAT seconds per held-out instance.")
    ] = None,
    method: Annotated[
        list[str] | None,
        typer.Option(
            help="A learner to run (repeatable; default all six, for --study beyond all but "
            "random)."
        ),
    ] = None,
    bandwidth: Annotated[
        list[float] | None,
        typer.Option(help="A bandwidth W in MHz (repeatable; --study paper only)."),
    ] = None,
    deadline: Annotated[
        list[float] | None,
        typer.Option(help="A deadline T_max in s (repeatable; --study paper only)."),
    ] = None,
    failure_prob: Annotated[
        list[float] | None,
        typer.Option(help="An edge failure probability (repeatable; --study paper only)."),
    ] = None,
    protocol: Annotated[
        list[str] | None,
        typer.Option(
            help=f"Report only this protocol (repeatable; default both; --study paper only). "
            f"{PROTOCOL_HELP}"
        ),
    ] = None,
    lockstep: Annotated[int | None, typer.Option(min=1, help=LOCKSTEP_HELP)] = None,
) -> None:
    """Reproduce the paper's Figs. 4-9, or run the study beyond it: every run cached;
    figures and REPORT.md (and the figures' CSVs for the paper)."""
    import time
    from dataclasses import replace
    from functools import partial

    from llmoffload.sweep import execute

    began = time.perf_counter()
    if study not in STUDIES:
        raise OffloadError(f"unknown study '{study}' (choose from {', '.join(STUDIES)})")
    given = {
        "seeds": tuple(range(seeds)) if seeds else None,
        "episodes": episodes,
        "eval_episodes": eval_episodes,
        "time_limit_s": time_limit,
        "methods": tuple(method) if method else None,
        "lockstep": lockstep,
    }
    paper_only = {
        "--bandwidth": bandwidth,
        "--deadline": deadline,
        "--failure-prob": failure_prob,
        "--protocol": protocol,
    }
    if study == "beyond":
        from llmoffload import study_report
        from llmoffload.study import QUICK_STUDY, Study, plan, rliable

        if any(paper_only.values()):
            used = ", ".join(k for k, v in paper_only.items() if v)
            raise OffloadError(f"{used}: for --study paper only (beyond sets its own settings)")
        rliable()  # a missing extra fails now, not after hours of runs
        given["scenarios"] = tuple(scenario) if scenario else None
        chosen = replace(
            QUICK_STUDY if quick else Study(), **{k: v for k, v in given.items() if v is not None}
        )
        out = out or Path("runs/beyond-quick" if quick else "runs/beyond")
        specs = plan(chosen)
        write_report = partial(study_report.write_report, chosen)
    else:
        from llmoffload import report
        from llmoffload.sweep import QUICK, Grid
        from llmoffload.sweep import plan as sweep_plan

        if scenario and len(scenario) > 1:
            raise OffloadError("--study paper sweeps one base scenario: give --scenario once")
        given |= {
            "scenario": scenario[0] if scenario else None,
            "bandwidths_mhz": tuple(bandwidth) if bandwidth else None,
            "deadlines_s": tuple(deadline) if deadline else None,
            "failure_probs": tuple(failure_prob) if failure_prob else None,
            "protocols": tuple(dict.fromkeys(protocol)) if protocol else None,
        }
        grid = replace(
            QUICK if quick else Grid(), **{k: v for k, v in given.items() if v is not None}
        )
        if grid.failure_method not in grid.methods:  # Fig. 9 falls to the first method swept
            grid = replace(grid, failure_method=grid.methods[0])
        out = out or Path("runs/quick" if quick else "runs/reproduce")
        specs = sweep_plan(grid)
        write_report = partial(report.write_report, grid)

    outcome = execute(specs, out, workers or os.cpu_count() or 1, ray)  # makes out
    write_report(specs, outcome, out)
    cached = len(outcome.results) - outcome.ran
    typer.echo(
        f"{len(specs)} runs: {outcome.ran} ran, {cached} cached, {len(outcome.failures)} failed "
        f"({time.perf_counter() - began:.0f} s). Figures and REPORT.md: {out}/"
    )
    if outcome.failures:
        raise typer.Exit(1)


# The runtime on real endpoints (the [runtime] extra): see docs/runtime.md.
app.command("run")(run_cmd)
app.command("calibrate")(calibrate_cmd)
app.command("serve")(serve_cmd)
deployment_app = typer.Typer(
    help="Check deployment files.", no_args_is_help=True, add_completion=False
)
deployment_app.command("validate")(deployment_validate_cmd)
app.add_typer(deployment_app, name="deployment")
endpoints_app = typer.Typer(
    help="Local llama.cpp servers for a deployment (needs the local extra).",
    no_args_is_help=True,
    add_completion=False,
)
endpoints_app.command("up")(endpoints_up_cmd)
app.add_typer(endpoints_app, name="endpoints")
