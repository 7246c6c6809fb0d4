"""Flower-mode churn on the deployment engine: the launcher's side of the plan (scenario/churn.py).

When the ServerApp announces a round ("round-start", server/rejoin.py), the SuperNodes of the nodes
that crash in it are stopped by PID (what they started first, then the SuperNode itself: SIGTERM,
so it signs off at the SuperLink at once; SIGKILL after a grace) and the nodes whose outage ends
are started again with the same command line: same partition, node config, port and, with
SuperNode authentication, the same registered key. Each stop is a "crash" event of events.jsonl;
the ServerApp reports each node back ("rejoin", with rounds_missed and rejoin_s), to which the
launcher adds the PID of the new process. The plan is checked before anything starts
(`check_churn`): every round must keep enough nodes up for the strategy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fedgossip.config import ExperimentConfig
from fedgossip.launcher.flower.processes import stop_supernode
from fedgossip.launcher.runs.results import ResultsFolder
from fedgossip.launcher.supervision.processes import Child
from fedgossip.scenario.churn import ChurnPlan
from fedgossip.schema.events import scenario_event
from fedgossip.strategies.mechanisms import mechanism


def check_churn(config: ExperimentConfig, plan: ChurnPlan) -> None:
    """ValueError naming the round when the plan leaves too few nodes up for the strategy (fewer
    than two, or fewer than a robust rule needs), or the strategy waits for every node (fair)."""
    from fedgossip.server.strategy_arguments import strategy_arguments

    if not plan:
        return
    count = config.nodes.count
    if mechanism(config.strategy.name) is not None:
        raise ValueError(
            f"scenario churn: strategy.name {config.strategy.name!r} waits for every node each round; "
            "Flower-mode churn runs the other strategies"
        )
    up, round_ = plan.fewest_up(count)
    where = f"scenario churn leaves {up} of {count} nodes up in round {round_}"
    if up < min(2, count):
        raise ValueError(f"{where}; a round needs at least {min(2, count)}")
    try:
        strategy_arguments(config, nodes=up)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


class SuperNodeChurn:
    """Stops and restarts the run's SuperNodes as the plan says, round by round."""

    def __init__(
        self,
        plan: ChurnPlan,
        children: list[Child],
        start: Callable[[int], Child],
        results: ResultsFolder,
        run_start: float,
    ) -> None:
        """`children`: the supervised processes (a stopped SuperNode leaves the list, its
        restarted process joins it); `start(node)` starts node's SuperNode."""
        self.plan, self.children, self.start = plan, children, start
        self.results, self.run_start = results, run_start
        self.done: set[int] = set()  # rounds already acted on
        self.pids: dict[int, int] = {}  # node -> PID of its restarted SuperNode

    def round_start(self, round_: int) -> None:
        """Stop the nodes that crash in `round_`, start again those back for it (once per round)."""
        if round_ in self.done:
            return
        self.done.add(round_)
        for node in self.plan.crashing(round_):
            child = self._child(node)
            if child is None:
                continue
            self.children.remove(child)
            code = stop_supernode(child)
            self._event(
                node, round_, "crash", down_rounds=self.plan.down_rounds, pid=child.pid, exit_code=code
            )
        for outage in self.plan.returning(round_):
            if self._child(outage.node) is None:
                child = self.start(outage.node)
                self.children.append(child)
                self.pids[outage.node] = child.pid

    def rejoined(self, event: dict[str, Any]) -> None:
        """The ServerApp's "rejoin" event, with the PID of the process that came back."""
        details = event.get("details") if isinstance(event.get("details"), dict) else {}
        node = event.get("node")
        pid = self.pids.get(node) if isinstance(node, int) else None
        self.results.event({**event, "details": {**details, "pid": pid}})

    def _child(self, node: int) -> Child | None:
        """The running SuperNode of `node`, if any."""
        name = f"supernode-{node}"
        return next((c for c in self.children if c.name == name and c.poll() is None), None)

    def _event(self, node: int, round_: int, kind: str, **details: Any) -> None:
        self.results.event(scenario_event(node, round_, self.run_start, kind, details))
