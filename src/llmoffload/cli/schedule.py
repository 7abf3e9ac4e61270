"""``schedule``: one instance, one policy; when, where and at what cost each subtask ran."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from llmoffload.cli.limits import bounds
from llmoffload.display import table
from llmoffload.experiments.policies import resolve_policy
from llmoffload.files import check_output
from llmoffload.model.instance import Instance, load_instance
from llmoffload.schedulers.registry import SCHEDULERS, Outcome
from llmoffload.schedulers.search import DEFAULT, Budget


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
    if outcome.evaluations is not None:
        result["evaluations"] = outcome.evaluations
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
    if outcome.evaluations is not None:
        out.append(f"search: {outcome.evaluations} evaluations")
    return "\n".join(out)


def schedule_cmd(
    instance_file: Annotated[
        Path, typer.Argument(metavar="FILE.json", help="An instance file, as 'instance' writes.")
    ],
    policy: Annotated[
        str, typer.Option(help=f"One of: {', '.join(SCHEDULERS)}, or a trained run directory.")
    ],
    seed: Annotated[int, typer.Option(**bounds("seed"), help="Seed of numpy's default_rng.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    gantt: Annotated[
        Path | None, typer.Option(help="Also draw a Gantt chart (.png, .pdf or .svg).")
    ] = None,
    time_limit: Annotated[
        float,
        typer.Option(**bounds("time_limit"), help="CP-SAT time limit in seconds (optimal only)."),
    ] = 10.0,
    budget: Annotated[
        str,
        typer.Option(help="The search's budget: evaluations ('2000') or seconds ('0.5s')."),
    ] = str(DEFAULT),
) -> None:
    """Schedule an instance with a policy and report when, where and at what cost it ran."""
    run = resolve_policy(policy, time_limit, Budget.parse(budget))
    inst = load_instance(instance_file)
    if gantt is not None:
        from llmoffload.model.gantt import check_format  # matplotlib only when asked

        check_format(gantt)
        check_output(gantt)
    outcome = run(inst, np.random.default_rng(seed))
    if gantt is not None:
        from llmoffload.model.gantt import draw_gantt

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
