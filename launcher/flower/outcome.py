"""How a Flower run ended: the gossip `Outcome` plus what Flower and the ServerApp said, the
judgement of the final status, and the error the launcher raises when it cannot start, follow or
finish a run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fedgossip.config import ExperimentConfig
from fedgossip.launcher.runs.outcome import LaunchError, Outcome

T = TypeVar("T")


@dataclass
class FlowerOutcome(Outcome):
    """The outcome of a Flower run: the gossip outcome plus what Flower and the ServerApp said."""

    flower: dict[str, Any] = field(default_factory=dict)

    def info(self) -> dict:
        return {**super().info(), "flower": self.flower}

    def conclude(self, *, done: bool, failed: bool) -> None:
        """The final status: "failed" unless the ServerApp said it was done and nothing failed,
        "partial" when nodes died on the way."""
        if failed or not done:
            self.status = "failed"
            if not self.errors:
                self.errors.append("the run ended without finishing its rounds")
        elif self.dead_nodes:
            self.status = "partial"


def checked(action: Callable[[], T]) -> T:
    """`action()`, its RuntimeError or TimeoutError (a Flower process or `flwr` call failing or not
    answering) as a LaunchError."""
    try:
        return action()
    except (RuntimeError, TimeoutError) as err:
        raise LaunchError(str(err)) from None


def time_limit(config: ExperimentConfig, starts: int = 1) -> float:
    """How long a Flower run may take before the launcher stops it (seconds): `starts` times the
    start-up time (the first start, plus a restart of SuperNodes per churn round) and twice the
    round timeout per round (its train and evaluate messages)."""
    flower = config.flower
    return starts * flower.startup_timeout + config.experiment.rounds * 2 * flower.round_timeout
