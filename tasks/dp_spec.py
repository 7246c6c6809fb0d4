"""DpSgdSpec: what a node's DP-SGD is asked (no torch import: the task builder and config use it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DpSgdSpec:
    """What `[privacy]` asks of DP-SGD (checked there): sigma (or a target epsilon, 0 = none,
    for which each node calibrates sigma to its own q and the run's planned steps), the clipping
    norm C, delta, and the rounds the run plans (for the calibration)."""

    noise_multiplier: float
    max_grad_norm: float
    delta: float
    target_epsilon: float
    rounds: int
