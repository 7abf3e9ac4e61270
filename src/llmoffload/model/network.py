"""Communication model (paper §3.1): Shannon rates over OFDMA sub-channels."""

from __future__ import annotations

import math


def dbm_to_watt(dbm: float) -> float:
    return 10.0 ** ((dbm - 30.0) / 10.0)


def path_loss_gain(distance_m: float, exponent: float, reference_gain_db: float) -> float:
    """Linear gain of the simplified path-loss model: 10^(g0/10) * d^-alpha."""
    return 10.0 ** (reference_gain_db / 10.0) * distance_m**-exponent


def shannon_bps(bandwidth_hz: float, power_w: float, gain: float, noise_w: float) -> float:
    """r = W log2(1 + P G / sigma^2), in bits per second."""
    return bandwidth_hz * math.log2(1.0 + power_w * gain / noise_w)
