"""What a peer keeps for the launcher's consensus observer (client/gossip/transport/retained.py):
only measured rounds, within a byte bound, the oldest dropped first."""

from __future__ import annotations

import numpy as np
import pytest

from fedgossip.client.gossip.transport.retained import MAX_RETAINED_BYTES, RetainedModels, nbytes

pytestmark = pytest.mark.timeout(10)


def test_only_measured_rounds_are_kept_until_released():
    kept = RetainedModels[str](every=3, last=10)
    for round_ in range(11):
        kept.keep(round_, f"model {round_}", 1)
    # every 3rd round and the last; round 0 (the initial model) is a multiple too
    assert [r for r in range(11) if kept.get(r) is not None] == [0, 3, 6, 9, 10]
    kept.release(6)
    assert kept.get(6) is None and kept.get(3) == "model 3" and kept.get(9) == "model 9"


def test_no_observer_keeps_nothing():
    kept = RetainedModels[str](every=0, last=5)
    for round_ in range(6):
        kept.keep(round_, "model", 1)
    assert all(kept.get(r) is None for r in range(6))


def test_a_small_model_is_kept_for_every_round_the_observer_is_behind():
    kept = RetainedModels[int](every=1, last=1000)
    for round_ in range(1, 1001):  # 1000 rounds of a 10 KiB model: 10 MiB
        kept.keep(round_, round_, 10 * 2**10)
    assert all(kept.get(r) == r for r in range(1, 1001))


def test_beyond_the_byte_bound_the_oldest_go_but_two_stay():
    kept = RetainedModels[int](every=1, last=100)
    big = MAX_RETAINED_BYTES // 2 + 1  # two of them are over the bound: they stay, a third does not
    for round_ in (1, 2, 3):
        kept.keep(round_, round_, big)
    assert [kept.get(r) for r in (1, 2, 3)] == [None, 2, 3]
    kept.release(3)
    kept.keep(4, 4, 10)  # 2's bytes and 4's are within the bound
    assert [kept.get(r) for r in (2, 4)] == [2, 4]


def test_a_round_published_again_replaces_its_model():
    kept = RetainedModels[str](every=1, last=5)
    kept.keep(2, "before the crash", 3 * MAX_RETAINED_BYTES // 4)
    kept.keep(2, "after the rejoin", 3 * MAX_RETAINED_BYTES // 4)
    kept.keep(3, "next", 10)
    kept.keep(4, "next", 10)
    assert kept.get(2) == "after the rejoin"  # its bytes counted once: not over the bound


def test_nbytes_counts_an_array_served_twice_once():
    a, b = np.zeros(10, np.float32), np.zeros(3, np.float64)
    assert nbytes([a, b]) == 64
    assert nbytes([a, b], [a, b]) == 64
    assert nbytes([a, b], [a.copy()]) == 104
