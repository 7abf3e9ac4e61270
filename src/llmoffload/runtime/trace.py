"""A batch's trace: per subtask where it was planned and ran, real beside predicted times.

Shared by ``llmoffload run`` (table, JSON, Gantt) and the HTTP service (JSON).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from llmoffload.display import table
from llmoffload.model.execution import Run
from llmoffload.runtime.executor import Batch, Result, Step


def step_json(batch: Batch, step: Step) -> dict[str, Any]:
    names = [s.name for s in batch.instance.scenario.servers]
    done = step.done
    return {
        "task": step.task,
        "subtask": step.name,
        "planned": names[step.planned],
        "server": None if done is None else names[done.server],
        "start": None if done is None else done.start,
        "end": None if done is None else done.end,
        "predicted_start": step.predicted_start,
        "predicted_end": step.predicted_end,
        "prompt_tokens": step.prompt_tokens,
        "completion_tokens": step.completion_tokens,
        "output": step.output,
        "failures": [
            {"server": names[a.server], "start": a.start, "end": a.end, "error": a.error}
            for a in step.attempts
            if a.error is not None
        ],
    }


def result_json(batch: Batch, result: Result) -> dict[str, Any]:
    """One request's answer and its trace, as the service returns it."""
    return {
        "workflow": result.request.workflow,
        "answer": result.answer,
        "error": result.error,
        "plan_s": batch.plan_s,
        "wall_s": batch.wall_s,
        "trace": [step_json(batch, s) for s in result.steps],
    }


def trace_table(batch: Batch) -> str:
    """Every subtask in dispatch order: planned and real server, real and predicted times."""
    rows = []
    for step in batch.steps:
        row = step_json(batch, step)
        real = "failed" if row["start"] is None else f"{row['start']:.4f}-{row['end']:.4f}"
        retries = "; ".join(f"{f['server']}: {f['error']}" for f in row["failures"])
        rows.append(
            [
                step.task,
                step.name,
                row["planned"],
                row["server"] or "-",
                real,
                f"{step.predicted_start:.4f}-{step.predicted_end:.4f}",
                f"{step.prompt_tokens}/{step.completion_tokens}",
                retries or "-",
            ]
        )
    header = ["task", "subtask", "planned", "ran on", "real s", "predicted s", "tokens", "retries"]
    return table(header, rows)


def real_runs(batch: Batch) -> list[Run]:
    """Every real call as a Run (failed ones too: they held their server), no upload part."""
    return [
        Run(step.task, step.subtask, a.server, a.start, 0.0, a.end - a.start, a.end, 0.0)
        for step in batch.steps
        for a in step.attempts
    ]


def draw_real_vs_predicted(batch: Batch, path: str | Path) -> None:
    """Two Gantt charts, predicted above real, in one image (.png, .pdf or .svg)."""
    import numpy as np  # matplotlib only when a chart is asked for
    from matplotlib import image
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from llmoffload.files import replacing
    from llmoffload.model.gantt import figure

    charts = [
        figure(batch.instance, batch.schedule.runs, title="predicted by the execution model"),
        figure(batch.instance, real_runs(batch), title="real (failed calls included)"),
    ]
    # figure() gives each its Agg canvas, drawn
    pixels = [np.asarray(cast(FigureCanvasAgg, f.canvas).buffer_rgba()) for f in charts]
    width = max(p.shape[1] for p in pixels)
    padded = [
        np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in pixels
    ]
    with replacing(path) as tmp:
        image.imsave(tmp, np.vstack(padded))
