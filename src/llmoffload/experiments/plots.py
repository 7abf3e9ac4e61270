"""Figures of training and evaluation results (matplotlib, no screen needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter

from llmoffload.experiments.stats import ci95
from llmoffload.files import replacing


def ema(values: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """Exponential moving average, as the paper smooths Fig. 4."""
    out = np.empty_like(values, dtype=float)
    acc = values[0]
    for k, v in enumerate(values):
        acc = alpha * v + (1 - alpha) * acc
        out[k] = acc
    return out


FEW_SEEDS = 2  # at most this many seeds: their points, not a t-interval (t = 12.7 at 2)
SEED_MARKERS = ("x", "+", "1", "2", "3", "4", "^", "v")  # the first seed's, the second's, ...


def reward_curve(
    curves: Mapping[str, Sequence[float] | np.ndarray], path: str | Path, alpha: float = 0.05
) -> None:
    """Episode reward per method (paper Fig. 4): the EMA of the seed mean as a line over
    the raw seed mean, faint; around the line the 95% CI of the per-seed EMAs shaded, or
    with ``FEW_SEEDS`` seeds or fewer each seed's EMA as a thin line."""
    fig, ax = canvas(1)
    for name, values in curves.items():
        raw = np.atleast_2d(np.asarray(values, dtype=float))
        x = np.arange(raw.shape[1])
        per_seed = np.stack([ema(r, alpha) for r in raw])
        smooth, half = ci95(per_seed)
        (line,) = ax[0].plot(x, smooth, label=name, linewidth=1.8, zorder=3)
        color = line.get_color()
        ax[0].plot(x, raw.mean(0), color=color, linewidth=0.6, alpha=0.3)
        if len(raw) > FEW_SEEDS:
            ax[0].fill_between(x, smooth - half, smooth + half, color=color, alpha=0.15, lw=0)
        elif len(raw) > 1:
            for seed in per_seed:
                ax[0].plot(x, seed, color=color, linewidth=0.8, alpha=0.6, linestyle=":")
    ax[0].set_xlabel("episode")
    ax[0].set_ylabel("episode reward (sum over agents)")
    save(fig, ax, path)


Values = dict[str, list[np.ndarray]]  # method -> at each x, one value per seed


@dataclass
class Panel:
    """One chart of a method per line against a swept setting: the means with their 95%
    CI error bars, and, where ``seeds`` gives them, every seed's value as a marker
    (``SEED_MARKERS``: x for the first seed swept, + for the second, ...)."""

    xlabel: str
    ylabel: str
    xs: list[float]
    series: dict[str, tuple[np.ndarray, np.ndarray]]  # method -> (means, CI half-widths)
    dashed: set[str] = field(default_factory=set)  # references drawn apart from the methods
    seeds: Values = field(default_factory=dict)


def line_chart(panels: list[Panel], path: str | Path) -> None:
    """Figs. 5-9: each panel a line per method over the setting's values. A method whose
    seeds are few (``FEW_SEEDS``) shows its seeds' markers instead of error bars, each
    method's nudged sideways so that methods on the same value stay apart."""
    fig, axes = canvas(len(panels))
    for ax, panel in zip(axes, panels, strict=True):
        nudge = 0.02 * (max(panel.xs) - min(panel.xs) or 1.0)
        for k, (name, (mean, half)) in enumerate(panel.series.items()):
            style = "--" if name in panel.dashed else "-"
            seeds = panel.seeds.get(name, [])
            few = bool(seeds) and max(len(v) for v in seeds) <= FEW_SEEDS
            bars = None if few else half
            line = ax.errorbar(
                panel.xs, mean, yerr=bars, label=name, linestyle=style, marker="o", capsize=3
            )
            offset = (k - (len(panel.series) - 1) / 2) * nudge
            for x, values in zip(panel.xs, seeds, strict=True):
                for value, marker in zip(values, SEED_MARKERS, strict=False):
                    ax.scatter(
                        x + offset, value, s=14, color=line.lines[0].get_color(), marker=marker
                    )
        ax.set_xticks(panel.xs)
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
    save(fig, axes, path)


def canvas(panels: int) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(4.5 + 3.5 * panels, 4.5))
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, panels, k + 1) for k in range(panels)]


def save(fig: Figure, axes: list[Axes], path: str | Path) -> None:
    """Grid and legend on every panel, then an atomic write."""
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=120)


def performance_profile(
    taus: np.ndarray,
    profiles: dict[str, np.ndarray],
    bands: dict[str, np.ndarray],
    path: str | Path,
    xlabel: str,
) -> None:
    """Per method, the fraction of runs scoring at most tau (lower is better) against tau
    on a log axis, its 95% band (rows: low, high) shaded (Agarwal et al., NeurIPS 2021)."""
    fig, ax = canvas(1)
    for name, fraction in profiles.items():
        (line,) = ax[0].plot(taus, fraction, label=name, linewidth=1.8)
        ax[0].fill_between(taus, *bands[name], color=line.get_color(), alpha=0.15, linewidth=0)
    ax[0].set_xscale("log")
    for axis in (ax[0].xaxis.set_major_formatter, ax[0].xaxis.set_minor_formatter):
        axis(FormatStrFormatter("%g"))  # 2, not 2 x 10^0
    ax[0].set_xlabel(xlabel)
    ax[0].set_ylabel("fraction of runs at most tau")
    save(fig, ax, path)
