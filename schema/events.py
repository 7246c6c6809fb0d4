"""The events fedgossip's processes send the launcher: one envelope for gossip peers (on their
stdout) and the Flower ServerApp (to its records file), one JSON line each (`schema.lines`).

An event is a JSON object whose "type" is its kind. A metrics record travels as
`{"type": "record", "node": <its node>, "record": <the record>}` (`record_event`), so the record
reaches metrics.jsonl exactly as it was made; a scenario event (a fault, an attack, a rejoin) as
`{"type": "scenario", "node", "round", "time_s", "kind", "details"}` (`scenario_event`), the keys of
a run's events.jsonl. The launcher reads either stream with `check_event`, which turns a malformed
record into an "error" event.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from fedgossip.schema.fields import Record, problem
from fedgossip.schema.lines import decode

Emit = Callable[[dict[str, Any]], None]

RECORD = "record"  # a metrics record
SCENARIO = "scenario"  # a fault, attack or churn event
# the kinds of events a gossip peer emits
PEER_EVENTS = ("ready", RECORD, "error", "done", SCENARIO)
# the kinds the ServerApp emits ("round-start" and "scenario": Flower churn, server/rejoin.py)
SERVER_EVENTS = ("started", RECORD, "node-error", "round-start", SCENARIO, "error", "done")


def record_event(record: Record) -> dict[str, Any]:
    """The event that carries `record` to the launcher (and on to metrics.jsonl)."""
    return {"type": RECORD, "node": record["node"], "record": record}


def scenario_event(
    node: int, round_: int, run_start: float, kind: str, details: dict[str, Any]
) -> dict[str, Any]:
    """The scenario event of `kind` happening to `node` in `round_`, now."""
    return {
        "type": SCENARIO,
        "node": node,
        "round": round_,
        "time_s": round(time.time() - run_start, 4),
        "kind": kind,
        "details": details,
    }


def decode_event(line: bytes | str, kinds: Iterable[str]) -> dict[str, Any] | None:
    """The event on one line if it is one of `kinds` (see `check_event`); None otherwise."""
    return check_event(decode(line), kinds)


def check_event(event: dict[str, Any] | None, kinds: Iterable[str]) -> dict[str, Any] | None:
    """`event` if it is one of `kinds`, None otherwise. A record event whose record is malformed
    (see `fedgossip.schema.fields.problem`) becomes an "error" event saying so."""
    if event is None or event.get("type") not in kinds:
        return None
    if event["type"] == RECORD:
        reason = problem(event.get("record"))
        if reason is not None:
            return {"type": "error", "node": event.get("node"), "error": f"malformed record: {reason}"}
    return event
