"""The bounded log of refused calls (client/gossip/transport/refusals.py): one line per key and
interval, a budget of lines per interval over all keys, the refusals left out counted in the next
line written."""

from __future__ import annotations

import logging

from fedgossip.client.gossip.transport.refusals import RefusalLog, caller_host


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def refusal_log(caplog, **limits) -> tuple[RefusalLog, Clock]:
    caplog.set_level(logging.WARNING, logger="refusals-test")
    clock = Clock()
    return RefusalLog(logging.getLogger("refusals-test"), clock=clock, **limits), clock


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def test_one_line_per_key_and_interval_and_the_rest_counted_in_the_next_line(caplog):
    refusals, clock = refusal_log(caplog, interval=60)
    for _ in range(1000):
        refusals.warning(("a", 16), "refused call from %s", "a")
    refusals.warning(("b", 16), "refused call from %s", "b")  # another caller: its own line
    clock.now = 59.9
    refusals.warning(("a", 16), "refused call from %s", "a")
    clock.now = 60.0
    refusals.warning(("a", 16), "refused call from %s", "a")
    assert lines(caplog) == [
        "refused call from a",
        "refused call from b (and 999 more refusals since the line before, not logged)",
        "refused call from a (and 1 more refusals since the line before, not logged)",
    ]


def test_many_callers_get_no_more_than_the_budget_of_lines_per_interval(caplog):
    refusals, clock = refusal_log(caplog, interval=60, budget=5)
    for caller in range(10_000):  # an outsider calling from many addresses
        refusals.warning((caller, 16), "refused call from %s", caller)
    assert len(lines(caplog)) == 5
    clock.now = 61.0
    refusals.warning((7, 16), "refused call from %s", 7)
    assert lines(caplog)[-1] == (
        "refused call from 7 (and 9995 more refusals since the line before, not logged)"
    )


def test_a_caller_is_its_address_without_the_port_of_each_connection():
    assert caller_host("ipv4:127.0.0.1:55400") == "ipv4:127.0.0.1"
    assert caller_host("ipv6:[::1]:55400") == "ipv6:[::1]"
    assert caller_host("unix:/tmp/socket") == "unix:/tmp/socket"
