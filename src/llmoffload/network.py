"""Communication model (paper §3.1): Shannon rates over OFDMA sub-channels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmoffload.scenario import Scenario


def dbm_to_watt(dbm: float) -> float:
    return 10.0 ** ((dbm - 30.0) / 10.0)


def path_loss_gain(distance_m: float, exponent: float, reference_gain_db: float) -> float:
    """Linear gain of the simplified path-loss model: 10^(g0/10) * d^-alpha."""
    return 10.0 ** (reference_gain_db / 10.0) * distance_m**-exponent


def shannon_bps(bandwidth_hz: float, power_w: float, gain: float, noise_w: float) -> float:
    """r = W log2(1 + P G / sigma^2), in bits per second."""
    return bandwidth_hz * math.log2(1.0 + power_w * gain / noise_w)


def link_rates(scenario: Scenario, distances_m: Sequence[float]) -> tuple[list[float], list[float]]:
    """Uplink and downlink rates (bit/s) between one task's device and every server.

    ``distances_m`` holds one distance per edge server, in server order; the
    cloud is reached over the wired core network at fixed rates.
    """
    net = scenario.network
    distances = iter(distances_m)
    up: list[float] = []
    down: list[float] = []
    for server in scenario.servers:
        if server.kind == "cloud":
            up.append(net.device_cloud_up_mbps * 1e6)
            down.append(net.device_cloud_down_mbps * 1e6)
        else:
            d = next(distances)
            up.append(net.rate_bps(net.device_power_w, d))
            down.append(net.rate_bps(net.edge_power_w, d))
    return up, down
