"""The virtual-time engine's clock and in-process transport, in one process: events in (time,
sequence) order, and a push delivered in process through the same checks as a gRPC push."""

from __future__ import annotations

import numpy as np
import pytest

from fedgossip.client.gossip.clock import VirtualClock
from fedgossip.client.gossip.inprocess import InProcessNetwork
from fedgossip.client.gossip.peer import GossipPeer
from fedgossip.client.gossip.transport.wire import encode
from fedgossip.config import PeerSection, load_config

LINE = {0: [1], 1: [0, 2], 2: [1]}  # three peers on a line


def line_peers(*overrides: str) -> list[GossipPeer]:
    """Three peers of the linear task on a line, on one in-process network (no sockets)."""
    network = InProcessNetwork()
    base = load_config(None, ["task.model=linear", "nodes.count=3", "experiment.rounds=2", *overrides])
    peers = []
    for node, neighbours in LINE.items():
        addresses = {str(n): f"127.0.0.1:{n + 1}" for n in neighbours}
        peer = PeerSection(id=node, listen=f"127.0.0.1:{node + 1}", neighbours=addresses)
        peers.append(GossipPeer(base.replace(peer=peer), network))
    return peers


def test_events_run_in_time_order_and_ties_in_the_order_they_were_scheduled():
    clock, seen = VirtualClock(), []

    def note(what: str, then: tuple[float, str] | None = None):
        def action():
            seen.append((clock.now, what))
            if then is not None:
                clock.at(clock.now + then[0], note(then[1]))

        return action

    clock.at(2.0, note("b"))
    clock.at(1.0, note("a", (1.0, "c")))  # c lands at 2.0 too, scheduled after b
    clock.at(2.0, note("d"))
    clock.at(0.5, note("z", (0.0, "zz")))  # zero wait: right after z, before a
    clock.run()
    assert seen == [(0.5, "z"), (0.5, "zz"), (1.0, "a"), (2.0, "b"), (2.0, "d"), (2.0, "c")]
    assert clock() == 2.0
    with pytest.raises(ValueError, match="past"):
        clock.at(1.0, note("late"))


def test_an_in_process_push_passes_the_services_checks():
    peers = line_peers()
    receiver, sender = peers[1], peers[0]
    service, names = receiver.service, sender.names
    good = sender.learner.get_weights()
    accepted = service.deliver(encode(0, 1, 10, names, good), caller=0)
    assert accepted.accepted and [m.sender for m in receiver.inbox.close(1)] == [0]
    # the same refusals as a gRPC push: non-finite values, a sender pushing as another, a round
    # outside the run, a caller that is no neighbour
    bad = [np.full_like(a, np.nan) for a in good]
    cases = [
        (1, encode(0, 2, 10, names, bad), 0, "finite"),
        (1, encode(2, 2, 10, names, good), 0, "pushed as node 2"),
        (1, encode(0, 9, 10, names, good), 0, "implausible round"),
        (0, encode(2, 1, 10, names, good), 2, "not a neighbour"),
    ]
    for to, chunks, caller, why in cases:
        reply = peers[to].service.deliver(chunks, caller=caller)
        assert not reply.accepted and why in reply.detail, (why, reply.detail)
    assert receiver.inbox.take_refused() == 3 and peers[0].inbox.take_refused() == 1
    assert receiver.inbox.close(2) == []


def test_in_process_links_deliver_to_the_neighbours_and_count_the_bytes():
    peers = line_peers()
    middle = peers[1]
    model = middle.learner.get_weights()
    sent = middle.links.push(1, model, 10, linked={0, 2}, alive={0, 2}, deadline=0.0, recipients={0, 2})
    size = sum(a.nbytes for a in model)
    assert {node: f.result() for node, f in sent.items()} == {0: size, 2: size}
    for node in (0, 2):
        (message,) = peers[node].inbox.close(1)
        assert message.sender == 1 and message.nbytes == size
        np.testing.assert_array_equal(message.arrays[0], model[0])
    # a neighbour not among the recipients gets a notice that no model comes
    middle.links.push(2, model, 10, linked={0, 2}, alive={0, 2}, deadline=0.0, recipients={2})
    assert peers[0].inbox.notices(2) == {1} and peers[2].inbox.notices(2) == set()
