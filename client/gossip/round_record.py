"""What a gossip peer writes down: a round's metrics record, the record of a jump to a neighbour's
round (catch-up, rejoin), and the scenario events (attack, straggler, crash, rejoin, topology,
network faults) in the order they happened.

Each record carries the `layer_variance` of the model kept and the scenario's fields of its round
(the node's attack, the trigger success of a collective attack, the round's network fault counts,
and after a rejoin in step with the neighbours the rejoin's `rounds_missed` and `rejoin_s`), and
with task.eval local or both the `local_accuracy` of the model evaluated (the learner holds it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from fedgossip.client.gossip.transport.wire import ModelMessage
from fedgossip.scenario.attacks import record_fields
from fedgossip.schema.events import Emit, record_event
from fedgossip.schema.records import metric, record
from fedgossip.strategies.diagnostics import layer_variance

if TYPE_CHECKING:
    from fedgossip.client.gossip.peer import GossipPeer
    from fedgossip.tasks.learner import Learner


def local_fields(learner: Learner, test_accuracy: float | None) -> dict[str, Any]:
    """The record's `local_accuracy` of an evaluated round with task.eval local or both (none
    otherwise: a run with task.eval = "global" keeps its records as they were)."""
    if test_accuracy is None:
        return {}
    local = learner.local_accuracy(test_accuracy)
    return {} if local is None else {"local_accuracy": metric(local)}


class RoundRecords:
    """The records and events of one peer (its learner, roles, scenario and event queue)."""

    def __init__(self, peer: GossipPeer) -> None:
        self.peer = peer
        self.rejoined: dict[str, Any] = {}  # rounds_missed and rejoin_s, for the next record

    def announce_roles(self) -> None:
        """The scenario events of the start: the node's attack, its slowdown."""
        roles, events = self.peer.roles, self.peer.events
        if roles.attack is not None:
            events.add("attack", 0, attack=roles.attack)
        if roles.slowdown > 1:
            events.add("straggler", 0, slowdown=roles.slowdown)

    def round(
        self,
        round_: int,
        current: list[np.ndarray],
        messages: Sequence[ModelMessage],
        *,
        discarded: str | None,
        **fields: Any,
    ) -> dict[str, Any]:
        """The record event of round `round_`: the model kept after the merge of `messages`
        (`current`), with the schedule's `fields` (losses, bytes sent, the plan's fields)."""
        peer = self.peer
        return record_event(
            record(
                peer.node,
                round_,
                peer.run_start,
                num_examples=peer.learner.num_examples,
                bytes_received=sum(m.nbytes for m in messages),
                neighbours_heard=[m.sender for m in messages],
                merged=0 if discarded else len(messages),
                refused=peer.inbox.take_refused(),
                discarded=discarded,
                **fields,
                layer_variance=layer_variance(peer.names, current),
                **self._scenario_fields(round_),
                **peer.config.privacy.record_fields(
                    peer.learner.epsilon if peer.sharing is None else peer.sharing.epsilon
                ),
                **local_fields(peer.learner, fields.get("test_accuracy")),
            ),
        )

    def caught_up(self, message: ModelMessage, behind: int, **extra: Any) -> dict[str, Any]:
        """The record of a jump from round `behind` to the adopted model's round, evaluated, with
        where it came from (`extra`: a rejoin's fields)."""
        peer = self.peer
        whole = peer.config.experiment.whole_test_set(message.round)
        test_loss, test_accuracy = peer.learner.evaluate(whole)
        return record_event(
            record(
                peer.node,
                message.round,
                peer.run_start,
                train_loss=None,
                test_loss=test_loss,
                test_accuracy=test_accuracy,
                num_examples=peer.learner.num_examples,
                bytes_sent=0,
                bytes_received=message.nbytes,
                neighbours_heard=[],
                merged=0,
                refused=0,
                discarded=None,
                caught_up_from=message.sender,
                jumped_from=behind,
                layer_variance=layer_variance(peer.names, message.arrays),
                **extra,
                **local_fields(peer.learner, test_accuracy),
            ),
        )

    def emit_events(self, emit: Emit) -> None:
        """Emit the scenario events queued since the last call."""
        for event in self.peer.events.take():
            emit(event)

    def _scenario_fields(self, round_: int) -> dict[str, Any]:
        """The scenario's fields of this round's record (none without a scenario)."""
        peer = self.peer
        scenario = peer.scenario
        fields: dict[str, Any] = {}
        if peer.roles.attack is not None:
            fields["attack"] = peer.roles.attack
        fields.update(record_fields(scenario, peer.learner))
        if scenario.network_faults and scenario.network_layer == "sender":  # the kernel's are not counted
            fields.update(peer.events.take_counts(round_))
        fields.update(self.rejoined)
        self.rejoined = {}
        return fields
