"""REPORT.md and the figures of the study beyond the paper (``study.py``; docs/study.md).

Per scenario: a table of each method's IQM ratio to Optimal and to the best classic
with 95% intervals, whether the issue's target holds there, a performance profile of
the ratios to Optimal, and the learners' training curves.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmoffload.experiments.plots import performance_profile, reward_curve
from llmoffload.experiments.study import (
    BOOTSTRAP_SEED,
    PROTOCOL,
    REWARD,
    TARGET,
    Estimate,
    Scores,
    Study,
    episodes,
    iqm_intervals,
    objectives,
    profiles,
    ratios,
    scenario_of,
)
from llmoffload.experiments.sweep import REFERENCES, RunSpec, SweepResults
from llmoffload.files import write_text_atomic

STUDY_FILE = "study.json"

TAUS = 200  # thresholds a performance profile is drawn at


@dataclass(frozen=True)
class Row:
    """One method's line of a scenario's table."""

    method: str
    to_optimal: Estimate | None  # None where no run of it has Optimal beside it
    to_classic: Estimate | None
    objective: float  # the mean held-out objective over its runs' instances
    runs: int
    train_s: float  # mean wall seconds to train a run (expert data included); 0: none


@dataclass(frozen=True)
class Section:
    """One scenario's share of the report."""

    scenario: str
    setting: str
    rows: list[Row]
    verdict: str
    proven: list[bool]  # per held-out instance: was Optimal's schedule proven optimal
    figures: list[tuple[str, str]]  # (file, what it shows)


def write_report(study: Study, specs: list[RunSpec], outcome: SweepResults, out: Path) -> None:
    """Write each scenario's figures, REPORT.md, and ``study.json``: the study as run, so
    that benchmarks/results.py can plan the same runs and find them in the cache."""
    sections = []
    for name in study.scenarios:
        runs = [s for s in specs if scenario_of(s) == name]
        results = [outcome.results[s.key] for s in runs if s.key in outcome.results]
        setting = f"W = {runs[0].bandwidth_mhz:g} MHz, T_max = {runs[0].deadline_s:g} s"
        sections.append(section(study, name, setting, results, out))
    write_text_atomic(out / "REPORT.md", markdown(study, specs, outcome, sections))
    write_text_atomic(out / STUDY_FILE, json.dumps(asdict(study), indent=1) + "\n")


def section(
    study: Study, name: str, setting: str, results: list[dict[str, Any]], out: Path
) -> Section:
    """One scenario's numbers and its two figures."""
    objs = objectives(results)
    to_optimal = ratios(objs, "optimal")
    vs_optimal = iqm_intervals(to_optimal, study.reps)
    vs_classic = iqm_intervals(ratios(objs, "best-classic"), study.reps)
    rows = [
        Row(
            m,
            vs_optimal.get(m),
            vs_classic.get(m),
            float(np.mean(list(objs[m].values()))),
            len(objs[m]),
            float(np.mean([r.get("train_s", 0.0) for r in results if r["spec"]["method"] == m])),
        )
        for m in (*study.methods, *REFERENCES)
        if m in objs
    ]
    proven = [
        p for r in results if r["spec"]["method"] == "optimal" for p in r["held_out"]["proven"]
    ]
    figures = draw(study, name, to_optimal, results, out)
    return Section(name, setting, rows, verdict(name, rows, study.methods), proven, figures)


def draw(
    study: Study, name: str, to_optimal: Scores, results: list[dict[str, Any]], out: Path
) -> list[tuple[str, str]]:
    """The performance profile of the ratios to Optimal and the learners' training curves
    (mean over seeds, smoothed); returns each figure drawn as (file, what it shows)."""
    drawn = []
    shown = {m: s for m, s in to_optimal.items() if m != "optimal"}
    if shown:
        every = np.concatenate([s.ravel() for s in shown.values()])
        taus = np.geomspace(min(every.min(), 1.0), max(every.max(), 1.01), TAUS)
        fractions, bands = profiles(shown, taus, study.reps)
        path = f"{name}_profile.png"
        performance_profile(taus, fractions, bands, out / path, "tau: objective / Optimal's")
        drawn.append((path, "performance profile of the ratio to Optimal"))
    curves = {
        m: np.array([r["train_reward"] for r in results if r["spec"]["method"] == m])
        for m in study.methods
    }
    curves = {m: c for m, c in curves.items() if len(c)}
    if curves:
        path = f"{name}_training.png"
        reward_curve(curves, out / path)
        drawn.append((path, "training reward"))
    return drawn


def verdict(scenario: str, rows: list[Row], learners: tuple[str, ...]) -> str:
    """Whether the issue's target holds on a scenario, in one plain sentence."""
    target = (
        f"the best learner's IQM ratio to Optimal at most {TARGET:g} and the 95% interval of "
        "its ratio to the best classic entirely below 1"
    )
    judged = [
        (r.method, optimal, classic)
        for r in rows
        if r.method in learners and (optimal := r.to_optimal) and (classic := r.to_classic)
    ]
    if not judged:
        return (
            f"Target ({target}): **not tested** on {scenario}: no learner run has both references."
        )
    best, optimal, classic = min(judged, key=lambda j: j[1].iqm)
    holds = optimal.iqm <= TARGET and classic.high < 1.0
    return (
        f"Target ({target}): **{'holds' if holds else 'does not hold'}** on {scenario}. "
        f"The best learner, {best}, is at {estimate(optimal)} of Optimal and "
        f"{estimate(classic)} of the best classic."
    )


def estimate(e: Estimate | None) -> str:
    return "n/a" if e is None else f"{e.iqm:.4g} [{e.low:.4g}, {e.high:.4g}]"


def markdown(
    study: Study, specs: list[RunSpec], outcome: SweepResults, sections: list[Section]
) -> str:
    """The report: what ran and how to read it, then per scenario the verdict, the table
    and the figures."""
    lines = [
        "# Beyond the paper: the learners where scheduling matters",
        "",
        f"Scenarios: {', '.join(study.scenarios)}, each at its own W and T_max. Learners: "
        f"{', '.join(study.methods)}, under the {PROTOCOL} protocol (acting on valid actions "
        f"only) and rewarded by the objective itself (reward form `{REWARD}`). References: "
        "HEFT, best classic (per instance the best of the classic schedulers) and Optimal "
        f"(CP-SAT, {study.time_limit_s:g} s per instance). Seeds: "
        f"{', '.join(map(str, study.seeds))}. Training episodes: "
        f"{', '.join(f'{episodes(study, n)} on {n}' for n in study.scenarios)}; evaluation: "
        f"{study.eval_episodes} held-out instances per run, the same for every method of a seed.",
        "",
        "A ratio is a method's held-out objective over the reference's on the same instance "
        "(below 1: better than the reference). Each cell is the interquartile mean (IQM) of "
        "the ratios over every (seed, instance) with its 95% stratified-bootstrap interval "
        f"(rliable, {study.reps} resamples, seed {BOOTSTRAP_SEED}). Where CP-SAT does not "
        "prove a schedule optimal in its time limit, Optimal is the best schedule it found, "
        "and a learner may beat it. How to read this report: docs/study.md.",
        "",
    ]
    failed = [outcome.failures[s.key] for s in specs if s.key in outcome.failures]
    done = len([s for s in specs if s.key in outcome.results])
    lines.append(f"Runs: {done} of {len(specs)} finished.")
    lines += [f"- failed: {f}" for f in failed]
    header = (
        "| method | ratio to Optimal (IQM [95% CI]) | ratio to best classic (IQM [95% CI]) "
        "| mean objective | runs | train s |"
    )
    for sec in sections:
        lines += ["", f"## {sec.scenario} ({sec.setting})", "", sec.verdict, ""]
        lines.append(
            f"Optimal is proven optimal on {sum(sec.proven)} of {len(sec.proven)} held-out "
            "instances (the rest: the best schedule found)."
        )
        lines += ["", header, "|---|---:|---:|---:|---:|---:|"]
        lines += [
            f"| {r.method} | {estimate(r.to_optimal)} | {estimate(r.to_classic)} "
            f"| {r.objective:.4g} | {r.runs} | {r.train_s:.0f} |"
            for r in sec.rows
        ]
        lines += ["", *(f"![{sec.scenario}: {what}]({path})" for path, what in sec.figures)]
    return "\n".join(lines) + "\n"
