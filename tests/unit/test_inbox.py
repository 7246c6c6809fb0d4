"""The inbox's rules, by hand: the window (one round late stands in, further ahead is held for a
jump), and silent neighbours waited for again once heard from in step."""

from __future__ import annotations

import time

import numpy as np

from fedgossip.client.gossip.inbox import Inbox
from fedgossip.client.gossip.transport.wire import ModelMessage


def model(sender: int, round_: int, value: float = 0.0) -> ModelMessage:
    return ModelMessage(sender, round_, 10, [np.full(2, value, dtype=np.float32)], 8)


def test_a_model_one_round_late_stands_in_and_one_older_is_refused():
    inbox = Inbox()
    inbox.skip_to(5)
    assert inbox.put(model(1, 4)) is None  # late by one: stands in for round 5
    assert inbox.put(model(2, 3)) == "closed"
    assert inbox.put(model(3, 6)) is None  # the next round is taken too
    assert [(m.sender, m.round) for m in inbox.close(5)] == [(1, 4)]
    assert [(m.sender, m.round) for m in inbox.close(6)] == [(3, 6)]
    assert inbox.take_refused() == 1


def test_models_further_ahead_are_held_and_used_once_the_peer_lands_in_their_round():
    inbox = Inbox()
    assert inbox.put(model(1, 9, 1.0)) == "ahead"
    assert inbox.put(model(1, 8, 2.0)) == "ahead"  # older than the one held: dropped
    assert inbox.put(model(2, 12)) == "ahead"
    assert inbox.put(model(3, 4)) == "ahead"
    assert inbox.wait(1, {1, 2, 3}, time.monotonic()) == {1, 2, 3}  # none is used in round 1
    inbox.skip_to(9)  # a catch-up to round 8: node 1's round 9 is there, node 3's is too old
    assert inbox.wait(9, {1}, time.monotonic()) == set()
    assert [(m.sender, m.round, float(m.arrays[0][0])) for m in inbox.close(9)] == [(1, 9, 1.0)]
    inbox.skip_to(11)  # node 2's round 12 comes into the window
    assert inbox.close(11) == []
    assert [(m.sender, m.round) for m in inbox.close(12)] == [(2, 12)]
    assert inbox.progress() == {1: 9, 2: 12, 3: 4}


def test_a_silent_neighbour_is_waited_for_again_once_heard_from_in_step():
    inbox = Inbox()
    inbox.skip_to(10)
    inbox.mark_silent({1, 2, 3})
    inbox.note(1, 3, refused=False)  # a stale push (it froze at round 3): still silent
    inbox.note(2, 9, refused=False)  # a reply from one round behind: in step again
    assert inbox.put(model(3, 11)) is None  # its model of the next round
    assert inbox.silent() == {1}
    inbox.note(1, None)  # a push without a round proves nothing
    assert inbox.silent() == {1}
