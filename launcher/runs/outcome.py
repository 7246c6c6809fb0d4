"""How a run ended, as the launcher saw it: the one outcome every engine returns (gossip and
Flower alike; a Flower run adds what Flower said, launcher/flower/outcome.py), and the error of a
launcher that cannot start, follow or finish a run."""

from __future__ import annotations

from dataclasses import dataclass, field


class LaunchError(RuntimeError):
    """The launcher could not start, follow or finish the run (a Flower process, the fork server)."""


@dataclass
class Outcome:
    """How a run ended, as the launcher saw it."""

    status: str = "complete"
    dead_nodes: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0
    startup_s: float | None = None
    rounds_without_merge: dict[int, int] = field(default_factory=dict)

    def info(self) -> dict:
        return {
            "status": self.status,
            "dead_nodes": self.dead_nodes,
            "errors": self.errors,
            "wall_time_s": round(self.wall_time_s, 3),
            "startup_s": self.startup_s,
            "rounds_without_merge": {str(n): c for n, c in sorted(self.rounds_without_merge.items())},
        }

    def count_merge(self, node: int, record: dict) -> None:
        """Count a gossip record of `node` that merged nothing though it waited for neighbours."""
        # fair gossip's exploit phase: a peer no neighbour selected merges nothing by design;
        # async gossip: a unit merges only when due (its merge_trigger), nothing else is waited
        waited = (
            not record.get("caught_up_from")
            and record.get("phase") != "exploit"
            and record.get("merge_trigger", "sync") is not None
        )
        if not record.get("merged") and waited:
            self.rounds_without_merge[node] = self.rounds_without_merge.get(node, 0) + 1

    def judge_merges(self, rounds_done: dict[int, int], share: float) -> None:
        """Mark a finished run "degraded" when a live node merged nothing in more than `share` of
        its rounds (e.g. a round timeout too short for any model to arrive), saying which."""
        starved = [
            node
            for node, done in rounds_done.items()
            if node not in self.dead_nodes and done and self.rounds_without_merge.get(node, 0) > share * done
        ]
        if starved and self.status == "complete":
            self.status = "degraded"
            worst = max(starved, key=lambda n: self.rounds_without_merge[n] / rounds_done[n])
            self.errors.append(
                f"degraded: {len(starved)} node(s) merged no neighbour model in more than "
                f"{share:.0%} of their rounds (node {worst}: {self.rounds_without_merge[worst]} of "
                f"{rounds_done[worst]}); see logs/ (round_timeout too short? neighbours refused?)"
            )
