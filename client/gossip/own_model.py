"""A gossip peer's own model through a round: trained, then merged with what its neighbours sent.

Nothing from training or a merge crashes the peer: a training that gives NaN or Inf is undone
(the model trained from is kept, no loss recorded), and only `gossip.divergence_limit` of them in
a row stop it (`Diverged`); a merge that fails or whose model evaluates to a non-finite loss is
discarded (the trained model is kept). The models installed here are trusted: the peer's own, the
neighbours' that passed the wire's checks, and a merge rule's result that passed its own check.

A round that `experiment.evaluate_every` skips (`ExperimentSection.evaluated`) computes no test
figures: its merged model is kept when its weights are finite (the rule's result check), and the
non-finite-loss guard runs only on evaluated rounds.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from fedgossip.client.gossip.transport.wire import ModelMessage
from fedgossip.schema.tensors import is_finite

if TYPE_CHECKING:
    from fedgossip.client.gossip.peer import GossipPeer

log = logging.getLogger("fedgossip.peer")


class Diverged(Exception):
    """The node's own training kept producing NaN or Inf."""


class Trained(NamedTuple):
    """A round's trained model and its training loss (None: the training was undone)."""

    model: list[np.ndarray]
    loss: float | None


class Merged(NamedTuple):
    """The model a peer keeps after a round's merge, its test loss and accuracy (None: the round
    was not evaluated), and why a merge was discarded (None: it was kept, or nothing to merge)."""

    model: list[np.ndarray]
    test_loss: float | None
    test_accuracy: float | None
    discarded: str | None


class OwnModel:
    """Training and merging on `peer.learner` (which the round plan may swap every round)."""

    def __init__(self, peer: GossipPeer) -> None:
        self.peer = peer
        self.divergences = 0  # non-finite trainings in a row

    def train(self, round_: int, current: list[np.ndarray], unit: str = "epoch") -> Trained:
        """Train round `round_` from `current` (`unit` "epoch": one train() call; "step": one
        minibatch, async gossip) on the plan's learner of the round; a straggler then waits until
        it took `slowdown` times as long. A training that gave NaN or Inf is undone, and Diverged
        raised once gossip.divergence_limit of them came in a row."""
        peer = self.peer
        peer.service.state = "training"
        peer.learner = peer.plan.learner(round_, peer.learner)
        started = time.monotonic()
        loss = peer.learner.train_step() if unit == "step" else peer.learner.train()
        if peer.roles.slowdown > 1:
            time.sleep((peer.roles.slowdown - 1) * (time.monotonic() - started))
        own = peer.learner.get_weights()
        if math.isfinite(loss) and all(map(is_finite, own)):
            self.divergences = 0
            return Trained(own, loss)
        self.divergences += 1
        log.warning("round %d: training gave NaN or Inf; keeping the previous model", round_)
        if self.divergences >= peer.gossip.divergence_limit:
            raise Diverged(
                f"diverged at round {round_}: training gave NaN or Inf in {self.divergences} rounds "
                "in a row (is task.learning_rate too high?)"
            )
        peer.learner.assign(current)
        return Trained(current, None)

    def combine(
        self, round_: int, start: list[np.ndarray], own: list[np.ndarray], messages: list[ModelMessage]
    ) -> tuple[list[np.ndarray], str | None]:
        """The plan's merge of `messages` into `own` (trained from `start`), not evaluated: the
        model (local tensors keep the node's own values; `own` itself when nothing merged or the
        rule failed) and why the merge was discarded (None: kept, or nothing to merge)."""
        peer = self.peer
        # the rule's result is validated (count, shapes, finiteness); a failure is logged
        examples = peer.learner.num_examples
        outcome = peer.compression.merge(
            lambda model: peer.plan.merge(round_, start, model, examples, messages, peer.shared),
            own,
            peer.shared,
        )
        discarded = "merge failed" if outcome.error else None
        if outcome.model is None or discarded is not None:
            return own, discarded
        merged = list(own)
        for i, array in zip(peer.shared, outcome.model, strict=True):
            merged[i] = array
        return merged, None

    def merge(
        self, round_: int, start: list[np.ndarray], own: list[np.ndarray], messages: list[ModelMessage]
    ) -> Merged:
        """Merge (the plan's, from the model trained from, `start`: `combine`) and evaluate if
        round `round_` is evaluated; a merge that fails or yields non-finite values (or,
        evaluated, a non-finite loss) is discarded."""
        peer = self.peer
        learner = peer.learner
        merged, discarded = self.combine(round_, start, own, messages)
        learner.assign(merged)
        if not peer.config.experiment.evaluated(round_):
            return Merged(merged, None, None, discarded)
        whole = peer.config.experiment.whole_test_set(round_)
        test_loss, test_accuracy = learner.evaluate(whole)
        if merged is not own and not math.isfinite(test_loss):
            log.warning("round %d: the merged model's test loss is not finite; keeping the own model", round_)
            merged, discarded = own, "merged loss not finite"
            learner.assign(own)
            test_loss, test_accuracy = learner.evaluate(whole)
        return Merged(merged, test_loss, test_accuracy, discarded)
