"""DP for what a gossip peer shares (privacy.mechanism "dp-share"): each model the peer pushes is
the model it last shared plus its clipped, noised update.

A round's release is r_t = r_{t-1} + clip(m_t - r_{t-1}, C) + N(0, (sigma C)^2 I), where m_t is the
model the peer is about to push, r_0 its initial model (drawn from the seed, no data in it), C =
privacy.max_grad_norm over every float tensor, sigma = privacy.noise_multiplier; integer tensors
(BatchNorm's step count) go as they are. The one release of a round goes to every recipient, so a
round costs one Gaussian mechanism with sensitivity C on the node's whole data (node-level DP, as
Flower's central DP per client); Opacus' RDP accountant composes the releases, without
subsampling amplification (q = 1). The peer itself keeps training and merging its own, noiseless
model. GetModel (how a neighbour that fell behind catches up) serves the last release, not that
model (`GossipPeer.keep` publishes both): serving a release again is post-processing, outside the
accounting at no cost. The run's observer alone (the launcher, proving its secret) reads the
peer's own model, so `consensus_distance` measures the models the peers hold, as without
dp-share; its reads go to the records, never to a node.

`PrivateLinks` puts this in front of any transport's links (gRPC, in process, virtual time), so
every schedule's pushes go through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fedgossip.config.privacy import PrivacySection
from fedgossip.tasks.dp_accounting import gaussian_epsilon


class SharedModelNoise:
    """One peer's releases and their accounting."""

    def __init__(self, privacy: PrivacySection, initial: Sequence[np.ndarray], rng: np.random.Generator):
        self.privacy = privacy
        self.last = [np.array(a, copy=True) for a in initial]
        self.rng = rng
        self.releases = 0

    def release(self, model: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The noisy model to push instead of `model` (and the new last release)."""
        floats = [i for i, a in enumerate(model) if np.issubdtype(np.asarray(a).dtype, np.floating)]
        updates = {i: np.asarray(model[i], np.float64) - self.last[i] for i in floats}
        norm = float(np.sqrt(sum(float((u**2).sum()) for u in updates.values())))
        scale = min(1.0, self.privacy.max_grad_norm / norm) if norm > 0 else 1.0
        std = self.privacy.noise_multiplier * self.privacy.max_grad_norm
        out = [np.array(a, copy=True) for a in model]
        for i in floats:
            noise = self.rng.standard_normal(self.last[i].shape)
            out[i] = (self.last[i] + scale * updates[i] + std * noise).astype(self.last[i].dtype)
        self.last = [np.array(a, copy=True) for a in out]
        self.releases += 1
        return out

    @property
    def epsilon(self) -> float:
        """The epsilon of the releases so far, at privacy.delta (0 before the first)."""
        return gaussian_epsilon(self.privacy.noise_multiplier, self.releases, self.privacy.delta)


class PrivateLinks:
    """A peer's links whose pushes carry the round's release, not the peer's own model."""

    def __init__(self, links: Any, noise: SharedModelNoise) -> None:
        self._links = links
        self.noise = noise
        self._released: tuple[int, list[np.ndarray]] | None = None  # (round, release)

    def push(self, round_: int, arrays: list[np.ndarray], *args: Any, **kwargs: Any) -> Any:
        """The links' push of this round's release (made once per round, at its first push)."""
        if self._released is None or self._released[0] != round_:
            self._released = (round_, self.noise.release(arrays))
        return self._links.push(round_, self._released[1], *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._links, name)
