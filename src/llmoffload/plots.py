"""Figures of training and evaluation results (matplotlib, no screen needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from llmoffload.files import replacing


def ema(values: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """Exponential moving average, as the paper smooths Fig. 4."""
    out = np.empty_like(values, dtype=float)
    acc = values[0]
    for k, v in enumerate(values):
        acc = alpha * v + (1 - alpha) * acc
        out[k] = acc
    return out


def reward_curve(curves: dict[str, list[float]], path: str | Path, alpha: float = 0.05) -> None:
    """Episode reward per method: EMA line, raw values shaded around it (paper Fig. 4)."""
    fig = Figure(figsize=(8, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, values in curves.items():
        raw = np.asarray(values, dtype=float)
        x = np.arange(len(raw))
        smooth = ema(raw, alpha)
        (line,) = ax.plot(x, smooth, label=name, linewidth=1.8)
        ax.fill_between(x, raw, smooth, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("episode")
    ax.set_ylabel("episode reward (sum over agents)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=120)
