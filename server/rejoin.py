"""The ServerApp's side of Flower churn (the plan: scenario/churn.py).

Before each round it emits a "round-start" event (the launcher then stops the SuperNodes that
crash in that round and starts again those that come back) and waits, with a deadline, until the
SuperLink's online nodes match the plan: no message goes to a SuperNode that is being stopped, and
one that comes back takes part at once. A node that comes back registered anew (a new node id
unless SuperNode auth keeps its key's id), so it is asked its partition again; its next record
carries `rounds_missed` and `rejoin_s` (seconds from the start of the round it is back for, when
the launcher restarts it, to its handshake answer), and its rejoin is a "scenario" event. A node
that is not back by the deadline is waited for no longer: it is asked again at each later round.
"""

from __future__ import annotations

import time
from logging import WARNING
from typing import Any

from flwr.serverapp import Grid
from flwr.supercore import log

from fedgossip.scenario.churn import ChurnPlan
from fedgossip.schema.events import Emit, scenario_event
from fedgossip.server.handshake import ask_partitions

POLL_S = 0.5  # seconds between looks at the SuperLink's node list


class Rejoins:
    """Keeps the ServerApp's node labels in step with the churn plan, round by round."""

    def __init__(
        self,
        grid: Grid,
        plan: ChurnPlan,
        labels: dict[int, int],
        count: int,
        emit: Emit,
        run_start: float,
        timeout: float,
    ) -> None:
        """`labels` (node id -> partition id of the `count` nodes) is the dict the strategy and
        the recording grid read; `timeout` bounds each round's wait for nodes to leave and come back."""
        self.grid, self.plan, self.labels, self.count, self.emit = grid, plan, labels, count, emit
        self.run_start, self.timeout = run_start, timeout
        self.expected: dict[int, tuple[int, float]] = {}  # node -> (round it crashed in, back since)
        self.fields: dict[int, dict[str, Any]] = {}  # node -> fields of its next record

    def before_round(self, round_: int) -> None:
        """Announce `round_` and wait until its crashed nodes are gone and its returning ones back."""
        if not self.plan:
            return
        self.emit({"type": "round-start", "round": round_})
        leaving = set(self.plan.crashing(round_))
        now = time.monotonic()
        for outage in self.plan.returning(round_):
            self.expected[outage.node] = (outage.first, now)
            for node_id in [i for i, n in self.labels.items() if n == outage.node]:
                del self.labels[node_id]  # that process was stopped: its id is stale
        deadline = now + self.timeout
        while True:
            present = self._look(round_, deadline)
            if not leaving & present and not set(self.expected) - present:
                return
            if time.monotonic() >= deadline:
                log(
                    WARNING,
                    "round %s: going on with nodes %s connected; still leaving %s, not back %s",
                    round_,
                    sorted(present),
                    sorted(leaving & present),
                    sorted(set(self.expected) - present),
                )
                return
            time.sleep(POLL_S)

    def _look(self, round_: int, deadline: float) -> set[int]:
        """Forget the nodes that went offline, ask the new ones their partition, note who is back;
        return the partitions online now."""
        online = set(self.grid.get_node_ids())
        for node_id in [i for i in self.labels if i not in online]:
            del self.labels[node_id]
        unknown = [i for i in online if i not in self.labels]
        ask_partitions(self.grid, unknown, self.labels, self.count, max(1.0, deadline - time.monotonic()))
        present = set(self.labels.values())
        for node in sorted(set(self.expected) & present):
            first, since = self.expected.pop(node)
            rejoined = {"rounds_missed": round_ - first, "rejoin_s": round(time.monotonic() - since, 4)}
            self.fields[node] = rejoined
            node_id = next(i for i, n in self.labels.items() if n == node)
            self.emit(
                scenario_event(node, round_, self.run_start, "rejoin", {**rejoined, "node_id": str(node_id)})
            )
        return present

    def take(self, node: int) -> dict[str, Any]:
        """The churn fields of `node`'s next record (rounds_missed, rejoin_s once back)."""
        return self.fields.pop(node, {})
