"""Figures of training and evaluation results (matplotlib, no screen needed)."""

from __future__ import annotations

from collections.abc import Sequence
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


def reward_curve(
    curves: dict[str, Sequence[float] | np.ndarray], path: str | Path, alpha: float = 0.05
) -> None:
    """Episode reward per method (paper Fig. 4): the EMA of the seed mean as a line over
    the raw seed mean, faint; with several seeds (rows), the 95% CI of the per-seed EMAs
    shaded around the line."""
    fig, ax = canvas(1)
    for name, values in curves.items():
        raw = np.atleast_2d(np.asarray(values, dtype=float))
        x = np.arange(raw.shape[1])
        smooth, half = ci95(np.stack([ema(r, alpha) for r in raw]))
        (line,) = ax[0].plot(x, smooth, label=name, linewidth=1.8, zorder=3)
        ax[0].plot(x, raw.mean(0), color=line.get_color(), linewidth=0.6, alpha=0.3)
        if len(raw) > 1:
            ax[0].fill_between(
                x, smooth - half, smooth + half, color=line.get_color(), alpha=0.15, linewidth=0
            )
    ax[0].set_xlabel("episode")
    ax[0].set_ylabel("episode reward (sum over agents)")
    save(fig, ax, path)


@dataclass
class Panel:
    """One chart of a method per line against a swept setting, with 95% CI error bars."""

    xlabel: str
    ylabel: str
    xs: list[float]
    series: dict[str, tuple[np.ndarray, np.ndarray]]  # method -> (means, CI half-widths)
    dashed: set[str] = field(default_factory=set)  # references drawn apart from the methods


def line_chart(panels: list[Panel], path: str | Path) -> None:
    """Figs. 5-9: each panel a line per method over the setting's values."""
    fig, axes = canvas(len(panels))
    for ax, panel in zip(axes, panels, strict=True):
        for name, (mean, half) in panel.series.items():
            style = "--" if name in panel.dashed else "-"
            ax.errorbar(
                panel.xs, mean, yerr=half, label=name, linestyle=style, marker="o", capsize=3
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
