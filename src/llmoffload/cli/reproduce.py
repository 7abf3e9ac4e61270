"""``reproduce``: the paper's Figs. 4-9, or the study beyond it, as one cached sweep."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from llmoffload.cli.limits import bounds
from llmoffload.cli.train import LOCKSTEP_HELP, PROTOCOL_HELP
from llmoffload.errors import OffloadError, require
from llmoffload.files import check_output

STUDIES = ("paper", "beyond")


def reproduce_cmd(
    study: Annotated[
        str,
        typer.Option(
            help="paper: the paper's Figs. 4-9; beyond: every learner, masked and rewarded by "
            "the objective, on the scenarios where scheduling matters (docs/study.md)."
        ),
    ] = "paper",
    quick: Annotated[
        bool,
        typer.Option(
            help="2 seeds, 2 points per axis, 50 episodes, 10 held-out: about 90 s on 2 cores "
            "(--study beyond: 2 seeds, 50 episodes, 5 held-out)."
        ),
    ] = False,
    seeds: Annotated[
        int | None, typer.Option(**bounds("seeds"), help="Seeds 0..K-1 (default 3).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(**bounds("workers"), help="Local worker processes (default: every core)."),
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
            **bounds("episodes"),
            help="Training episodes per run (default 700, with --quick 50; --study beyond: "
            "700, on contended 190, with --quick 50).",
        ),
    ] = None,
    eval_episodes: Annotated[
        int | None, typer.Option(**bounds("episodes"), help="Held-out instances per run.")
    ] = None,
    time_limit: Annotated[
        float | None,
        typer.Option(**bounds("time_limit"), help="CP-SAT seconds per held-out instance."),
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
    lockstep: Annotated[int | None, typer.Option(**bounds("lockstep"), help=LOCKSTEP_HELP)] = None,
) -> None:
    """Reproduce the paper's Figs. 4-9, or run the study beyond it: every run cached;
    figures and REPORT.md (and the figures' CSVs for the paper)."""
    import time
    from dataclasses import replace
    from functools import partial

    require("learn", "reproduce")
    from llmoffload.experiments.sweep import execute, outdated

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
        from llmoffload.experiments import study_report
        from llmoffload.experiments.study import QUICK_STUDY, Study, plan, rliable

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
        from llmoffload.experiments import report
        from llmoffload.experiments.sweep import QUICK, Grid
        from llmoffload.experiments.sweep import plan as sweep_plan

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

    check_sweep_dir(out)
    changes = outdated(specs, out)
    if changes:
        typer.echo(
            f"{out} holds runs of other code (changed: {', '.join(changes)}): rerunning them"
        )
    swept = execute(specs, out, workers or os.cpu_count() or 1, ray)  # makes out
    write_report(specs, swept, out)
    cached = len(swept.results) - swept.ran
    typer.echo(
        f"{len(specs)} runs: {swept.ran} ran, {cached} cached, {len(swept.failures)} failed "
        f"({time.perf_counter() - began:.0f} s). Figures and REPORT.md: {out}/"
    )
    if swept.failures:
        raise typer.Exit(1)


def check_sweep_dir(out: Path) -> None:
    """``train``'s rule for an output directory, where a sweep resumes: not a link, not a
    file, and, if not empty, a sweep's own (it holds ``runs/``), so a mistyped --out
    never writes figures beside someone else's files."""
    check_output(out, directory=True)
    found = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if found and "runs" not in found:
        shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        raise OffloadError(f"{out}: holds files no sweep wrote ({shown}); choose another --out")
