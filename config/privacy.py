"""The `[privacy]` section: which privacy mechanism a run uses and its budget, checked once here.

mechanism "none" (the default) changes nothing. "dp-sgd": node-level DP-SGD (`tasks/dp_sgd.py`):
every node of either runtime trains its torch model with per-example clipping to
`max_grad_norm` and Gaussian noise of std `noise_multiplier * max_grad_norm`, Opacus' RDP
accountant reporting the epsilon spent at `delta` in every record. `target_epsilon` > 0 replaces
`noise_multiplier`: each node calibrates its sigma so that experiment.rounds rounds of its own
training spend that epsilon (0: use `noise_multiplier`).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from numbers import Real
from typing import ClassVar

from fedgossip.base.constraints import Constrained, Constraint, Interval, StrOptions
from fedgossip.tasks import TaskConfig
from fedgossip.tasks.dp_spec import DpSgdSpec
from fedgossip.tasks.registry import TORCH, model_entry

MECHANISMS = ("none", "dp-sgd")


@dataclass(frozen=True)
class PrivacySection(Constrained):
    """The privacy mechanism and its parameters (see the module docstring)."""

    section_name = "privacy"
    constraints: ClassVar[dict[str, Constraint]] = {
        "mechanism": StrOptions(*MECHANISMS),
        "noise_multiplier": Interval(Real, 0.0, closed="neither"),
        "target_epsilon": Interval(Real, 0.0),
        "max_grad_norm": Interval(Real, 0.0, closed="neither"),
        "delta": Interval(Real, 0.0, 1.0, closed="neither"),
    }

    mechanism: str = "none"
    noise_multiplier: float = 1.0
    target_epsilon: float = 0.0
    max_grad_norm: float = 1.0
    delta: float = 1e-5

    def check_task(self, task: TaskConfig) -> None:
        """Refuse a task DP-SGD cannot train privately: a model that is not a torch network, data
        whose batches are not uniform Poisson samples of a fixed partition."""
        if self.mechanism != "dp-sgd":
            return
        refused = (
            (model_entry(task.model).family != TORCH, f"task.model {task.model!r}", "a torch model"),
            (task.partition == "dirichlet-sampling", f"task.partition {task.partition!r}", "uniform batches"),
            (bool(task.stream_chunks), f"task.stream_chunks = {task.stream_chunks}", "a fixed partition"),
        )
        for refuse, what, needs in refused:
            if refuse:
                raise ValueError(f"privacy.mechanism 'dp-sgd' cannot run with {what}: it needs {needs}")
        if importlib.util.find_spec("opacus") is None:
            raise ValueError("privacy.mechanism 'dp-sgd' needs Opacus: pip install 'fedgossip[privacy]'")

    def check_model(self, task: TaskConfig, nodes: int, seed: int) -> None:
        """Build node 0's private learner once (the launcher, before it starts any node): a model
        whose layers Opacus cannot train privately (BatchNorm...) is a ValueError naming the layer
        and what to use instead, not a failure of every node."""
        if self.mechanism == "dp-sgd":
            from fedgossip.tasks import build_learner

            build_learner(task, 0, nodes, seed, dp_sgd=self.dp_sgd(1))

    def record_fields(self, epsilon: float | None) -> dict[str, str | float]:
        """A record's privacy fields: the mechanism and the node's spent epsilon (none when the
        mechanism is "none"; no epsilon where none is accounted)."""
        if self.mechanism == "none":
            return {}
        return {"privacy": self.mechanism, **({} if epsilon is None else {"epsilon": epsilon})}

    def dp_sgd(self, rounds: int) -> DpSgdSpec | None:
        """What a node's learner needs for DP-SGD in a run of `rounds` rounds; None without it."""
        if self.mechanism != "dp-sgd":
            return None
        return DpSgdSpec(self.noise_multiplier, self.max_grad_norm, self.delta, self.target_epsilon, rounds)
