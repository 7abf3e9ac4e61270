"""Gantt charts of a schedule: which server ran what, when, and when each task finished.

Drawn on a bare matplotlib ``Figure`` (Agg canvas, no pyplot), so it needs no
screen and touches no global plotting state.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from llmoffload.errors import OffloadError
from llmoffload.files import replacing
from llmoffload.model.execution import Execution, Run, Schedule, TaskResult
from llmoffload.model.instance import Instance

FORMATS = ("png", "pdf", "svg")
LANE_HEIGHT = 0.8  # of a lane's 1.0, leaving a gap between stacked cloud runs


def check_format(path: str | Path) -> None:
    """Refuse an output name matplotlib would not write (before any work is done)."""
    suffix = Path(path).suffix.lstrip(".").lower()
    if suffix not in FORMATS:
        raise OffloadError(f"{path}: a Gantt chart must end in one of .{', .'.join(FORMATS)}")


def lanes(runs: list[Run]) -> list[int]:
    """A lane per run such that runs in one lane never overlap (first fit by start time).

    Edges never overlap, so they get one lane; the cloud's parallel runs get
    as many as are ever at work at once.
    """
    lane_of = [0] * len(runs)
    free_at: list[float] = []
    for k in sorted(range(len(runs)), key=lambda k: (runs[k].start, runs[k].end)):
        run = runs[k]
        lane = next((n for n, t in enumerate(free_at) if t <= run.start), len(free_at))
        if lane == len(free_at):
            free_at.append(run.end)
        free_at[lane] = run.end
        lane_of[k] = lane
    return lane_of


def first_starts(n_tasks: int, runs: list[Run]) -> list[float | None]:
    """When each task's first run started; None for a task with no run yet."""
    first: list[float | None] = [None] * n_tasks
    for run in runs:
        t = first[run.task]
        first[run.task] = run.start if t is None else min(t, run.start)
    return first


def finish_times(
    instance: Instance, runs: list[Run], results: list[TaskResult | None]
) -> list[float | None]:
    """Absolute completion time of each task with a result: T_i counts from its origin.

    The origin is the task's first start (``latency: span``) or t = 0 (``arrival``).
    """
    arrival = instance.scenario.latency == "arrival"
    first = first_starts(len(instance.tasks), runs)
    return [
        None if result is None else (0.0 if arrival else (f or 0.0)) + result.latency
        for f, result in zip(first, results, strict=True)
    ]


def figure(
    instance: Instance,
    runs: list[Run],
    done: list[float | None] | None = None,
    title: str | None = None,
) -> Figure:
    """The Gantt chart of ``runs`` (dispatch order; a whole schedule or a partial one).

    ``done`` holds each task's absolute completion time, drawn as a dashed line
    where it is known. Deadlines are drawn for tasks whose origin is known.
    The figure comes with an Agg canvas, already drawn once.
    """
    sc = instance.scenario
    n_tasks = len(instance.tasks)
    ends: list[float | None] = done or [None] * n_tasks
    palette = colormaps["tab10" if n_tasks <= 10 else "tab20"]
    colour = [palette(i % palette.N) for i in range(n_tasks)]

    # One band per server, one lane per band unless its runs overlap (the cloud).
    by_server: list[list[Run]] = [[] for _ in sc.servers]
    for run in runs:
        by_server[run.server].append(run)
    band_lanes = [lanes(server_runs) for server_runs in by_server]
    band_size = [max(ls, default=0) + 1 for ls in band_lanes]
    band_top = [sum(band_size[:k]) for k in range(len(sc.servers))]
    total = sum(band_size)

    # A task's deadline counts from its first start (or from t = 0).
    first = first_starts(n_tasks, runs)
    origin = [0.0 if sc.latency == "arrival" else f for f in first]
    deadline = [None if o is None else o + sc.t_max_s for o in origin]
    known_done = [d for d in ends if d is not None]
    right = max([*known_done, *(r.end for r in runs)], default=1.0) * 1.03

    fig = Figure(figsize=(13, 1.6 + 0.45 * total), layout="constrained")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_xlim(0, right)
    ax.set_ylim(total, 0)

    labels = []
    for server_runs, run_lanes, top in zip(by_server, band_lanes, band_top, strict=True):
        for run, lane in zip(server_runs, run_lanes, strict=True):
            y = top + lane + (1 - LANE_HEIGHT) / 2
            c = colour[run.task]
            ax.broken_barh(
                [(run.start, run.upload)],
                (y, LANE_HEIGHT),
                facecolor=to_rgba(c, 0.35),
                edgecolor=c,
                hatch="///",
                linewidth=0.6,
            )
            ax.broken_barh(
                [(run.start + run.upload, run.compute)],
                (y, LANE_HEIGHT),
                facecolor=c,
                edgecolor=c,
                linewidth=0.6,
            )
            name = instance.tasks[run.task].subtasks[run.subtask].name
            text = ax.text(
                (run.start + run.end) / 2,
                y + LANE_HEIGHT / 2,
                name,
                ha="center",
                va="center",
                fontsize=7,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.7, "lw": 0},
            )
            labels.append((text, run))
    for top in band_top[1:]:
        ax.axhline(top, color="0.6", linewidth=0.8)

    for c, finish, due in zip(colour, ends, deadline, strict=True):
        if finish is not None:
            ax.axvline(finish, color=c, linestyle="--", linewidth=1.2)
        if due is not None and due <= right:
            ax.axvline(due, color=c, linestyle=":", linewidth=1.2)

    ax.set_yticks([top + size / 2 for top, size in zip(band_top, band_size, strict=True)])
    ax.set_yticklabels([f"{s.name}\n{s.ghz:g} GHz" for s in sc.servers])
    ax.tick_params(axis="y", length=0)
    ax.set_xlabel("time (s)")
    ax.grid(axis="x", color="0.9")
    ax.set_axisbelow(True)
    if title is None:
        placed = len({(r.task, r.subtask) for r in runs})
        whole = sum(len(task.subtasks) for task in instance.tasks)
        title = f"{sc.name}: {n_tasks} tasks, {placed} of {whole} subtasks dispatched"
    ax.set_title(title)

    handles: list[Patch | Line2D] = [
        Patch(facecolor=colour[i], label=f"task {i}: {task.workflow}")
        for i, task in enumerate(instance.tasks)
    ]
    handles += [
        Patch(facecolor="white", edgecolor="0.15", hatch="///", label="input upload"),
        Patch(facecolor="0.15", label="compute"),
    ]
    if known_done:
        handles.append(
            Line2D([], [], color="0.3", linestyle="--", label="task done (with downlink)")
        )
    if any(d is not None and d <= right for d in deadline):
        handles.append(
            Line2D([], [], color="0.3", linestyle=":", label=f"deadline (T_max {sc.t_max_s:g} s)")
        )
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)

    # Keep a name only where it fits inside its bar, measured after the layout.
    canvas.draw()
    renderer = canvas.get_renderer()
    for text, run in labels:
        x0, x1 = ax.transData.transform([(run.start, 0), (run.end, 0)])[:, 0]
        if text.get_window_extent(renderer).width > x1 - x0 - 2:
            text.remove()
    return fig


def draw_gantt(
    instance: Instance, schedule: Schedule, path: str | Path, title: str | None = None
) -> None:
    """Draw ``schedule`` to ``path`` (.png, .pdf or .svg), replacing it atomically."""
    check_format(path)
    if title is None:
        title = (
            f"{instance.scenario.name}: {len(instance.tasks)} tasks, "
            f"objective {schedule.objective:.4f}, {schedule.deadline_misses} deadline misses"
        )
    done = finish_times(instance, schedule.runs, list(schedule.tasks))
    fig = figure(instance, schedule.runs, done, title)
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=120)


def gantt_rgb(instance: Instance, runs: list[Run], title: str | None = None) -> np.ndarray:
    """The chart of a finished or partial episode as an (H, W, 3) uint8 image.

    ``runs`` must come from the execution model in dispatch order: they are
    replayed through it to find which tasks have finished, and when.
    """
    ex = Execution(instance)
    for run in runs:
        ex.dispatch(run.task, run.subtask, run.server)
    results = [None if left else ex.task_result(i) for i, left in enumerate(ex.left)]
    fig = figure(instance, runs, finish_times(instance, runs, results), title)
    canvas = FigureCanvasAgg(fig)  # attach a typed Agg canvas; it draws the same pixels
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
