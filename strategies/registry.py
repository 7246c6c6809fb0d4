"""The one registry of aggregation rules: name -> pure function, parameters and their constraints.

Every rule has the signature the gossip merge and the Flower adapter both call::

    rule(own, received, weights, **params) -> NDArrays

``own`` is the node's model (``None`` on a Flower server), ``received`` the neighbours' or
clients' models, ``weights`` their example counts, ``params`` the rule's parameters (the
``[strategy.params]`` table). A rule is registered once, next to its code::

    @register("krum", f=integer(low=0))
    def krum_rule(own, received, weights, *, f: int = 0) -> NDArrays:
        \"\"\"The math (the docstring is the rule's documentation).\"\"\"

The keyword-only parameters of the function are the rule's parameters: their defaults are the
signature's, their constraints (:mod:`fedgossip.base.constraints`) the ones given to
:func:`register` (both must name the same parameters). A user's function, named
``"package.module:function"``, goes through the same path (:func:`resolve`); its parameters are
passed unchecked. Every result, ours or a user's, is checked by the one validator
(:func:`fedgossip.strategies._validation.check_result`) before it is used.

Flower's built-in strategies are declared here by name too (:data:`FLOWER_BUILTINS`, no Flower
import; each names the config keys its arguments come from), so the names allowed in each mode
come from this module only. So do the mechanisms' names (:data:`MECHANISMS`): strategies that
decide which nodes train on which model each round rather than how models merge (``fair``); their
entry, its parts and how to add one are in :mod:`fedgossip.strategies.mechanisms`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from numbers import Integral, Real
from typing import Any, NamedTuple, Protocol

from fedgossip.base.constraints import Constraint, Interval, StrOptions
from fedgossip.base.loading import describe_error, is_reference, load_callable

from ._typing import NDArrays
from ._validation import check_models, check_own, check_result

MODES = ("gossip", "flower")


class RuleFunction(Protocol):
    """The common signature of every rule (see the module docstring)."""

    def __call__(
        self, own: NDArrays | None, received: list[NDArrays], weights: list[float], **params: Any
    ) -> NDArrays: ...


def real(low: float, high: float | None = None, *, high_open: bool = False) -> Interval:
    """A finite real number in ``[low, high]`` (``[low, high)`` with ``high_open``; no ``high``:
    unbounded), kept as a float."""
    return Interval(Real, low, high, closed="left" if high_open else "both")


def integer(low: int, high: int | None = None) -> Interval:
    """An integer ``>= low`` (and ``<= high``)."""
    return Interval(Integral, low, high)


def choice(*options: str) -> StrOptions:
    """One of the strings ``options``."""
    return StrOptions(*options)


@dataclass(frozen=True)
class Param:
    """One parameter of a rule: its name, default value and constraint."""

    name: str
    default: Any
    constraint: Constraint


@dataclass(frozen=True)
class Entry:
    """A named strategy: its parameters (``None`` = unchecked, a user's) and the modes it runs in."""

    name: str
    params: tuple[Param, ...] | None
    modes: tuple[str, ...]

    def bind(self, params: Mapping[str, Any] | None, key: str = "params") -> dict[str, Any]:
        """The full parameter set: ``params`` checked (each error names ``key.NAME``), defaults added.

        Raises
        ------
        ValueError
            On an unknown parameter name (listing the known ones) or a bad value.
        """
        given = dict(params or {})
        if self.params is None:
            return given
        known = {param.name: param for param in self.params}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ValueError(
                f"unknown parameter {key}.{unknown[0]} of strategy {self.name!r}; "
                f"known: {', '.join(known) or 'none'}"
            )
        return {
            name: param.constraint.check(f"{key}.{name}", given[name]) if name in given else param.default
            for name, param in known.items()
        }


@dataclass(frozen=True)
class Rule(Entry):
    """A rule of ours or a user's: a pure function with the common signature, in both runtimes."""

    function: RuleFunction
    min_models: Callable[[Mapping[str, Any]], int] | None = None

    @property
    def doc(self) -> str:
        """The rule's documentation: its function's docstring."""
        return inspect.getdoc(self.function) or ""

    def check_enough(self, params: Mapping[str, Any], models: int, per: str) -> None:
        """ValueError unless the rule with its bound `params` can aggregate `models` models (its
        `min_models`). `per` completes "needs N models per ..." (what aggregates, and why that
        many models); for a rule with an `f` parameter (krum) the message adds the largest f
        that `models` allow."""
        if self.min_models is None or models >= (needed := self.min_models(params)):
            return
        message = f"strategy {self.name!r} with params {dict(params)} needs {needed} models per {per}"
        if "f" in params:
            fits = [
                f for f in range(int(params["f"]), -1, -1) if self.min_models({**params, "f": f}) <= models
            ]
            message += f"; the largest f allowed is {fits[0]}" if fits else "; no value of f allows that few"
        raise ValueError(message)

    def apply(
        self,
        own: NDArrays | None,
        received: Sequence[NDArrays],
        weights: Sequence[float],
        params: Mapping[str, Any],
    ) -> NDArrays:
        """Run the rule on checked inputs and return its checked result.

        Raises
        ------
        ValueError
            On bad inputs or an invalid result (wrong count, shape or dtype, NaN/Inf); and
            whatever the rule itself raises.
        """
        models = check_models(received, "received")
        own_model = None if own is None else check_own(own, models[0])
        result = self.function(own_model, models, [float(w) for w in weights], **params)
        return check_result(result, models[0])


@dataclass(frozen=True)
class FlowerBuiltin(Entry):
    """One of Flower's built-in strategies (Flower mode only): its class in flwr.serverapp.strategy.

    Its ``params`` are keyword arguments of that class, taken from ``[strategy.params]``; its
    ``config_args`` are more, each an (argument, config key "section.key" giving its value) pair.
    ``min_nodes(arguments)``, if given, is the least node count it needs with those (Bulyan).
    """

    flower_class: str
    config_args: tuple[tuple[str, str], ...] = ()
    min_nodes: Callable[[Mapping[str, Any]], int] | None = None


RULES: dict[str, Rule] = {}
"""Our rules by name (filled by :func:`register`)."""

MECHANISMS: dict[str, Entry] = {}
"""Our mechanisms by name (filled by :func:`fedgossip.strategies.mechanisms.register_mechanism`)."""


def _flower(
    name: str,
    flower_class: str,
    *params: Param,
    config_args: tuple[tuple[str, str], ...] = (),
    min_nodes: Callable[[Mapping[str, Any]], int] | None = None,
) -> FlowerBuiltin:
    return FlowerBuiltin(name, params, ("flower",), flower_class, config_args, min_nodes)


_OPTIMISER = (("eta", "flower.server_learning_rate"), ("eta_l", "task.learning_rate"))
_MALICIOUS = (("num_malicious_nodes", "flower.num_malicious"),)
_MOMENTUM = (
    ("server_learning_rate", "flower.server_learning_rate"),
    ("server_momentum", "flower.server_momentum"),
)

FLOWER_BUILTINS: dict[str, FlowerBuiltin] = {
    entry.name: entry
    for entry in (
        _flower("fedavg", "FedAvg"),
        _flower("fedavgm", "FedAvgM", config_args=_MOMENTUM),
        _flower("fedprox", "FedProx", config_args=(("proximal_mu", "flower.proximal_mu"),)),
        _flower("fedadam", "FedAdam", config_args=_OPTIMISER),
        _flower("fedyogi", "FedYogi", config_args=_OPTIMISER),
        _flower("fedadagrad", "FedAdagrad", config_args=_OPTIMISER),
        _flower("fedmedian", "FedMedian"),
        _flower("fedtrimmedavg", "FedTrimmedAvg", Param("beta", 0.2, real(0.0, 0.5, high_open=True))),
        _flower("flwr-krum", "Krum", config_args=_MALICIOUS),  # `krum` is ours, in both modes
        _flower(
            "bulyan",
            "Bulyan",
            config_args=_MALICIOUS,
            min_nodes=lambda args: 4 * args["num_malicious_nodes"] + 3,
        ),
    )
}
"""Flower's built-ins by fedgossip name (Flower's Krum is `flwr-krum`: `krum` is ours)."""


def register(
    name: str, *, min_models: Callable[[Mapping[str, Any]], int] | None = None, **constraints: Constraint
) -> Callable[[RuleFunction], RuleFunction]:
    """Decorator: register ``function`` as rule ``name`` with one constraint per keyword-only
    parameter.

    ``min_models(params)``, if given, is the least number of models (own included) the rule
    needs with those parameters; the launcher checks it against the sampled nodes (Flower) and
    the topology's smallest degree (gossip) before the run starts.
    """

    def decorate(function: RuleFunction) -> RuleFunction:
        check_new(name)
        signature = inspect.signature(function).parameters.values()
        keywords = {p.name: p.default for p in signature if p.kind is inspect.Parameter.KEYWORD_ONLY}
        if set(keywords) != set(constraints) or inspect.Parameter.empty in keywords.values():
            raise ValueError(
                f"strategy {name!r}: the constraints {sorted(constraints)} must name the function's "
                f"keyword-only parameters, each with a default: {sorted(keywords)}"
            )
        params = tuple(Param(key, keywords[key], constraint) for key, constraint in constraints.items())
        RULES[name] = Rule(name, params, MODES, function, min_models)
        return function

    return decorate


def check_new(name: str) -> None:
    """ValueError when strategy ``name`` is registered already (a rule, mechanism or built-in)."""
    if name in RULES or name in FLOWER_BUILTINS or name in MECHANISMS:
        raise ValueError(f"strategy {name!r} is registered twice")


def names(mode: str) -> tuple[str, ...]:
    """The registered strategy names allowed in ``mode`` ("gossip" or "flower"), ours first."""
    entries = [*RULES.values(), *MECHANISMS.values(), *FLOWER_BUILTINS.values()]
    return tuple(entry.name for entry in entries if mode in entry.modes)


def is_user_reference(name: str) -> bool:
    """Whether ``name`` has the form of a user's rule, ``package.module:function``."""
    return is_reference(name)


def lookup(name: str) -> Entry:
    """The registered entry ``name``, or an unresolved (not imported) entry for a user's rule.

    Raises
    ------
    ValueError
        When ``name`` is neither registered nor of the form ``package.module:function``.
    """
    entry = _registered(name)
    if entry is not None:
        return entry
    if is_user_reference(name):
        return Entry(name, None, MODES)
    raise ValueError(
        f"must be one of {', '.join([*RULES, *MECHANISMS, *FLOWER_BUILTINS])} "
        f"or a function of yours as package.module:function; got {name!r}"
    )


def _registered(name: str) -> Entry | None:
    return RULES.get(name) or MECHANISMS.get(name) or FLOWER_BUILTINS.get(name)


def resolve(name: str) -> Entry:
    """The entry ``name``, importing a user's ``package.module:function`` (from the working
    directory or ``sys.path``) into a :class:`Rule` with unchecked parameters.

    Raises
    ------
    ValueError
        As :func:`lookup`, or when the module cannot be imported or has no such function.
    """
    registered = _registered(name)
    if registered is not None:
        return registered
    lookup(name)  # ValueError unless of the form package.module:function
    return _user_rule(name)


@cache
def _user_rule(reference: str) -> Rule:
    return Rule(reference, None, MODES, load_callable(reference))


class Outcome(NamedTuple):
    """What a rule gave for one aggregation: the model, or the reason it gave none."""

    model: NDArrays | None
    error: str | None


def run_rule(
    rule: Rule,
    own: NDArrays | None,
    received: Sequence[NDArrays],
    weights: Sequence[float],
    params: Mapping[str, Any],
    round_: int | None = None,
) -> Outcome:
    """:meth:`Rule.apply` that never raises: a failure (an exception in the rule, bad input or an
    invalid result) becomes ``Outcome(None, message)``, the message naming the rule and round."""
    try:
        return Outcome(rule.apply(own, received, weights, params), None)
    except Exception as err:  # a user's rule may raise anything; the caller keeps a model
        where = "" if round_ is None else f" in round {round_}"
        return Outcome(None, f"strategy {rule.name!r} failed{where}: {_describe(err)}")


def _describe(err: BaseException) -> str:
    return describe_error(err, skip=(__file__,))
