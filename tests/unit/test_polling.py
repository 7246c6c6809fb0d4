"""poll_until: the one polling-with-deadline loop of the launcher."""

from __future__ import annotations

import time

import pytest

from fedgossip.base.polling import poll_until


def test_returns_the_first_truthy_value_of_the_predicate():
    answers = iter([None, 0, "", "ready", "later"])
    assert poll_until(lambda: next(answers), 5, 0.01, "an answer") == "ready"


def test_times_out_naming_what_it_waited_for_after_the_timeout():
    calls = []
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="waiting for the moon"):
        poll_until(lambda: calls.append(time.monotonic()), 0.3, 0.05, "the moon")
    waited = time.monotonic() - started
    assert 0.3 <= waited < 2.0
    assert calls[-1] - started >= 0.3  # a last try at the deadline
    assert len(calls) >= 3  # tried again and again, not one blind sleep


def test_an_exception_of_the_predicate_ends_the_wait():
    def explode():
        raise RuntimeError("the process exited")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="exited"):
        poll_until(explode, 30, 0.05, "anything")
    assert time.monotonic() - started < 1.0
