"""What Flower's SecAgg+ (`flower.secure_aggregation = "secagg+"`) can run with, checked once here.

SecAgg+ gives the server the sum of the clients' masked vectors and nothing else, so only the rules
whose aggregate is a weighted sum run under it (`SUMMED`: the weighted average, ours or Flower's,
and VCA, whose per-tensor variances travel as more summed values).
Rules that look at individual models (median, trimmed mean, Krum, fair incentives...) are
refused, and so is Flower's DP, whose wrappers and mods clip or noise individual models around a
Message-API strategy, and flower.codec, which would pack the models SecAgg+ masks. Its integer
parameters must make a valid protocol for the nodes sampled a round: shares, threshold, and a
quantization range whose sum over the sampled nodes fits the 2^32 modulus.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedgossip.config.privacy import FLOWER_ONLY

if TYPE_CHECKING:
    from fedgossip.config.experiment import ExperimentConfig

SUMMED = ("average", "fedavg", "vca")  # the rules whose aggregate SecAgg+'s weighted sums compute
MODULUS = 2**32  # SecAgg+'s modulus_range: masks and sums are taken modulo it


def check_secure_aggregation(config: ExperimentConfig, sampled: int) -> None:
    """ValueError naming the key when flower.secure_aggregation cannot run with `config`
    (`sampled`: the nodes trained a round)."""
    flower = config.flower
    if flower.secure_aggregation == "none":
        return
    asked = f"flower.secure_aggregation {flower.secure_aggregation!r}"
    if config.experiment.mode != "flower":
        raise ValueError(f"{asked} is a Flower-mode feature: it needs experiment.mode 'flower'")
    if config.strategy.name not in SUMMED:
        raise ValueError(
            f"{asked} shows the server only the weighted sum of the models; strategy.name "
            f"{config.strategy.name!r} needs the individual models: use one of {', '.join(SUMMED)}"
        )
    if config.privacy.mechanism in FLOWER_ONLY:
        raise ValueError(
            f"{asked} cannot run with privacy.mechanism {config.privacy.mechanism!r} (Flower's DP "
            "clips or noises individual models): use 'none' or 'dp-sgd'"
        )
    if flower.codec != "none":
        raise ValueError(
            f"{asked} masks the models themselves; flower.codec {flower.codec!r} would pack them first: "
            "use flower.codec = 'none'"
        )
    shares, threshold = flower.secagg_num_shares or sampled, flower.secagg_reconstruction_threshold
    if sampled < 2:
        raise ValueError(
            f"{asked} needs at least 2 nodes a round; nodes.count and fraction_train give {sampled}"
        )
    if flower.secagg_num_shares and not 3 <= shares <= sampled:
        raise ValueError(
            f"flower.secagg_num_shares = {shares} must be 0 (every sampled node) or in [3, {sampled}] "
            f"({sampled} nodes a round)"
        )
    if threshold == 1 or threshold > shares or (flower.secagg_num_shares and threshold >= shares):
        raise ValueError(
            f"flower.secagg_reconstruction_threshold = {threshold} must be 0 (two thirds of the shares) "
            f"or at least 2 and below the {shares} shares (flower.secagg_num_shares)"
        )
    if sampled * flower.secagg_quantization_range > MODULUS:
        raise ValueError(
            f"flower.secagg_quantization_range = {flower.secagg_quantization_range} times the {sampled} "
            f"nodes a round must be at most 2^32 (the sum is taken modulo 2^32)"
        )
