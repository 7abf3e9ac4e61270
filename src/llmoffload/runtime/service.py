"""The HTTP service: submit a request, get its answer and trace back.

``POST /v1/requests`` takes ``{"workflow": ..., "text": ...}``, with ``"image"`` and
``"audio"`` as base64 if the request has them; ``POST /v1/requests/upload`` takes the
same four as multipart form fields, the image and audio as files (``curl -F
image=@valve.png``), with no base64's third more bytes. Payloads are checked as ``run``
checks its files (a bad one is a 422 with the reason). Both answer with the aggregation
node's completion and the per-subtask trace. Each request is planned and run as its
own batch; all batches share one executor, so edges stay one-at-a-time across them.
Planned together (the default), each request is planned on arrival against the work
the earlier ones still have queued, and each edge serves subtasks in the order they
were planned; planned alone, each as if the servers were idle (``Executor``). At most
``capacity`` requests are admitted at once (running or waiting for an edge); one more
is answered 503 at once rather than queued without bound.

Nothing a client sends may keep the endpoints busy after it stopped waiting: a body over
``max_body`` bytes is refused (413) before it is read, a prompt over the deployment's
``max_prompt_tokens`` before it is sent (413), and a request whose client hangs up or
that runs past ``timeout_s`` has its endpoint calls cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Form, HTTPException, UploadFile
from fastapi import Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmoffload.errors import OffloadError
from llmoffload.runtime.deployment import Bound, Endpoint
from llmoffload.runtime.executor import Executor, Planner, Request, TooLong
from llmoffload.runtime.media import MAX_BASE64_CHARS
from llmoffload.runtime.trace import result_json

# a workflow name and a question (1 MiB is plenty), and an image and audio in base64
MAX_BODY_BYTES = (1 << 20) + 2 * MAX_BASE64_CHARS
TIMEOUT_S = 120.0  # a request's whole run, retries included
PROBE_S = 2.0  # /health waits this long for each endpoint


class BodyLimit:
    """ASGI middleware: a body over ``limit`` bytes gets 413 and the connection is closed,
    so the rest is never read. A declared Content-Length is refused before reading
    anything; a chunked body as soon as its chunks pass the limit."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = int(Headers(scope=scope).get("content-length") or 0)
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            if declared <= self.limit:
                message = await receive()
                seen += len(message.get("body", b""))
                if seen <= self.limit:
                    return message
            # raised while FastAPI reads the body, which passes an HTTPException on
            raise HTTPException(
                413, f"request body over {self.limit} bytes", {"Connection": "close"}
            )

        await self.app(scope, limited, send)


async def probe(client: httpx.AsyncClient, ep: Endpoint) -> str | None:
    """Why the endpoint is unreachable (no 200 to GET its kind's health path in PROBE_S),
    or None."""
    try:
        resp = await client.get(ep.base_url + ep.kind.health_path, timeout=PROBE_S)
    except httpx.TimeoutException:
        return f"no answer in {PROBE_S:g} s"
    except httpx.HTTPError as exc:
        return type(exc).__name__
    return None if resp.status_code == 200 else f"HTTP {resp.status_code}"


async def hung_up(raw: HTTPRequest) -> None:
    """Returns once the client is gone: with the body read, the next message says so."""
    while (await raw.receive())["type"] != "http.disconnect":
        pass


def create_app(
    bound: Bound,
    plan: Planner,
    capacity: int = 8,
    max_body: int = MAX_BODY_BYTES,
    timeout_s: float = TIMEOUT_S,
    together: bool = True,
) -> FastAPI:
    """The FastAPI application for one deployment and policy."""
    admitted = 0
    client: httpx.AsyncClient | None = None
    executor: Executor | None = None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal client, executor
        limits = httpx.Limits(max_connections=max(64, 2 * sum(bound.concurrency)))
        async with httpx.AsyncClient(limits=limits) as client:
            executor = Executor(bound, plan, client, together=together)
            yield

    app = FastAPI(title="llmoffload", lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=max_body)

    @app.exception_handler(RequestValidationError)
    async def unprocessable(_: HTTPRequest, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's 422 (where and why), less the input it would echo: a bad 3 MB image
        came back as a 4 MB answer."""
        keep = ("type", "loc", "msg")
        return JSONResponse({"detail": [{k: e[k] for k in keep} for e in exc.errors()]}, 422)

    @app.get("/health")
    async def health() -> JSONResponse:
        """Every endpoint probed at once; 503 when the cloud, everyone's fallback, is down."""
        assert client is not None, "the lifespan starts the client"
        sc = bound.scenario
        errors = await asyncio.gather(*(probe(client, ep) for ep in bound.endpoints))
        cloud = sc.servers[sc.cloud].name
        down = [s.name for s, e in zip(sc.servers, errors, strict=True) if e is not None]
        body: dict[str, Any] = {
            "status": "down" if cloud in down else "degraded" if down else "ok",
            "scenario": sc.name,
            "servers": [
                {"name": s.name, "url": ep.base_url, "reachable": err is None, "error": err}
                for s, ep, err in zip(sc.servers, bound.endpoints, errors, strict=True)
            ],
            "workflows": list(sc.workflows),
            "in_flight": admitted,
            "capacity": capacity,
        }
        if cloud in down:
            body["reason"] = (
                f"the cloud '{cloud}' is unreachable ({errors[sc.cloud]}): "
                "it is the fallback for every subtask"
            )
        return JSONResponse(body, 503 if cloud in down else 200)

    @app.post("/v1/requests")
    async def submit(request: Request, raw: HTTPRequest) -> dict[str, Any]:
        return await answer(request, raw)

    @app.post("/v1/requests/upload")
    async def upload(
        raw: HTTPRequest,
        workflow: str = Form(),
        text: str = Form(),
        image: UploadFile | None = None,
        audio: UploadFile | None = None,
    ) -> dict[str, Any]:
        media = [("image", image), ("audio", audio)]
        files = {kind: await file.read() for kind, file in media if file is not None}
        try:  # the JSON route's Request, its payload checks and its 422 for either route
            request = Request.model_validate({"workflow": workflow, "text": text, **files})
        except ValidationError as exc:
            errors = [e | {"loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
            raise RequestValidationError(errors) from None
        return await answer(request, raw)

    async def answer(request: Request, raw: HTTPRequest) -> dict[str, Any]:
        """Admit, plan and run one request; its answer and trace, or the HTTP error."""
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
        work = asyncio.ensure_future(executor.run([request]))
        gone = asyncio.ensure_future(hung_up(raw))
        try:
            done, _ = await asyncio.wait(
                (work, gone), timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:  # also when this handler is cancelled: no call may outlive its request
            work.cancel()
            gone.cancel()
            await asyncio.gather(work, gone, return_exceptions=True)
            admitted -= 1
        if work not in done:
            why = "the client hung up" if gone in done else f"no answer in {timeout_s:g} s"
            raise HTTPException(504, f"{why}: the request's endpoint calls were cancelled")
        try:
            batch = work.result()
        except TooLong as exc:
            raise HTTPException(413, str(exc)) from None
        except OffloadError as exc:
            raise HTTPException(400, str(exc)) from None
        (result,) = batch.results
        if result.error is not None:
            raise HTTPException(502, result.error)
        return result_json(batch, result)

    return app
