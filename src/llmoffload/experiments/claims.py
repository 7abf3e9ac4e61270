"""The paper's four claims about Figs. 4-9, each checked at every point it speaks of, and
in parts: whether it holds among the paper's MARL learners, and which method breaks it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmoffload.experiments.stats import cell
from llmoffload.marl.registry import PAPER

# The paper's MARL learners (Random the floor they rise from). CS-UCB is not one: a bandit
# whose constraint filter is the valid-action mask, it never plays an invalid action.
MARL = ("ucb-coma", "coma", "maddpg", "mappo", "random")
SHOWN = 2  # failing points a claim's verdict spells out; the tables hold the rest
Series = dict[str, tuple[np.ndarray, np.ndarray]]  # method -> (means, CI half-widths) per x
Points = list[tuple[str, list[str], Series]]  # (figure, column labels, series)
Ranking = list[tuple[str, float, float]]  # (method, mean, CI half-width), best first


@dataclass(frozen=True)
class Claim:
    """That ``method`` holds ``place`` in the ranking (0 first, 1 second, -1 last)."""

    text: str
    method: str
    place: int

    def holds(self, order: Ranking) -> bool:
        need = self.place + 1 if self.place >= 0 else -self.place
        return len(order) >= need and order[self.place][0] == self.method


@dataclass(frozen=True)
class Verdict:
    claim: str
    verdict: str  # "holds", "does not hold" or "not tested"
    evidence: str
    # the verdict among the MARL learners and the claim's method ("holds", "does not
    # hold", or per part of a two-part claim); "": they are all judged
    among: str = ""
    broken_by: tuple[str, ...] = ()  # where it does not hold: each whose absence mends it

    @property
    def parts(self) -> str:
        """What part of a claim that does not hold still holds, and what breaks it."""
        if self.verdict != "does not hold":
            return ""
        said = []
        if self.among in ("holds", "does not hold"):
            said.append(f"{self.among} among the MARL learners")
        elif self.among:
            said.append(f"among the MARL learners: {self.among}")
        if self.broken_by:
            said.append(f"would hold without {', or without '.join(self.broken_by)}")
        else:
            said.append("no one method's absence would mend it")
        return "; ".join(said)


def ranked(series: Series, methods: list[str], k: int, best_high: bool) -> Ranking:
    """The methods with a number at point k, best first, with their intervals."""
    values = [
        (m, float(series[m][0][k]), float(series[m][1][k]))
        for m in methods
        if np.isfinite(series[m][0][k])
    ]
    return sorted(values, key=lambda v: -v[1] if best_high else v[1])


def shown(fig: str, label: str, order: Ranking) -> str:
    return f"{fig} {label}, best first: " + ", ".join(f"{m} {cell((v, h))}" for m, v, h in order)


def failures(
    claim: Claim, methods: list[str], points: Points, best_high: bool
) -> tuple[list[str], int]:
    """The points where ``claim`` fails among ``methods``, each with its ranking, and the
    number of points."""
    fails, total = [], 0
    for fig, labels, series in points:
        for k, label in enumerate(labels):
            order = ranked(series, methods, k, best_high)
            total += 1
            if not claim.holds(order):
                fails.append(shown(fig, label, order))
    return fails, total


def check(claim: Claim, methods: list[str], points: Points, best_high: bool) -> Verdict:
    """Judge ``claim`` at every point of every figure given, and in parts: among the MARL
    learners, and which one method's absence would mend it. "Not tested" unless every
    learner the claim ranks (the paper's six, ``registry.PAPER``) was swept: CS-UCB alone
    would trivially "have the highest weighted sum"."""
    missing = [m for m in PAPER if m not in methods]
    if missing:
        return Verdict(claim.text, "not tested", f"{', '.join(missing)} not in the sweep")
    fails, total = failures(claim, methods, points, best_high)
    marl = [m for m in methods if m in MARL or m == claim.method]
    among = "" if marl == methods else holds(not failures(claim, marl, points, best_high)[0])
    if not fails:
        first = [shown(f, labels[0], ranked(s, methods, 0, best_high)) for f, labels, s in points]
        example = f", e.g. {first[0]}" if first else ""
        return Verdict(claim.text, "holds", f"at all {total} points{example}", among)
    broken_by = tuple(
        m
        for m in methods
        if m != claim.method
        and not failures(claim, [x for x in methods if x != m], points, best_high)[0]
    )
    more = f"; and {len(fails) - SHOWN} more" if len(fails) > SHOWN else ""
    evidence = f"fails at {len(fails)} of {total} points, e.g. " + "; ".join(fails[:SHOWN]) + more
    return Verdict(claim.text, "does not hold", evidence, among, broken_by)


def holds(yes: bool) -> str:
    return "holds" if yes else "does not hold"


def check_claims(
    methods: list[str],
    reward_figs: Points,
    cost_figs: Points,
    random_trend: tuple[float, float] | None,
) -> list[Verdict]:
    """The paper's four claims, each against every point it speaks of.

    "Best" is the highest reward and the lowest weighted sum; the weighted sum ranks
    only methods that finish their episodes (not Random). "Flat" means the 95%
    interval of Random's change over training (``stats.trend``) contains 0.
    """
    best = Claim("UCB-COMA is best on every figure", "ucb-coma", 0)
    ucb = check(best, methods, reward_figs, True)
    coma = check(Claim("COMA is second on reward", "coma", 1), methods, reward_figs, True)
    highest = Claim("CS-UCB has the highest weighted sum", "cs-ucb", -1)
    cs = check(highest, methods, cost_figs, False)
    lowest = Claim("Random is flat and lowest on reward", "random", -1)
    low = check(lowest, methods, reward_figs, True)
    if ucb.verdict != "not tested":
        ucb = joined(
            ucb, "reward figures", check(best, methods, cost_figs, False), "weighted-sum figures"
        )
    if low.verdict != "not tested" and random_trend is not None:
        change, half = random_trend
        flat = Verdict("", holds(abs(change) <= half), f"{change:.3g} ± {half:.2g}")
        low = joined(low, "lowest", flat, "change over training")
    return [ucb, coma, cs, low]


def joined(a: Verdict, a_name: str, b: Verdict, b_name: str) -> Verdict:
    """A claim of two parts holds if both do; among the MARL learners, where the parts
    differ, each part's verdict is said; a method breaks it if its absence would mend
    every part that fails."""
    among = ""
    if a.among or b.among:
        parts = (a.among or a.verdict, b.among or b.verdict)
        among = (
            parts[0]
            if parts[0] == parts[1]
            else f"{parts[0]} on the {a_name}, {parts[1]} on the {b_name}"
        )
    if a.verdict == "holds":
        broken_by = b.broken_by
    elif b.verdict == "holds":
        broken_by = a.broken_by
    else:
        broken_by = tuple(m for m in a.broken_by if m in b.broken_by)
    verdict = holds(a.verdict == b.verdict == "holds")
    evidence = f"{a_name}: {a.evidence}; {b_name}: {b.evidence}"
    return Verdict(a.claim, verdict, evidence, among, broken_by)
