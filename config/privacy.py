"""The `[privacy]` section: which privacy mechanism a run uses and its budget, checked once here.

mechanism "none" (the default) changes nothing. "dp-sgd": node-level DP-SGD (`tasks/dp_sgd.py`):
every node of either runtime trains its torch model with per-example clipping to
`max_grad_norm` and Gaussian noise of std `noise_multiplier * max_grad_norm`, Opacus' RDP
accountant reporting the epsilon spent at `delta` in every record. `target_epsilon` > 0 replaces
`noise_multiplier`: each node calibrates its sigma so that experiment.rounds rounds of its own
training spend that epsilon (0: use `noise_multiplier`).

Flower mode also runs Flower's own DP (`server/flower_privacy.py`, `client/flower_privacy.py`)
around any rule of ours or Flower's: "central-fixed-server" / "central-fixed-client" (central
DP, updates clipped to `max_grad_norm` by the server or by the clients' `fixedclipping_mod`, the
aggregate noised with std `noise_multiplier * max_grad_norm / sampled`), "central-adaptive-server"
/ "central-adaptive-client" (the clipping norm starts at `max_grad_norm` and follows the
`target_clipped_quantile` of the update norms at rate `clip_norm_lr`, the clipped count noised
with `clipped_count_stddev`, 0: Flower's sampled / 20), and "local" (Flower's `LocalDpMod`: each
reply clipped to `max_grad_norm` and noised for (`local_epsilon`, `delta`)-DP with sensitivity
`max_grad_norm`).

Gossip mode: "dp-share" (`client/gossip/private_sharing.py`) noises what each peer pushes: its
update since its last release clipped to `max_grad_norm`, plus Gaussian noise of std
`noise_multiplier * max_grad_norm`, one release a round, composed by Opacus' RDP accountant.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from numbers import Real
from typing import ClassVar

from fedgossip.base.constraints import Constrained, Constraint, Interval, StrOptions
from fedgossip.tasks import TaskConfig
from fedgossip.tasks.dp_accounting import DpSgdSpec
from fedgossip.tasks.registry import TORCH, model_entry

CENTRAL = (
    "central-fixed-server",
    "central-fixed-client",
    "central-adaptive-server",
    "central-adaptive-client",
)
FLOWER_ONLY = (*CENTRAL, "local")  # Flower's own DP: Flower mode only
MECHANISMS = ("none", "dp-sgd", "dp-share", *FLOWER_ONLY)
# the mechanisms whose epsilon Opacus' RDP accountant gives (DP-SGD also takes its per-example gradients)
ACCOUNTED = ("dp-sgd", "dp-share", "central-fixed-server", "central-fixed-client")


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
        "target_clipped_quantile": Interval(Real, 0.0, 1.0),
        "clip_norm_lr": Interval(Real, 0.0, closed="neither"),
        "clipped_count_stddev": Interval(Real, 0.0),
        "local_epsilon": Interval(Real, 0.0, closed="neither"),
    }

    mechanism: str = "none"
    noise_multiplier: float = 1.0
    target_epsilon: float = 0.0
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    target_clipped_quantile: float = 0.5
    clip_norm_lr: float = 0.2
    clipped_count_stddev: float = 0.0
    local_epsilon: float = 1.0

    def check_task(self, task: TaskConfig) -> None:
        """Refuse a task DP-SGD cannot train privately: a model that is not a torch network, data
        whose batches are not uniform Poisson samples of a fixed partition."""
        if self.mechanism in ACCOUNTED and (importlib.util.find_spec("opacus") is None):
            raise ValueError(
                f"privacy.mechanism {self.mechanism!r} needs Opacus: pip install 'fedgossip[privacy]'"
            )
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

    def check_flower(self, mode: str, strategy: str, sampled: int, own_strategy: bool) -> None:
        """Refuse Flower's DP outside Flower mode, around a mechanism's own strategy (fair
        incentives), and an adaptive noise multiplier that Flower's split of the noise between
        the update and the clipped count cannot give for `sampled` clients a round."""
        if self.mechanism == "dp-share" and mode != "gossip":
            raise ValueError(
                "privacy.mechanism 'dp-share' noises what gossip peers push: "
                "it needs experiment.mode 'gossip'"
            )
        if self.mechanism not in FLOWER_ONLY:
            return
        if mode != "flower":
            raise ValueError(
                f"privacy.mechanism {self.mechanism!r} is Flower's: it needs experiment.mode 'flower'"
            )
        if own_strategy:
            raise ValueError(
                f"privacy.mechanism {self.mechanism!r} wraps a rule or a Flower built-in; strategy.name "
                f"{strategy!r} is a mechanism with its own rounds"
            )
        count_stddev = self.clipped_count_stddev or sampled / 20
        if self.mechanism.startswith("central-adaptive") and self.noise_multiplier >= 2 * count_stddev:
            raise ValueError(
                f"privacy.noise_multiplier = {self.noise_multiplier} must be below 2 * "
                f"privacy.clipped_count_stddev = {2 * count_stddev:g} ({sampled} clients a round; "
                "0 means sampled / 20): raise privacy.clipped_count_stddev or lower the multiplier"
            )

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
