"""``train`` a learner and ``evaluate`` a trained run on held-out instances."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer
from typer.core import TyperCommand, TyperOption

from llmoffload.cli.limits import bounds
from llmoffload.display import table
from llmoffload.errors import OffloadError, require
from llmoffload.files import check_output
from llmoffload.model.scenario import load_scenario, with_reward

if TYPE_CHECKING:  # Typer vendors click: its commands take this Context
    from typer._click.core import Context


LOCKSTEP_HELP = (
    "Training episodes played at once, one forward of the networks for all (default 1: "
    "one by one; more is faster, and cost UCB-COMA and COMA reward, see docs)."
)
LEARNERS_HELP = "{learners}"  # filled in from marl.registry.LEARNERS when help is shown
PROTOCOL_HELP = (
    "paper: learn which actions are valid from the penalties, as the paper (an agent does "
    "not retry an action refused in the same state); masked: act and learn on valid "
    "actions only (CS-UCB masks under both)."
)


class LearnerHelp(TyperCommand):
    """A command whose options' help names the learners: ``{learners}`` is filled in from
    ``marl.registry.LEARNERS`` only when the help is shown, since the registry imports
    PyTorch, which no other command should wait for (or need)."""

    def format_options(self, ctx: Context, formatter: Any) -> None:
        for param in self.params:
            if isinstance(param, TyperOption) and param.help:
                param.help = param.help.replace(LEARNERS_HELP, learner_names())
        super().format_options(ctx, formatter)


def learner_names() -> str:
    """Every registered learner, the paper's first, or how to get them."""
    try:
        require("learn", "train")
    except OffloadError:
        return "those of the learn extra (pip install 'llmoffload[learn]')"
    from llmoffload.marl.registry import LEARNERS, PAPER

    beyond = [name for name in LEARNERS if name not in PAPER]
    return f"{', '.join(PAPER)} (the paper's), {', '.join(beyond)}"


def train_cmd(
    out: Annotated[Path, typer.Option("--out", help="Run directory to write.")],
    algo: Annotated[
        str,
        typer.Option(help=f"A learner: {LEARNERS_HELP}."),
    ] = "ucb-coma",
    scenario: Annotated[str, typer.Option(help="Built-in name or YAML file.")] = "paper",
    episodes: Annotated[
        int, typer.Option(**bounds("episodes"), help="Training episodes (paper: 700).")
    ] = 700,
    seed: Annotated[
        int, typer.Option(**bounds("seed"), help="Seed every random draw flows from.")
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
    lockstep: Annotated[int | None, typer.Option(**bounds("lockstep"), help=LOCKSTEP_HELP)] = None,
    reward: Annotated[
        str | None,
        typer.Option(help="Reward form: paper or objective (default: the scenario's)."),
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            help="none or bc: clone the CP-SAT expert's choices before RL (--set init=...)."
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            **bounds("workers"), help="Processes solving the expert's instances (init bc)."
        ),
    ] = 2,
    force: Annotated[
        bool, typer.Option(help="Clear an earlier run's files from --out first.")
    ] = False,
) -> None:
    """Train a learner; writes episodes.csv, checkpoint.pt, reward_curve.png, config.json."""
    require("learn", "train")
    from llmoffload.experiments.training import (  # torch only when asked
        LOCKSTEP,
        make_config,
        train,
    )

    overrides = parse_settings(settings or [])
    if init is not None:
        check_init(algo, init, overrides)
        overrides["init"] = init
    config = make_config(algo, overrides, protocol)
    sc = load_scenario(scenario)
    sc = with_reward(sc, reward) if reward else sc
    lockstep = lockstep or LOCKSTEP
    rows = train(
        algo,
        sc,
        episodes,
        seed,
        out,
        config,
        failure_prob,
        lockstep=lockstep,
        force=force,
        workers=workers,
    )
    tail = rows[-min(50, len(rows)) :]
    mean = sum(r["reward"] for r in tail) / len(tail)
    typer.echo(
        f"trained {algo} for {episodes} episodes on {sc.name} (seed {seed}); "
        f"mean reward of the last {len(tail)}: {mean:.2f}; wrote {out}/"
    )


def check_init(algo: str, init: str, overrides: dict[str, str]) -> None:
    """``--init`` is ``--set init=``: refuse both given differently, or a learner without
    a warm start, naming the flag the user typed."""
    from llmoffload.marl.ranges import settings_of
    from llmoffload.marl.registry import LEARNERS

    if overrides.get("init", init) != init:
        raise OffloadError(f"--init {init} and --set init={overrides['init']} disagree: give one")
    if algo in LEARNERS and "init" not in settings_of(LEARNERS[algo].config):
        raise OffloadError(f"--init: {algo} has no warm start (it never clones the expert)")


def parse_settings(settings: list[str]) -> dict[str, str]:
    pairs = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise OffloadError(f"--set {item}: expected KEY=VALUE")
        pairs[key.strip()] = value.strip()
    return pairs


def evaluate_cmd(
    run: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A directory 'train' wrote.")],
    episodes: Annotated[int, typer.Option(**bounds("episodes"), help="Held-out episodes.")] = 20,
    time_limit: Annotated[
        float, typer.Option(**bounds("time_limit"), help="CP-SAT time limit per instance, seconds.")
    ] = 2.0,
) -> None:
    """Greedy policy on held-out instances, beside HEFT, the search at equal and ten times
    the policy's planning time, Optimal and the lower bound; writes evaluation.csv."""
    require("learn", "evaluate")
    from llmoffload.experiments.training import evaluate_run, load_run  # torch only when asked

    load_run(run)  # a clear error before any work if the run is missing
    check_output(run / "evaluation.csv")  # and where it writes, before minutes of work
    most = episodes * time_limit
    typer.echo(
        f"{episodes} held-out instances, each planned by the run, the search (at its time and "
        f"10x), HEFT and Optimal (up to {time_limit:g} s): Optimal alone up to "
        + (f"{most:.0f} s" if most < 120 else f"{most / 60:.1f} min"),
        err=True,
    )
    rows = evaluate_run(run, episodes, time_limit)
    typer.echo(
        f"{run}: {episodes} held-out episodes in evaluation mode (no exploration, no learning)"
    )
    typer.echo(table(["metric", "mean", "sd"], evaluation_table(rows)))


def evaluation_table(rows: list[dict[str, float]]) -> list[list[str]]:
    """Mean and spread of each metric, and the per-instance ratios to HEFT, the search at
    the policy's own planning time and at ten times it, Optimal, and the lower bound (its
    gap: how far above the bound, relative to the objective)."""
    columns = {
        "objective": [r["objective"] for r in rows],
        "latency (s)": [r["latency"] for r in rows],
        "cost ($)": [r["cost"] for r in rows],
        "deadline misses": [r["deadline_misses"] for r in rows],
        "plan s": [r["plan_s"] for r in rows],
        "ratio to HEFT": [r["objective"] / r["heft"] for r in rows],
        "ratio to search, same time": [r["objective"] / r["search"] for r in rows],
        "ratio to search, 10x time": [r["objective"] / r["search_10x"] for r in rows],
        "ratio to Optimal": [r["objective"] / r["optimal"] for r in rows],
        "lower bound": [r["bound"] for r in rows],
        "gap to the bound": [1 - r["bound"] / r["objective"] for r in rows],
    }
    return [
        [name, f"{np.mean(v):.4f}", f"{np.std(v, ddof=1) if len(v) > 1 else 0.0:.4f}"]
        for name, v in columns.items()
    ]
