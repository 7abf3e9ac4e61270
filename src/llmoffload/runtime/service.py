"""The HTTP service: submit a request, get its answer and trace back.

``POST /v1/requests`` takes ``{"workflow": ..., "text": ...}`` and answers with the
aggregation node's completion and the per-subtask trace. Each request is planned and run
as its own batch; all batches share one executor, so edges stay one-at-a-time across
them. At most ``capacity`` requests are admitted at once (running or waiting for an
edge); one more is answered 503 at once rather than queued without bound.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException

from llmoffload.errors import OffloadError
from llmoffload.runtime.deployment import Bound
from llmoffload.runtime.executor import Executor, Planner, Request
from llmoffload.runtime.trace import result_json


def create_app(bound: Bound, plan: Planner, capacity: int = 8) -> FastAPI:
    """The FastAPI application for one deployment and policy."""
    admitted = 0
    executor: Executor | None = None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal executor
        limits = httpx.Limits(max_connections=max(64, 2 * sum(bound.concurrency)))
        async with httpx.AsyncClient(limits=limits) as client:
            executor = Executor(bound, plan, client)
            yield

    app = FastAPI(title="llmoffload", lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "scenario": bound.scenario.name,
            "servers": [s.name for s in bound.scenario.servers],
            "workflows": list(bound.scenario.workflows),
            "in_flight": admitted,
            "capacity": capacity,
        }

    @app.post("/v1/requests")
    async def submit(request: Request) -> dict[str, Any]:
        nonlocal admitted
        if request.workflow not in bound.scenario.workflows:
            raise HTTPException(
                400,
                f"unknown workflow '{request.workflow}' "
                f"(choose from {', '.join(bound.scenario.workflows)})",
            )
        if admitted >= capacity:
            raise HTTPException(
                503, f"queue full: {admitted} requests in flight", {"Retry-After": "1"}
            )
        assert executor is not None, "the lifespan starts the executor"
        admitted += 1
        try:
            batch = await executor.run([request])
        except OffloadError as exc:
            raise HTTPException(400, str(exc)) from None
        finally:
            admitted -= 1
        (result,) = batch.results
        if result.error is not None:
            raise HTTPException(502, result.error)
        return result_json(batch, result)

    return app
