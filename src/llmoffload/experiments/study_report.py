"""REPORT.md and the figures of the study beyond the paper (``study.py``; docs/study.md).

Per scenario: a table of each method's IQM ratio, with 95% intervals, to the best
classic, to the local search given the method's own planning time and ten times it
(each learner's run ran it beside every plan), to the certified lower bound and to
Optimal (CP-SAT's best), with each method's planning seconds; whether the best learner
beats search at equal time and meets the older target against Optimal; a performance
profile of the ratios to the lower bound, and the learners' training curves.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmoffload.errors import OffloadError
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
    held,
    iqm_intervals,
    profiles,
    ratios,
    scenario_of,
)
from llmoffload.experiments.sweep import REFERENCES, RunSpec, SweepResults
from llmoffload.files import write_text_atomic

STUDY_FILE = "study.json"

TAUS = 200  # thresholds a performance profile is drawn at


# the table's ratios: (key, heading); each a method's objective over that reference's
COLUMNS = (
    ("classic", "x best classic"),
    ("search", "x search, same time"),
    ("search_10x", "x search, 10x time"),
    ("bound", "x lower bound"),
    ("optimal", "x Optimal"),
)


@dataclass(frozen=True)
class Row:
    """One method's line of a scenario's table."""

    method: str
    to: dict[str, Estimate]  # per COLUMNS key; absent where no run of it has that reference
    objective: float  # the mean held-out objective over its runs' instances
    runs: int
    train_s: float  # mean wall seconds to train a run (expert data included); 0: none
    plan_s: float  # mean seconds to plan one held-out instance
    search_s: float | None  # mean seconds the search beside it took (its start may be longer)

    @property
    def to_classic(self) -> Estimate | None:
        return self.to.get("classic")

    @property
    def to_optimal(self) -> Estimate | None:
        return self.to.get("optimal")


@dataclass(frozen=True)
class Section:
    """One scenario's share of the report."""

    scenario: str
    setting: str
    rows: list[Row]
    verdict: str
    proven: list[bool]  # per held-out instance: was Optimal's schedule proven optimal
    figures: list[tuple[str, str]]  # (file, what it shows)


def read_study(out: Path) -> Study:
    """The study a directory holds the runs of, as its ``study.json`` says; one line if
    there is none."""
    saved = out / STUDY_FILE
    if not saved.is_file():
        raise OffloadError(
            f"{saved} not found: run `llmoffload reproduce --study beyond --out {out}` "
            "(with the options you want) first"
        )
    fields: dict[str, Any] = json.loads(saved.read_text())
    tuples = {k: tuple(v) for k, v in fields.items() if isinstance(v, list)}
    return Study(**{**fields, **tuples})


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
    objs = held(results)
    bound = held(results, "bound").get("optimal", {})
    scores = {
        "classic": ratios(objs, "best-classic"),
        "search": ratios(objs, held(results, "search")),
        "search_10x": ratios(objs, held(results, "search_10x")),
        "bound": ratios(objs, {m: bound for m in objs}),
        "optimal": ratios(objs, "optimal"),
    }
    estimates = {key: iqm_intervals(s, study.reps) for key, s in scores.items()}
    plan_s, search_s = held(results, "plan_s"), held(results, "search_s")

    def mean(by_seed: dict[int, np.ndarray]) -> float:
        return float(np.mean(np.concatenate(list(by_seed.values()))))

    rows = [
        Row(
            m,
            {key: e[m] for key, e in estimates.items() if m in e},
            mean(objs[m]),
            len(objs[m]),
            float(np.mean([r.get("train_s", 0.0) for r in results if r["spec"]["method"] == m])),
            mean(plan_s[m]) if m in plan_s else float("nan"),
            mean(search_s[m]) if m in search_s else None,
        )
        for m in (*study.methods, *REFERENCES)
        if m in objs
    ]
    proven = [
        p for r in results if r["spec"]["method"] == "optimal" for p in r["held_out"]["proven"]
    ]
    figures = draw(study, name, scores["bound"], results, out)
    verdicts = f"{equal_time(name, rows, study.methods)}\n\n{verdict(name, rows, study.methods)}"
    return Section(name, setting, rows, verdicts, proven, figures)


def draw(
    study: Study, name: str, to_bound: Scores, results: list[dict[str, Any]], out: Path
) -> list[tuple[str, str]]:
    """The performance profile of the ratios to the certified lower bound and the
    learners' training curves (mean over seeds, smoothed); returns each figure drawn as
    (file, what it shows)."""
    drawn = []
    if to_bound:
        every = np.concatenate([s.ravel() for s in to_bound.values()])
        taus = np.geomspace(1.0, max(every.max(), 1.01), TAUS)
        fractions, bands = profiles(to_bound, taus, study.reps)
        path = f"{name}_profile.png"
        performance_profile(taus, fractions, bands, out / path, "tau: objective / lower bound")
        drawn.append((path, "performance profile of the ratio to the certified lower bound"))
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


def equal_time(scenario: str, rows: list[Row], learners: tuple[str, ...]) -> str:
    """Whether the best learner beats the search at equal time on a scenario: only where
    the 95% interval of its ratio to the search given its own planning time is below 1."""
    judged = [r for r in rows if r.method in learners and "search" in r.to]
    if not judged:
        return f"Equal time: **not tested** on {scenario}: no learner run has the search beside it."
    best = min(judged, key=lambda r: r.to["search"].iqm)
    same = best.to["search"]
    said = "beats" if same.high < 1.0 else ("loses to" if same.low > 1.0 else "does not beat")
    searched = "n/a" if best.search_s is None else f"{best.search_s:.3g} s"
    ten = best.to.get("search_10x")
    bound = best.to.get("bound")
    return (
        f"Equal time: the best learner against the search, {best.method} (planning "
        f"{best.plan_s:.3g} s per instance), **{said}** the search given its time on "
        f"{scenario} ({estimate(same, 4)}; the search took {searched}, its start included); "
        f"against the search at 10x: {estimate(ten, 4)}; above the certified lower bound by "
        f"{estimate(bound, 4)}."
    )


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


def estimate(e: Estimate | None, decimals: int | None = None) -> str:
    """An IQM and its interval: to 4 significant digits, or to ``decimals`` places where
    a sentence turns on whether an end is below 1."""
    if e is None:
        return "n/a"
    f = f".{decimals}f" if decimals is not None else ".4g"
    return f"{e.iqm:{f}} [{e.low:{f}}, {e.high:{f}}]"


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
        "HEFT, best classic (per instance the best of the classic schedulers), the local "
        "search (simulated annealing from best classic) given each learner's own planning "
        "time per instance and ten times it, the certified lower bound (the best of CP-SAT's "
        f"and the LP's) and Optimal (CP-SAT, {study.time_limit_s:g} s per instance). Seeds: "
        f"{', '.join(map(str, study.seeds))}. Training episodes: "
        f"{', '.join(f'{episodes(study, n)} on {n}' for n in study.scenarios)}; evaluation: "
        f"{study.eval_episodes} held-out instances per run, the same for every method of a seed.",
        "",
        "A ratio is a method's held-out objective over the reference's on the same instance "
        "(below 1: better than the reference; against the lower bound, at least 1, and how "
        "far above it is how far from optimal at most). Each cell is the interquartile mean "
        "(IQM) of the ratios over every (seed, instance) with its 95% stratified-bootstrap "
        f"interval (rliable, {study.reps} resamples, seed {BOOTSTRAP_SEED}). Where CP-SAT does not "
        "prove a schedule optimal in its time limit, Optimal is the best schedule it found, "
        "and a learner may beat it. How to read this report: docs/study.md.",
        "",
    ]
    failed = [outcome.failures[s.key] for s in specs if s.key in outcome.failures]
    done = len([s for s in specs if s.key in outcome.results])
    lines.append(f"Runs: {done} of {len(specs)} finished.")
    lines += [f"- failed: {f}" for f in failed]
    header = "| method | " + " | ".join(h for _, h in COLUMNS)
    header += " | mean objective | plan s | search s | runs | train s |"
    for sec in sections:
        lines += ["", f"## {sec.scenario} ({sec.setting})", "", sec.verdict, ""]
        lines.append(
            f"Optimal is proven optimal on {sum(sec.proven)} of {len(sec.proven)} held-out "
            "instances (the rest: the best schedule found)."
        )
        lines += ["", header, "|---|" + "---:|" * (len(COLUMNS) + 5)]
        lines += [
            f"| {r.method} | "
            + " | ".join(estimate(r.to.get(key)) for key, _ in COLUMNS)
            + f" | {r.objective:.4g} | {r.plan_s:.3g} | "
            + ("n/a" if r.search_s is None else f"{r.search_s:.3g}")
            + f" | {r.runs} | {r.train_s:.0f} |"
            for r in sec.rows
        ]
        lines += ["", *(f"![{sec.scenario}: {what}]({path})" for path, what in sec.figures)]
    return "\n".join(lines) + "\n"
