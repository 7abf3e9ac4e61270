"""Means with 95% confidence intervals over seeds (Student's t, as seeds are few).

SciPy is imported where a t quantile is needed, not with the module: a training
run's one-seed reward curve needs none, and importing SciPy takes seconds.
"""

from __future__ import annotations

import numpy as np


def ci95(values: np.ndarray | list[float], axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and half-width of its 95% t-interval along ``axis``; half-width 0 for one value.

    A NaN anywhere (a run that left work undone) makes that mean NaN: such a
    method has no objective, and averaging over the runs that happened to
    finish would flatter it.
    """
    v = np.asarray(values, dtype=float)
    n = v.shape[axis]
    mean = v.mean(axis=axis)
    if n < 2:
        return mean, np.zeros_like(mean)
    from scipy import stats

    sem = v.std(axis=axis, ddof=1) / np.sqrt(n)
    return mean, stats.t.ppf(0.975, n - 1) * sem


def trend(curves: np.ndarray) -> tuple[float, float]:
    """How much the reward changes over a run, and the half-width of its 95% interval.

    The least-squares slope of reward on episode, every seed's episodes pooled (rows),
    times the run's length: a flat curve's interval contains 0. All episodes count,
    not just two windows, so one lucky stretch does not make a curve look sloped.
    """
    from scipy import stats

    curves = np.atleast_2d(curves)
    episodes = curves.shape[1]
    # unpacked: the result's fields are not in SciPy's type stubs
    slope, _, _, _, stderr = stats.linregress(
        np.tile(np.arange(episodes), len(curves)), curves.ravel()
    )
    half = stats.t.ppf(0.975, curves.size - 2) * stderr
    return slope * episodes, half * episodes


def cell(value: tuple[float, float]) -> str:
    """A mean and its CI half-width as a table cell: "n/a" where there is no mean."""
    mean, half = value
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.4g} ± {half:.2g}" if half else f"{mean:.4g}"
