"""One node's part in the run's scenario: its roles (attacker, crash, straggler), drawn from the
experiment seed so every process agrees, and the events it records.

Events are collected from any thread (the senders, on the event loop, report losses and delays)
and taken by the round loop, which emits them to the launcher as "scenario" events: the launcher
appends them to the run's events.jsonl as {time_s, round, node, kind, details}
(`fedgossip.schema.events.scenario_event`).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedgossip.base.seeding import stream
from fedgossip.config.sections import ScenarioSection
from fedgossip.schema.events import scenario_event

# each role's key in the "scenario" stream and the key of its fraction
_CHOICES = {
    "attackers": (0, "attacker_fraction"),
    "crash": (1, "crash_fraction"),
    "stragglers": (2, "straggler_fraction"),
}


def chosen(scenario: ScenarioSection, role: str, count: int, seed: int) -> frozenset[int]:
    """The nodes of `role` ("attackers", "crash", "stragglers"): the ids given, else the first
    round(fraction * count) of a seeded permutation (so a smaller fraction's set is inside a larger's)."""
    ids = getattr(scenario, role)
    if ids:
        return frozenset(ids)
    key, fraction = _CHOICES[role]
    order = stream(seed, "scenario", key).permutation(count)
    return frozenset(int(node) for node in order[: round(getattr(scenario, fraction) * count)])


@dataclass(frozen=True)
class Roles:
    """What the scenario makes of one node."""

    attack: str | None  # the attack it carries out, None: honest
    crash_round: int | None  # the round at which it crashes (before training), None: never by id
    slowdown: float  # its training takes this many times longer


def roles(scenario: ScenarioSection, node: int, count: int, seed: int) -> Roles:
    """Node `node`'s roles in `scenario`."""
    attacks = scenario.attack != "none" and node in chosen(scenario, "attackers", count, seed)
    crashes = scenario.crash_round > 0 and node in chosen(scenario, "crash", count, seed)
    straggles = node in chosen(scenario, "stragglers", count, seed)
    return Roles(
        attack=scenario.attack if attacks else None,
        crash_round=scenario.crash_round if crashes else None,
        slowdown=scenario.slowdown if straggles else 1.0,
    )


class CrashClock:
    """When a node crashes: at its configured round, and at each round with probability
    scenario.crash_rate (one seeded draw per node per round, so reruns crash alike)."""

    def __init__(self, scenario: ScenarioSection, roles_: Roles, node: int, seed: int) -> None:
        self._round = roles_.crash_round
        self._rate = scenario.crash_rate
        self._rng: np.random.Generator = stream(seed, "churn", node)
        self._asked = 0

    def crashes(self, round_: int) -> bool:
        """Whether the node crashes at the start of `round_`; a round is decided once (a node
        that rejoins in the round it crashed in does not crash again)."""
        if round_ <= self._asked:
            return False
        self._asked = round_
        drawn = self._rate > 0 and bool(self._rng.random() < self._rate)
        return round_ == self._round or drawn


class Events:
    """The scenario events of one node, plus the per-round counts its records carry."""

    def __init__(self, node: int, run_start: float) -> None:
        self.node = node
        self.run_start = run_start
        self._lock = threading.Lock()
        self._events: list[dict[str, Any]] = []
        self._counts: dict[int, dict[str, float]] = defaultdict(lambda: {"dropped": 0, "delayed_s": 0.0})

    def add(self, kind: str, round_: int, **details: Any) -> None:
        """Record one event of `kind` in `round_` (now)."""
        event = scenario_event(self.node, round_, self.run_start, kind, details)
        with self._lock:
            self._events.append(event)

    def count(self, round_: int, name: str, amount: float) -> None:
        """Add `amount` to the count `name` ("dropped", "delayed_s") of `round_`."""
        with self._lock:
            self._counts[round_][name] += amount

    def take(self) -> list[dict[str, Any]]:
        """The events since the last call, oldest first."""
        with self._lock:
            events, self._events = self._events, []
            return events

    def take_counts(self, round_: int) -> dict[str, Any]:
        """The counts of `round_` and earlier (pushes sent late), as record fields."""
        with self._lock:
            rounds = [r for r in self._counts if r <= round_]
            counts = [self._counts.pop(r) for r in rounds]
        return {
            "dropped": int(sum(c["dropped"] for c in counts)),
            "delayed_s": round(sum(c["delayed_s"] for c in counts), 4),
        }
