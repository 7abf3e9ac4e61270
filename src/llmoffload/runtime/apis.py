"""Endpoint kinds: how a prompt is put to an endpoint and its answer read back.

An endpoint's ``api`` (in the deployment file) names one of ``APIS``. Everything the
runtime does with an endpoint that depends on its protocol is here: the path a
completion is posted to, the body's protocol-specific fields, where the answer is in
the reply, whether images and audio can go along, and the path the health check
probes. A new kind is one subclass of ``Api`` and one line in ``APIS``; sending,
retries, planning, traces, calibration and the service stay as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llmoffload.runtime.media import Media


@dataclass(frozen=True)
class Reply:
    """A completion, its token counts, and the server's own prefill and decode milliseconds
    when it reports them (llama.cpp's ``timings``; other servers: None)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    timings_ms: tuple[float, float] | None = None


class Api:
    """One protocol of the OpenAI-compatible family; subclasses say what differs."""

    path = ""  # where a completion is posted, under the endpoint's base_url
    health_path = "/v1/models"  # answers 200 while the server is up
    media = False  # whether a prompt can carry images and audio

    def request(self, prompt: str, media: Sequence[Media]) -> dict[str, Any]:
        """The body's fields that carry the prompt (and its media, where ``media``)."""
        raise NotImplementedError

    def text(self, choice: Any) -> Any:
        """The answer inside the reply's first choice."""
        raise NotImplementedError

    def parse(self, data: Any) -> Reply:
        """The reply's answer and usage; KeyError, TypeError and the like when it is not a
        completion (the caller turns them into one EndpointError)."""
        text = self.text(data["choices"][0])
        usage = data.get("usage") or {}
        timings = data.get("timings")
        if not isinstance(text, str):
            raise TypeError
        return Reply(
            text,
            int(usage.get("prompt_tokens", 0)),
            int(usage.get("completion_tokens", 0)),
            (float(timings["prompt_ms"]), float(timings["predicted_ms"])) if timings else None,
        )


class Chat(Api):
    """``/v1/chat/completions``: one user message; media go as content parts before it."""

    path = "/v1/chat/completions"
    media = True

    def request(self, prompt: str, media: Sequence[Media]) -> dict[str, Any]:
        text = {"type": "text", "text": prompt}
        content = [*(m.part() for m in media), text] if media else prompt
        return {"messages": [{"role": "user", "content": content}]}

    def text(self, choice: Any) -> Any:
        return choice["message"]["content"]


class Completions(Api):
    """``/v1/completions``: the prompt as plain text."""

    path = "/v1/completions"

    def request(self, prompt: str, media: Sequence[Media]) -> dict[str, Any]:
        return {"prompt": prompt}

    def text(self, choice: Any) -> Any:
        return choice["text"]


APIS: dict[str, Api] = {"chat": Chat(), "completions": Completions()}
