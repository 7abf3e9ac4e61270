"""Calibration's fits on made-up calls whose timing is known exactly (no servers): the
token model's three numbers per server, from wall times or from the server's own
timings, and the scenario it writes. The fits on real llama.cpp servers are in
tests/test_runtime.py."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from llmoffload.model.scenario import TIMINGS, load_scenario
from llmoffload.runtime.calibrate import Sample, fit, predicted, relative_errors
from llmoffload.runtime.deployment import Bound, Deployment, Endpoint

PAPER = load_scenario("paper")
TRUE = {  # per server: call ms, prefill ms per prompt token, decode ms per output token
    "edge-text": (20.0, 0.5, 3.0),
    "edge-image": (35.0, 1.25, 4.0),
    "edge-audio": (5.0, 0.0, 2.5),
    "cloud": (150.0, 0.05, 10.0),
}


def bound() -> Bound:
    endpoints = {s.name: Endpoint(base_url="http://127.0.0.1:9", model="m") for s in PAPER.servers}
    return Bound(Deployment(endpoints=endpoints, max_tokens=32), PAPER)


def calls(timings: bool) -> list[Sample]:
    """Every server on prompts of 10-400 tokens and outputs of 4-48, timed exactly by
    TRUE plus the model's upload time (which calibration takes off first)."""
    b = bound()
    shapes = [(p, o) for p in (10, 60, 400) for o in (4, 16, 48)]
    drafts = [
        Sample(k, 8.0 * 4 * p, p, o, 0.0) for k in range(len(PAPER.servers)) for p, o in shapes
    ]
    uploads = [up for up, _ in predicted(PAPER, b, drafts)]
    out = []
    for s, up in zip(drafts, uploads, strict=True):
        call, prefill, decode = TRUE[PAPER.servers[s.server].name]
        ms = call + prefill * s.prompt_tokens + decode * s.output_tokens
        own = (prefill * s.prompt_tokens, decode * s.output_tokens) if timings else None
        out.append(Sample(s.server, s.bits, s.prompt_tokens, s.output_tokens, up + ms / 1e3, own))
    return out


@pytest.mark.parametrize("timings", [False, True], ids=["wall-clock", "server-timings"])
def test_the_token_fit_recovers_each_servers_timing(timings: bool) -> None:
    fitted = fit(bound(), calls(timings))
    assert fitted.compute == "tokens" and fitted.name == "paper-calibrated"
    for server in fitted.servers:
        got = [getattr(server, f) for f in TIMINGS]
        assert got == pytest.approx(TRUE[server.name], rel=1e-6, abs=1e-6)
    for errors in relative_errors(fitted, bound(), calls(timings)):
        assert errors.max() < 1e-6


def test_calls_a_busy_machine_slowed_do_not_move_the_fit() -> None:
    """Two calls in nine per server take three times as long (a neighbour had the CPU):
    the median regression still gives each server's exact timing, where least squares
    would follow the slow calls."""
    slowed = [
        replace(s, seconds=3 * s.seconds) if i % 9 in (2, 6) else s
        for i, s in enumerate(calls(timings=False))
    ]
    for server in fit(bound(), slowed).servers:
        got = [getattr(server, f) for f in TIMINGS]
        assert got == pytest.approx(TRUE[server.name], rel=1e-6, abs=1e-6)


def test_the_server_timings_give_prefill_and_decode_by_their_totals() -> None:
    """Hand-worked: two calls of one server with its own timings and 1 ms of upload-free
    overhead noise: prefill = (30 + 50) / (60 + 100) ms, decode = (40 + 20) / (8 + 4),
    the call overhead the median of wall - prefill - decode."""
    b = bound()
    drafts = [Sample(0, 800.0, 60, 8, 0.0), Sample(0, 800.0, 100, 4, 0.0)]
    up = predicted(PAPER, b, drafts)[0][0]
    samples = [
        Sample(0, 800.0, 60, 8, up + (30 + 40 + 10) / 1e3, (30.0, 40.0)),
        Sample(0, 800.0, 100, 4, up + (50 + 20 + 12) / 1e3, (50.0, 20.0)),
    ]
    others = [s for s in calls(True) if s.server != 0]
    edge = fit(b, samples + others).servers[0]
    assert edge.prefill_ms_per_token == pytest.approx(80 / 160)
    assert edge.decode_ms_per_token == pytest.approx(60 / 12)
    assert edge.call_ms == pytest.approx(11.0)


def test_a_tokens_fit_of_a_cycles_scenario_gives_token_ranges_and_loads(tmp_path: Path) -> None:
    fitted = fit(bound(), calls(False))
    for size in fitted.workload.sizes.values():
        assert (size.prompt_tokens.low, size.prompt_tokens.high) == (10, 400)  # probed
        assert (size.output_tokens.low, size.output_tokens.high) == (1, 32)  # max_tokens
    path = tmp_path / "fitted.yaml"
    path.write_text(yaml.safe_dump(fitted.model_dump(), sort_keys=False))  # as calibrate does
    assert load_scenario(path) == fitted


def test_the_cycles_fit_misses_what_output_length_costs() -> None:
    """The paper's model times a call by its input alone: on calls that differ only in
    their output length it cannot be right for all, where the token model is exact."""
    samples = calls(False)
    cycles = fit(bound(), samples, "cycles")
    assert cycles.compute == "cycles" and all(s.call_ms is None for s in cycles.servers)
    pooled = np.concatenate(relative_errors(cycles, bound(), samples))
    assert np.median(pooled) > 0.1
