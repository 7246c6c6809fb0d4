"""Flower's central differential privacy around any strategy: its DP strategy wrappers (fixed or
adaptive clipping, on the server or on the clients) configured from `[privacy]`.

The wrappers clip each client's update (server-side, or check the clients' clipping: see
`client/flower_privacy.py`) and add Gaussian noise of std noise_multiplier * clip / sampled to the
aggregate of whatever rule they wrap. Flower draws that noise (and adaptive clipping's noisy
clipped count) from numpy's global generator; here it is seeded per round from the experiment
seed, so a run repeats exactly (reproducible noise: a testbed's, not a deployment's secret).

Epsilon (`central_epsilon`): with fixed clipping, each round is a Gaussian mechanism with
sensitivity clip / sampled on the uniform mean of the sampled updates, so after r rounds the
release is (epsilon, delta)-DP per client by Opacus' RDP accountant without subsampling
amplification (q = 1: Flower samples a fixed number of clients, not Poisson). It holds for a
uniform mean; a rule that weights clients unequally (by example count) or selects among them
(median, Krum) has another sensitivity, for which the figure is indicative only. Adaptive
clipping splits the noise between the update and the clipped count; it gets no epsilon here.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
from flwr.serverapp import strategy as flower_strategies
from flwr.serverapp.strategy import Strategy

from fedgossip.base.seeding import stream
from fedgossip.config import ExperimentConfig
from fedgossip.config.privacy import CENTRAL, PrivacySection
from fedgossip.tasks.dp_accounting import gaussian_epsilon

WRAPPERS = {
    "central-fixed-server": "DifferentialPrivacyServerSideFixedClipping",
    "central-fixed-client": "DifferentialPrivacyClientSideFixedClipping",
    "central-adaptive-server": "DifferentialPrivacyServerSideAdaptiveClipping",
    "central-adaptive-client": "DifferentialPrivacyClientSideAdaptiveClipping",
}


class SeededNoise:
    """Mixin (before a Flower DP wrapper): numpy's global generator is seeded from (experiment
    seed, round) while the wrapper aggregates, and restored after."""

    noise_seed: int = 0

    def aggregate_train(self, server_round: int, replies: Any) -> Any:
        state = np.random.get_state()
        np.random.seed(int(stream(self.noise_seed, "central-dp", server_round).integers(2**32)))
        try:
            return super().aggregate_train(server_round, replies)  # type: ignore[misc]
        finally:
            np.random.set_state(state)


@cache
def _seeded(mechanism: str) -> type:
    base = getattr(flower_strategies, WRAPPERS[mechanism])
    return type(f"Seeded{base.__name__}", (SeededNoise, base), {"__doc__": base.__doc__})


def sampled_clients(config: ExperimentConfig) -> int:
    """The clients a round samples (what the wrappers divide the noise by)."""
    return max(int(config.nodes.count * config.flower.fraction_train), min(2, config.nodes.count))


def with_privacy(config: ExperimentConfig, strategy: Strategy) -> Strategy:
    """`strategy` inside Flower's DP wrapper of privacy.mechanism (itself when it is not central)."""
    privacy = config.privacy
    if privacy.mechanism not in CENTRAL:
        return strategy
    sampled = sampled_clients(config)
    wrapper = _seeded(privacy.mechanism)
    if "fixed" in privacy.mechanism:
        wrapped = wrapper(strategy, privacy.noise_multiplier, privacy.max_grad_norm, sampled)
    else:
        wrapped = wrapper(
            strategy,
            privacy.noise_multiplier,
            sampled,
            initial_clipping_norm=privacy.max_grad_norm,
            target_clipped_quantile=privacy.target_clipped_quantile,
            clip_norm_lr=privacy.clip_norm_lr,
            clipped_count_stddev=privacy.clipped_count_stddev or None,
        )
    wrapped.noise_seed = config.experiment.seed
    return wrapped


def central_epsilon(privacy: PrivacySection, rounds: int) -> float | None:
    """The per-client epsilon (at privacy.delta) of `rounds` rounds of central DP with fixed
    clipping (see the module docstring); None for another mechanism or round 0."""
    if not privacy.mechanism.startswith("central-fixed") or rounds < 1:
        return None
    return gaussian_epsilon(privacy.noise_multiplier, rounds, privacy.delta)
