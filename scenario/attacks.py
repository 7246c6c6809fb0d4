"""What an adversarial node does: the model it sends instead of its own (model attacks) and the
data it trains on instead of its own (data attacks), and the trigger success rate of a collective.

Model attacks, on the float tensors w of the model the node would send (integer tensors pass):
sign-flip sends -s*w, scale sends s*w, noise sends w + N(0, s^2) (s: scenario.attack_scale),
free-rider sends its initial model (it never shares what it learned), stale the model it held
scenario.stale_rounds rounds ago. Data attacks: label-flip trains on the labels C-1-y; a
collective (Hardt et al., "Algorithmic Collective Action in Machine Learning") plants a trigger
(the last trigger_size features set to the data's maximum) in every example it holds and labels
them all target_label; its success is the share of test examples of other classes that the model
classifies as target_label once the trigger is planted in them.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Sequence

import numpy as np

from fedgossip.config.sections import DATA_ATTACKS, ScenarioSection
from fedgossip.tasks.data import Dataset
from fedgossip.tasks.learner import Learner


class ModelAttack:
    """The model an attacker sends each round, in place of its own."""

    def __init__(
        self, kind: str, scenario: ScenarioSection, initial: Sequence[np.ndarray], rng: np.random.Generator
    ) -> None:
        self.kind = kind
        self.scale = scenario.attack_scale
        self.initial = [np.array(a) for a in initial]
        self.rng = rng
        self.history: deque[list[np.ndarray]] = deque([self.initial], maxlen=scenario.stale_rounds)

    def remember(self, arrays: Sequence[np.ndarray]) -> None:
        """Note the node's model at the end of a round (a stale attacker sends old ones)."""
        self.history.append(list(arrays))

    def forge(self, own: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The model to send instead of `own`."""
        if self.kind == "free-rider":
            return list(self.initial)
        if self.kind == "stale":
            return list(self.history[0])  # the oldest kept: stale_rounds rounds ago (or the initial)
        return [self._tensor(a) if a.dtype.kind == "f" else a for a in own]

    def _tensor(self, array: np.ndarray) -> np.ndarray:
        if self.kind == "sign-flip":
            return (-self.scale * array).astype(array.dtype)
        if self.kind == "scale":
            return (self.scale * array).astype(array.dtype)
        if self.kind == "noise":
            return (array + self.rng.normal(scale=self.scale, size=array.shape)).astype(array.dtype)
        raise ValueError(f"{self.kind!r} is not a model attack")


def trigger_value(data: Dataset) -> float:
    """The value a collective's trigger sets: the largest feature of the shared test set."""
    return float(data.x_test.max())


def with_trigger(x: np.ndarray, size: int, value: float) -> np.ndarray:
    """A copy of `x` with the last `size` features of every row set to `value`."""
    if size > x.shape[1]:
        raise ValueError(f"scenario.trigger_size = {size} exceeds the {x.shape[1]} features of the data")
    planted = x.copy()
    planted[:, -size:] = value
    return planted


def poison_data(kind: str, scenario: ScenarioSection, data: Dataset) -> Dataset:
    """The dataset a data attacker of `kind` trains on (its test set unchanged)."""
    if kind not in DATA_ATTACKS:
        raise ValueError(f"{kind!r} is not a data attack")
    if scenario.target_label >= data.num_classes:
        raise ValueError(
            f"scenario.target_label = {scenario.target_label} but the data has {data.num_classes} classes"
        )
    if kind == "label-flip":
        return dataclasses.replace(data, y_train=data.num_classes - 1 - data.y_train)
    planted = with_trigger(data.x_train, scenario.trigger_size, trigger_value(data))
    return dataclasses.replace(
        data, x_train=planted, y_train=np.full_like(data.y_train, scenario.target_label)
    )


def trigger_success(learner: Learner, scenario: ScenarioSection) -> float | None:
    """The share of test examples not of target_label that `learner` classifies as target_label
    once the trigger is planted in them (None: no such example)."""
    data = learner.data
    others = data.y_test != scenario.target_label
    if not others.any():
        return None
    planted = with_trigger(data.x_test[others], scenario.trigger_size, trigger_value(data))
    return float(np.mean(learner.predict(planted) == scenario.target_label))
