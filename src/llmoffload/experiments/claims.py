"""The paper's four claims about Figs. 4-9, each checked at every point it speaks of."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from llmoffload.marl.registry import PAPER

SHOWN = 2  # failing points a claim's verdict spells out; the tables hold the rest
Series = dict[str, tuple[np.ndarray, np.ndarray]]  # method -> (means, CI half-widths) per x
Points = list[tuple[str, list[str], Series]]  # (figure, column labels, series)


@dataclass(frozen=True)
class Verdict:
    claim: str
    verdict: str  # "holds", "does not hold" or "not tested"
    evidence: str


def ranked(series: Series, methods: list[str], k: int, best_high: bool) -> list[tuple[str, float]]:
    """The methods with a number at point k, best first."""
    values = [(m, float(series[m][0][k])) for m in methods if np.isfinite(series[m][0][k])]
    return sorted(values, key=lambda mv: -mv[1] if best_high else mv[1])


def check(
    claim: str,
    methods: list[str],
    points: Points,
    best_high: bool,
    test: Callable[[list[tuple[str, float]]], bool],
) -> Verdict:
    """Apply ``test`` to the ranking at every point of every figure given; "not tested"
    unless every learner the claim ranks (the paper's six, ``registry.PAPER``) was swept:
    CS-UCB alone would trivially "have the highest weighted sum"."""
    missing = [m for m in PAPER if m not in methods]
    if missing:
        return Verdict(claim, "not tested", f"{', '.join(missing)} not in the sweep")
    fails, total = [], 0
    for fig, labels, series in points:
        for k, label in enumerate(labels):
            order = ranked(series, methods, k, best_high)
            total += 1
            if not test(order):
                shown = ", ".join(f"{m} {v:.4g}" for m, v in order)
                fails.append(f"{fig} {label}, best first: {shown}")
    if not fails:
        return Verdict(claim, "holds", f"at all {total} points")
    more = f"; and {len(fails) - SHOWN} more" if len(fails) > SHOWN else ""
    evidence = f"fails at {len(fails)} of {total} points, e.g. " + "; ".join(fails[:SHOWN]) + more
    return Verdict(claim, "does not hold", evidence)


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

    def at(rank: int, method: str) -> Callable[[list[tuple[str, float]]], bool]:
        """Whether ``method`` holds place ``rank`` (-1: last) of a ranking."""
        need = rank + 1 if rank >= 0 else -rank
        return lambda order: len(order) >= need and order[rank][0] == method

    ucb = check("UCB-COMA is best on every figure", methods, reward_figs, True, at(0, "ucb-coma"))
    coma = check("COMA is second on reward", methods, reward_figs, True, at(1, "coma"))
    cs = check("CS-UCB has the highest weighted sum", methods, cost_figs, False, at(-1, "cs-ucb"))
    low = check("Random is flat and lowest on reward", methods, reward_figs, True, at(-1, "random"))
    if ucb.verdict != "not tested":
        cost = check("", methods, cost_figs, False, at(0, "ucb-coma"))
        ucb = joined(ucb, "reward figures", cost, "weighted-sum figures")
    if low.verdict != "not tested" and random_trend is not None:
        change, half = random_trend
        flat = Verdict(
            "", "holds" if abs(change) <= half else "does not hold", f"{change:.3g} ± {half:.2g}"
        )
        low = joined(low, "lowest", flat, "change over training")
    return [ucb, coma, cs, low]


def joined(a: Verdict, a_name: str, b: Verdict, b_name: str) -> Verdict:
    """A claim of two parts holds if both do."""
    verdict = "holds" if a.verdict == b.verdict == "holds" else "does not hold"
    return Verdict(a.claim, verdict, f"{a_name}: {a.evidence}; {b_name}: {b.evidence}")
