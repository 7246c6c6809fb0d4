"""What an adversarial node does, one registry entry per attack: the model it sends instead of its
own (model attacks) or the data it trains on instead of its own (data attacks), the scenario keys
it reads, and what it adds to every record (a collective's trigger success).

Model attacks, on the float tensors w of the model the node would send (integer tensors pass):
sign-flip sends -s*w, scale sends s*w, noise sends w + N(0, s^2) (s: scenario.attack_scale),
free-rider sends its initial model (it never shares what it learned), stale the model it held
scenario.stale_rounds rounds ago. Data attacks: label-flip trains on the labels C-1-y; a
collective (Hardt et al., "Algorithmic Collective Action in Machine Learning") plants a trigger
(the last trigger_size features set to the data's maximum) in every example it holds and labels
them all target_label; its success is the share of test examples of other classes that the model
classifies as target_label once the trigger is planted in them.

Both runtimes dispatch through `poisoner` (data), `model_attacker` (model) and `record_fields`,
so a new attack is one entry in `ATTACKS` (its name must also be in the config's
`scenario.attack` choices: config/sections.py sits below this package and cannot import it).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from fedgossip.config.sections import ScenarioSection
from fedgossip.tasks.data import Dataset
from fedgossip.tasks.learner import Learner


class ModelAttack:
    """The model an attacker sends each round, in place of its own (its entry's `forge`)."""

    def __init__(
        self, kind: str, scenario: ScenarioSection, initial: Sequence[np.ndarray], rng: np.random.Generator
    ) -> None:
        if kind not in ATTACKS or ATTACKS[kind].kind != "model":
            raise ValueError(f"{kind!r} is not a model attack")
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
        return ATTACKS[self.kind].apply(self, own)


def _per_float_tensor(change: Callable[[ModelAttack, np.ndarray], np.ndarray]) -> Callable:
    """A model attack that changes every float tensor by `change` (integer tensors pass)."""

    def forge(attacker: ModelAttack, own: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [change(attacker, a).astype(a.dtype) if a.dtype.kind == "f" else a for a in own]

    return forge


def free_rider(attacker: ModelAttack, own: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Its initial model: it never shares what it learned."""
    return list(attacker.initial)


def stale(attacker: ModelAttack, own: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The oldest model kept: stale_rounds rounds ago (or the initial one)."""
    return list(attacker.history[0])


def trigger_value(data: Dataset) -> float:
    """The value a collective's trigger sets: the largest feature of the shared test set (its
    evaluation subset with task.eval_examples)."""
    return float(data.test_set()[0].max())


def with_trigger(x: np.ndarray, size: int, value: float) -> np.ndarray:
    """A copy of `x` with the last `size` features of every row set to `value`."""
    if size > x.shape[1]:
        raise ValueError(f"scenario.trigger_size = {size} exceeds the {x.shape[1]} features of the data")
    planted = x.copy()
    planted[:, -size:] = value
    return planted


def label_flip(data: Dataset, scenario: ScenarioSection) -> Dataset:
    """The labels C-1-y."""
    return dataclasses.replace(data, y_train=data.num_classes - 1 - data.y_train)


def collective(data: Dataset, scenario: ScenarioSection) -> Dataset:
    """The trigger planted in every example, all labelled target_label."""
    planted = with_trigger(data.x_train, scenario.trigger_size, trigger_value(data))
    return dataclasses.replace(
        data, x_train=planted, y_train=np.full_like(data.y_train, scenario.target_label)
    )


def trigger_success(learner: Learner, scenario: ScenarioSection) -> float | None:
    """The share of test examples not of target_label that `learner` classifies as target_label
    once the trigger is planted in them (None: no such example); with task.eval_examples, of
    the evaluation subset in every round."""
    data = learner.data
    x_test, y_test = data.test_set()
    others = y_test != scenario.target_label
    if not others.any():
        return None
    planted = with_trigger(x_test[others], scenario.trigger_size, trigger_value(data))
    return float(np.mean(learner.predict(planted) == scenario.target_label))


@dataclass(frozen=True)
class Attack:
    """A registered attack. kind "model": `apply(attacker: ModelAttack, own) -> arrays`; kind
    "data": `apply(data, scenario) -> Dataset`. `params`: the scenario keys it reads. `records`:
    the fields it adds to every node's record (name -> function of the node's learner and the
    scenario). `gossip_only`: Flower mode refuses it."""

    kind: Literal["model", "data"]
    apply: Callable[..., Any]
    params: tuple[str, ...] = ()
    records: dict[str, Callable[[Learner, ScenarioSection], Any]] = dataclasses.field(default_factory=dict)
    gossip_only: bool = False


ATTACKS: dict[str, Attack] = {
    "sign-flip": Attack("model", _per_float_tensor(lambda m, a: -m.scale * a), ("attack_scale",)),
    "noise": Attack(
        "model",
        _per_float_tensor(lambda m, a: a + m.rng.normal(scale=m.scale, size=a.shape)),
        ("attack_scale",),
    ),
    "scale": Attack("model", _per_float_tensor(lambda m, a: m.scale * a), ("attack_scale",)),
    "free-rider": Attack("model", free_rider),
    "stale": Attack("model", stale, ("stale_rounds",), gossip_only=True),
    "label-flip": Attack("data", label_flip, ("target_label",)),
    "collective": Attack(
        "data",
        collective,
        ("target_label", "trigger_size"),
        records={"trigger_success": trigger_success},
    ),
}


def poison_data(kind: str, scenario: ScenarioSection, data: Dataset) -> Dataset:
    """The dataset a data attacker of `kind` trains on (its test set unchanged)."""
    attack = ATTACKS.get(kind)
    if attack is None or attack.kind != "data":
        raise ValueError(f"{kind!r} is not a data attack")
    if scenario.target_label >= data.num_classes:
        raise ValueError(
            f"scenario.target_label = {scenario.target_label} but the data has {data.num_classes} classes"
        )
    return attack.apply(data, scenario)


def poisoner(attack: str | None, scenario: ScenarioSection) -> Callable[[Dataset], Dataset] | None:
    """What node's `attack` (None: honest) does to its dataset before its learner sees it, or None
    when it is not a data attack."""
    if attack is None or ATTACKS[attack].kind != "data":
        return None
    return lambda data: poison_data(attack, scenario, data)


def model_attacker(
    attack: str | None, scenario: ScenarioSection, initial: Sequence[np.ndarray], rng: np.random.Generator
) -> ModelAttack | None:
    """The forger of a model attacker (`attack`; None: honest), or None when it is not a model attack."""
    if attack is None or ATTACKS[attack].kind != "model":
        return None
    return ModelAttack(attack, scenario, initial, rng)


def record_fields(scenario: ScenarioSection, learner: Learner) -> dict[str, Any]:
    """The fields the run's attack adds to every node's record (a collective's trigger success)."""
    attack = ATTACKS.get(scenario.attack)
    records = attack.records if attack is not None else {}
    return {name: measure(learner, scenario) for name, measure in records.items()}
