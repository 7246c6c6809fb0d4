"""What a node's DP-SGD is asked (`DpSgdSpec`) and the RDP arithmetic every privacy mechanism's
epsilon shares, without torch or Opacus (a linear-model peer sharing noisy models imports neither).

`rdp_to_epsilon` is the RDP-to-(epsilon, delta) conversion of Balle et al. 2020 (Theorem 21), the
one Opacus' RDPAccountant uses, minimised over the orders ALPHAS; `gaussian_epsilon` the epsilon
of k releases of a Gaussian mechanism with noise multiplier sigma (RDP alpha / (2 sigma^2) each,
no subsampling), the accounting of Flower's central DP with fixed clipping and of gossip's
noisy shared models alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# RDP orders: Opacus' defaults and larger ones, which give the tighter bound when a node has taken
# few steps (with only the defaults, the best order is then the largest)
ALPHAS = np.array(
    [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [80, 96, 128, 192, 256, 384, 512]
)


def rdp_to_epsilon(rdp: np.ndarray, delta: float) -> float:
    """The smallest epsilon at `delta` over the orders ALPHAS of the RDP values `rdp`."""
    eps = rdp - (np.log(delta) + np.log(ALPHAS)) / (ALPHAS - 1) + np.log((ALPHAS - 1) / ALPHAS)
    return float(np.nanmin(eps))


def gaussian_epsilon(noise_multiplier: float, releases: int, delta: float) -> float:
    """The epsilon at `delta` of `releases` Gaussian mechanisms of noise multiplier sigma (the
    noise std over the sensitivity), composed in RDP; 0 before the first."""
    if not releases:
        return 0.0
    return rdp_to_epsilon(releases * ALPHAS / (2 * noise_multiplier**2), delta)


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
