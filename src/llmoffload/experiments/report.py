"""Figs. 4-9, their numbers as CSV, and REPORT.md with the paper's claims checked.

What the figures show (docs/model.md §6; choices in docs/assumptions.md):
- *average reward* of a learner: the mean episode reward of its last training
  episodes (the last 50, or the last half of shorter runs); of HEFT and Optimal,
  the mean reward the environment gives their schedules of the held-out instances;
- *weighted sum*: the mean objective (sum over tasks of gamma latency + (1 - gamma)
  cost) on the held-out instances, the learners acting greedily; NaN when a policy
  leaves work undone (Random). Figs. 6/8 scale it onto [0.1, 1] over the figure's
  points, as the paper does; Fig. 9 shows it unscaled;
- every point is a mean over seeds with its 95% t-interval.

Each protocol swept (``sweep.Grid.protocols``) gets its own figures and claims: the
paper protocol's files keep the paper's names, the masked one's end in ``_masked``.
A run the protocol does not change (CS-UCB, the references) appears in both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmoffload.experiments.claims import MARL, Series, Verdict, check_claims
from llmoffload.experiments.plots import FEW_SEEDS, Panel, Values, line_chart, reward_curve
from llmoffload.experiments.stats import cell, ci95, trend
from llmoffload.experiments.sweep import ANY, REFERENCES, Grid, RunSpec, SweepResults
from llmoffload.files import write_csv, write_text_atomic

TAIL = 50  # training episodes averaged into a learner's "average reward"
CSV_FLOATS = ".6g"  # the figures' CSVs: enough digits for any plot, diff-friendly
PROTOCOL_TEXT = (
    "Two protocols (`--protocol`). Under **paper** the learners are not told which of the "
    "J·S actions are valid and learn it from the environment's penalties, as the paper's "
    "agents do; an agent only does not retry an action refused in the state it is still "
    "in (Random draws from all actions). Under **masked** every learner acts and learns on the "
    "valid actions only (Random draws among them). CS-UCB masks under both (its constraint "
    "filter is the valid-action mask), so its runs serve both protocols, as do the references' "
    "(HEFT, best classic, Optimal), which learn nothing and stand beside the methods "
    "in both. Every learner is "
    "evaluated greedily over the valid actions under both. The paper's four claims are "
    "judged under the paper protocol, whose claims they are, and again, separately, under "
    "masked. The paper protocol's files keep the paper's names; the masked protocol's end "
    "in `_masked`."
)


@dataclass(frozen=True)
class Record:
    """One finished run, reduced to what the figures need."""

    method: str
    bandwidth_mhz: float
    deadline_s: float
    failure_prob: float
    seed: int
    reward: float
    curve: tuple[float, ...]
    objectives: tuple[float, ...]  # per held-out instance, in the seed's instance order
    # per instance as ``objectives``; empty where the run did not record them: a learner's
    # planning seconds and the search beside it (same time, 10x), Optimal's lower bound
    plan_s: tuple[float, ...] = ()
    search: tuple[float, ...] = ()
    search_10x: tuple[float, ...] = ()
    bound: tuple[float, ...] = ()

    @property
    def objective(self) -> float:
        """The held-out weighted sum: NaN if any instance was left undone."""
        return float(np.mean(self.objectives))


def record(result: dict[str, Any]) -> Record:
    spec, held, curve = result["spec"], result["held_out"], result["train_reward"]
    if curve:
        window = max(1, min(TAIL, len(curve) // 2))
        reward = float(np.mean(curve[-window:]))
    else:
        reward = float(np.mean(held["reward"]))
    keys = ("method", "bandwidth_mhz", "deadline_s", "failure_prob", "seed")
    return Record(
        **{k: spec[k] for k in keys},
        reward=reward,
        curve=tuple(curve),
        objectives=tuple(held["objective"]),
        plan_s=tuple(held.get("plan_s", ())),
        search=tuple(held.get("search", ())),
        search_10x=tuple(held.get("search_10x", ())),
        bound=tuple(held.get("bound", ())),
    )


@dataclass(frozen=True)
class Axis:
    """One setting varied over ``xs``, the others held where the grid says."""

    field: str
    label: str
    short: str
    xs: tuple[float, ...]
    fixed: dict[str, float]

    def labels(self) -> list[str]:
        return [f"{self.short}={x:g}" for x in self.xs]

    def runs(self, records: list[Record], method: str, x: float) -> list[Record]:
        return [
            r
            for r in records
            if r.method == method
            and getattr(r, self.field) == x
            and all(getattr(r, k) == v for k, v in self.fixed.items())
        ]

    def values(
        self, records: list[Record], methods: list[str], metric: Callable[[Record], float]
    ) -> Values:
        """Per method, the metric of each seed's run at each x (none where no run)."""
        return {
            m: [np.array([metric(r) for r in self.runs(records, m, x)]) for x in self.xs]
            for m in methods
        }

    def series(
        self, records: list[Record], methods: list[str], metric: Callable[[Record], float]
    ) -> Series:
        """Per method, the metric's mean and CI half-width at each x; NaN where no run."""
        return summary(self.values(records, methods, metric))


def summary(values: Values) -> Series:
    """Each method's mean and CI half-width over its seeds at each x; NaN where none."""
    out = {}
    for m, per_x in values.items():
        stats = [ci95(v if v.size else [np.nan]) for v in per_x]
        out[m] = (np.array([s[0] for s in stats]), np.array([s[1] for s in stats]))
    return out


def ratio_to(records: list[Record], field: str = "objectives") -> Callable[[Record], float]:
    """A run's held-out objective over Optimal's (or Optimal's run's ``field``: its lower
    ``bound``), instance by instance, then averaged.

    The same seed and setting share their held-out instances, so the ratio is paired:
    it removes the spread between instances that dominates the plain weighted sum.
    """
    optimal = {
        (r.bandwidth_mhz, r.deadline_s, r.seed): np.array(getattr(r, field))
        for r in records
        if r.method == "optimal" and getattr(r, field)
    }

    def ratio(r: Record) -> float:
        best = optimal.get((r.bandwidth_mhz, r.deadline_s, r.seed))
        return np.nan if best is None else float(np.mean(np.array(r.objectives) / best))

    return ratio


def ratio_to_own(field: str) -> Callable[[Record], float]:
    """A run's held-out objective over the yardstick its run recorded beside each plan
    (``search``, ``search_10x``), instance by instance, then averaged; NaN where none."""

    def ratio(r: Record) -> float:
        ref = getattr(r, field)
        return float(np.mean(np.array(r.objectives) / np.array(ref))) if ref else np.nan

    return ratio


def plan_seconds(r: Record) -> float:
    return float(np.mean(r.plan_s)) if r.plan_s else np.nan


def reward(r: Record) -> float:
    return r.reward


def objective(r: Record) -> float:
    return r.objective


@dataclass(frozen=True)
class Figure:
    """A figure of methods against one axis: its file, what it plots, and how."""

    number: int  # the paper's
    name: str
    caption: str
    axis: Axis
    metric: Callable[[Record], float]
    ylabel: str
    scaled: bool  # onto [0.1, 1], as the paper's weighted-sum figures

    @property
    def title(self) -> str:
        return f"Fig. {self.number}: {self.caption}"


@dataclass(frozen=True)
class Unit:
    """The paper's scale of a weighted-sum figure: its means' range onto [0.1, 1]."""

    low: float
    scale: float

    @classmethod
    def of(cls, series: Series) -> Unit:
        finite = np.concatenate([m[np.isfinite(m)] for m, _ in series.values()])
        lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
        return cls(float(lo), 0.9 / (hi - lo) if hi > lo else 0.0)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        return 0.1 + (values - self.low) * self.scale


def normalise(series: Series) -> Series:
    """Every mean mapped linearly onto [0.1, 1] over the figure (NaN kept), CIs alike."""
    unit = Unit.of(series)
    return {k: (unit(m), h * unit.scale) for k, (m, h) in series.items()}


def figures(grid: Grid) -> tuple[Axis, list[Figure], Axis]:
    """The base point of Fig. 4, Figs. 5-8, and Fig. 9's axis, for this grid."""
    held = {"bandwidth_mhz": grid.bandwidth_mhz, "deadline_s": grid.deadline_s, "failure_prob": 0.0}

    def axis(field: str, label: str, short: str, xs: tuple[float, ...]) -> Axis:
        """``field`` varied over ``xs``, every other setting held at the base."""
        return Axis(field, label, short, xs, {k: v for k, v in held.items() if k != field})

    bandwidth = axis("bandwidth_mhz", "bandwidth W (MHz)", "W", grid.bandwidths_mhz)
    deadline = axis("deadline_s", "deadline T_max (s)", "T_max", grid.deadlines_s)
    failure = axis("failure_prob", "edge failure probability", "p", grid.failure_probs)
    base = Axis("failure_prob", "", "p", (0.0,), failure.fixed)
    return base, pair(5, "bandwidth", bandwidth) + pair(7, "deadline", deadline), failure


def pair(k: int, name: str, axis: Axis) -> list[Figure]:
    """A setting's two figures, as the paper pairs them: reward, then the weighted sum."""
    return [
        Figure(
            k,
            f"fig{k}_{name}_reward",
            f"average reward vs {name}",
            axis,
            reward,
            "average reward",
            False,
        ),
        Figure(
            k + 1,
            f"fig{k + 1}_{name}_weighted_sum",
            f"weighted latency + cost vs {name}",
            axis,
            objective,
            "weighted sum, normalised",
            True,
        ),
    ]


Table = dict[str, dict[str, tuple[float, float]]]  # method -> column -> (mean, CI half-width)


def table(series: Series, labels: list[str]) -> Table:
    return {
        m: {c: (mean[k], half[k]) for k, c in enumerate(labels)}
        for m, (mean, half) in series.items()
    }


def merge(*tables: Table) -> Table:
    return {m: {c: v for t in tables for c, v in t.get(m, {}).items()} for m in tables[0]}


Section = tuple[str, str, Table]  # title, file stem, numbers


@dataclass(frozen=True)
class Part:
    """One protocol's share of the report: its figures' numbers and the claims' verdicts."""

    protocol: str
    sections: list[Section]
    verdicts: list[Verdict]


def write_report(grid: Grid, specs: list[RunSpec], outcome: SweepResults, out: Path) -> list[Part]:
    """Write every protocol's figures, their CSVs, and REPORT.md into ``out``; returns each
    protocol's numbers and verdicts (benchmarks/results.py's headline)."""
    parts = []
    for protocol in grid.protocols:
        runs = [s for s in specs if s.protocol in (protocol, ANY) and s.key in outcome.results]
        records = [record(outcome.results[s.key]) for s in runs]
        tag = "" if protocol == "paper" else f"_{protocol}"
        parts.append(Part(protocol, *write_figures(grid, records, out, tag)))
    write_text_atomic(out / "REPORT.md", markdown(grid, specs, outcome, parts))
    return parts


def write_figures(
    grid: Grid, records: list[Record], out: Path, tag: str
) -> tuple[list[Section], list[Verdict]]:
    """One protocol's figures and CSVs, their file stems ending in ``tag``; returns the
    report's sections and the claims' verdicts."""
    base, lines, failure = figures(grid)
    curves = training_curves(grid, records, base)
    write_curves(curves, out, tag)
    at_base, fig4 = base_numbers(grid, records, base, tag)
    tables, sections = write_lines(grid, records, lines, out, tag)
    fig9 = write_failures(grid, records, failure, out, tag)
    reward_figs = [("Fig. 4", ["base"], at_base["average reward"])]
    reward_figs += [point(f, tables) for f in lines if not f.scaled]
    cost_figs = [point(f, tables) for f in lines if f.scaled]
    drift = trend(curves["random"]) if "random" in curves else None
    verdicts = check_claims(list(grid.methods), reward_figs, cost_figs, drift)
    return [fig4, *sections, fig9], verdicts


def training_curves(grid: Grid, records: list[Record], base: Axis) -> dict[str, np.ndarray]:
    """Per learner, its runs' training rewards at the base setting (seeds x episodes)."""
    curves = {m: [r.curve for r in base.runs(records, m, 0.0)] for m in grid.methods}
    return {m: np.array(c) for m, c in curves.items() if c}


def write_curves(curves: dict[str, np.ndarray], out: Path, tag: str) -> None:
    """Fig. 4: the training curves, and their mean and interval per episode as CSV."""
    reward_curve(curves, out / f"fig4_reward_curves{tag}.png")
    rows = [
        {"method": m, "episode": e, "mean": mean[e], "ci95": half[e], "seeds": len(c)}
        for m, c in curves.items()
        for mean, half in [ci95(c)]
        for e in range(c.shape[1])
    ]
    write_csv(out / f"fig4_reward_curves{tag}.csv", rows, CSV_FLOATS)


def base_numbers(
    grid: Grid, records: list[Record], base: Axis, tag: str
) -> tuple[dict[str, Series], Section]:
    """Every method's reward, weighted sum, ratios to Optimal, to the search at its own
    planning time and at ten times it, and to the lower bound, and planning seconds, at the
    base setting: the series the claims judge Fig. 4 by, and Fig. 4's table."""
    every = [*grid.methods, *REFERENCES]
    metrics = (("average reward", reward), ("weighted sum", objective))
    metrics += (("ratio to Optimal", ratio_to(records)),)
    metrics += (("x search, same time", ratio_to_own("search")),)
    metrics += (("x search, 10x time", ratio_to_own("search_10x")),)
    metrics += (("x lower bound", ratio_to(records, "bound")), ("plan s", plan_seconds))
    at_base = {name: base.series(records, every, metric) for name, metric in metrics}
    numbers = merge(*(table(s, [name]) for name, s in at_base.items()))
    return at_base, (
        "Fig. 4: training reward at the base setting",
        f"fig4_reward_curves{tag}",
        numbers,
    )


def write_lines(
    grid: Grid, records: list[Record], lines: list[Figure], out: Path, tag: str
) -> tuple[dict[str, Series], list[Section]]:
    """Figs. 5-8, their CSVs (the weighted sums scaled too) and tables; returns each
    figure's unscaled series by name, and its section."""
    every = [*grid.methods, *REFERENCES]
    tables, sections = {}, []
    for fig in lines:
        values = fig.axis.values(records, every, fig.metric)
        raw = tables[fig.name] = summary(values)
        unit = Unit.of(raw) if fig.scaled else None
        shown = normalise(raw) if unit else {m: raw[m] for m in grid.methods}
        seeds = {m: [unit(v) if unit else v for v in values[m]] for m in shown}
        panel = Panel(fig.axis.label, fig.ylabel, list(fig.axis.xs), shown, set(REFERENCES), seeds)
        line_chart([panel], out / f"{fig.name}{tag}.png")
        rows = long_rows(fig.axis, raw)
        if fig.scaled:
            scaled = long_rows(fig.axis, shown)
            rows = [
                r | {"normalised": s["mean"], "normalised_ci95": s["ci95"]}
                for r, s in zip(rows, scaled, strict=True)
            ]
        write_csv(out / f"{fig.name}{tag}.csv", rows, CSV_FLOATS)
        sections.append((fig.title, fig.name + tag, table(raw, fig.axis.labels())))
    return tables, sections


def write_failures(
    grid: Grid, records: list[Record], failure: Axis, out: Path, tag: str
) -> Section:
    """Fig. 9: the failure method's reward and weighted sum against the failure
    probability, its CSV, and its table."""
    one = [grid.failure_method]
    fail_values = {
        name: failure.values(records, one, metric)
        for name, metric in (("average reward", reward), ("weighted sum", objective))
    }
    fail = {name: summary(v) for name, v in fail_values.items()}
    line_chart(
        [
            Panel(failure.label, name, list(failure.xs), fail[name], seeds=v)
            for name, v in fail_values.items()
        ],
        out / f"fig9_failures{tag}.png",
    )
    write_csv(
        out / f"fig9_failures{tag}.csv",
        [{"metric": name} | r for name, s in fail.items() for r in long_rows(failure, s)],
        CSV_FLOATS,
    )
    labels = failure.labels()
    numbers = merge(*(table(s, [f"{name}, {x}" for x in labels]) for name, s in fail.items()))
    return (f"Fig. 9: {grid.failure_method} under edge failures", f"fig9_failures{tag}", numbers)


def point(fig: Figure, tables: dict[str, Series]) -> tuple[str, list[str], Series]:
    """A figure as the claims see it: its number, its x labels and its numbers."""
    return f"Fig. {fig.number}", fig.axis.labels(), tables[fig.name]


def long_rows(axis: Axis, series: Series) -> list[dict[str, Any]]:
    """A series as CSV rows: method, x, mean, ci95."""
    return [
        {"method": m, axis.field: x, "mean": mean[k], "ci95": half[k]}
        for m, (mean, half) in series.items()
        for k, x in enumerate(axis.xs)
    ]


# -- REPORT.md ------------------------------------------------------------------------------


def verdict_rows(verdicts: list[Verdict]) -> list[str]:
    """The claims' table, REPORT.md's and docs/results.md's alike, and how to read it."""
    lines = [
        "A claim that does not hold says whether it holds among the paper's MARL learners "
        f"({', '.join(MARL)}; CS-UCB is a bandit whose constraint filter is the valid-action "
        "mask) and without which one method it would hold.",
        "",
        "| claim | verdict | what holds, what breaks it | numbers (mean ± 95% CI) |",
    ]
    lines += ["|---|---|---|---|"]
    lines += [f"| {v.claim} | **{v.verdict}** | {v.parts} | {v.evidence} |" for v in verdicts]
    return lines


def markdown(grid: Grid, specs: list[RunSpec], outcome: SweepResults, parts: list[Part]) -> str:
    """The report: the setting and the protocols, then per protocol the claims and each
    figure with its numbers."""
    lines = [
        "# Reproduction of the UCB-COMA paper's experiments",
        "",
        f"Methods: {', '.join(grid.methods)}; references HEFT, best classic (per instance the "
        f"best of the classic schedulers) and Optimal (CP-SAT, {grid.time_limit_s:g} s per "
        f"instance). Seeds: {', '.join(map(str, grid.seeds))}. "
        f"Training: {grid.episodes} episodes; evaluation: {grid.eval_episodes} held-out "
        f"instances per run. Base setting: W = {grid.bandwidth_mhz:g} MHz, "
        f"T_max = {grid.deadline_s:g} s, no failures; scenario '{grid.scenario}'.",
        "",
        "Cells are means over seeds ± the half-width of the 95% t-interval. A learner's "
        f"average reward is its mean over its last {TAIL} training episodes (or the last half); "
        "A reference's is the reward of its schedules of the held-out instances. "
        "The weighted sum is the held-out objective (gamma latency + (1 - gamma) cost, lower "
        "is better); n/a where a policy leaves work undone. The figures of the weighted sum "
        "scale it onto [0.1, 1] as the paper does; the tables give it unscaled. Figs. 5-9 "
        "mark each seed's value beside the mean (x the first seed, + the second, ...); with "
        f"{FEW_SEEDS} seeds or fewer they draw no t-interval, which would span ±12.7 standard "
        "errors at 2.",
        "",
        PROTOCOL_TEXT + f" This report: {', '.join(grid.protocols)}.",
        "",
    ]
    failed = [outcome.failures[s.key] for s in specs if s.key in outcome.failures]
    missing = len([s for s in specs if s.key not in outcome.results])
    proven = [
        p
        for s in specs
        if s.method == "optimal" and s.key in outcome.results
        for p in outcome.results[s.key]["held_out"].get("proven", [])
    ]
    paper = Grid()
    lines += [
        f"Budget: {len(specs)} runs from {len(grid.seeds)} seeds, {grid.episodes} training "
        f"episodes per learner run, {len(grid.bandwidths_mhz)}, {len(grid.deadlines_s)} and "
        f"{len(grid.failure_probs)} points on the bandwidth, deadline and failure axes (the "
        f"paper's sweep: {len(paper.seeds)} seeds, {paper.episodes} episodes, "
        f"{len(paper.bandwidths_mhz)}, {len(paper.deadlines_s)} and {len(paper.failure_probs)} "
        "points)."
    ]
    if grid.episodes < paper.episodes or len(grid.seeds) < len(paper.seeds):
        lines[-1] += (
            " Under a smaller budget than the paper's the claims are judged on learners trained "
            "less: the verdicts show the pipeline at work, not the paper's numbers."
        )
    lines.append("")
    lines.append(
        f"Runs: {len(specs) - missing} of {len(specs)} finished. Optimal is proven optimal on "
        f"{sum(proven)} of {len(proven)} held-out instances (the rest: the best schedule found)."
    )
    lines += [f"- failed: {f}" for f in failed]
    for part in parts:
        under = f"({part.protocol} protocol)"
        lines += ["", f"## The {part.protocol} protocol", "", f"### The paper's claims {under}"]
        lines += ["", *verdict_rows(part.verdicts)]
        for title, stem, tab in part.sections:
            columns = list(next(iter(tab.values())))
            link = f"![{stem}]({stem}.png) ([numbers]({stem}.csv))"
            lines += ["", f"### {title} {under}", "", link, ""]
            lines += ["| method | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
            lines += [
                f"| {m} | " + " | ".join(cell(row[c]) for c in columns) + " |"
                for m, row in tab.items()
            ]
    return "\n".join(lines) + "\n"
