"""The one validation vocabulary: the constraint objects, and every declared key of the config
sections, of TaskConfig and of the registered strategies refusing its constraint's invalid example
with an error that names the key. The keys come from the declarations, so a new one is covered."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, ClassVar

import pytest

from fedgossip.base.constraints import (
    Constrained,
    Constraint,
    InstanceOf,
    Interval,
    ListOf,
    Satisfies,
    StrOptions,
    TableOf,
    require,
)
from fedgossip.config import ExperimentConfig, config_from_dict
from fedgossip.config.sections import FileName
from fedgossip.strategies import registry


def _sections() -> dict[str, type]:
    """Each section of ExperimentConfig (TaskConfig and PeerSection included) by its TOML name."""
    hints = typing.get_type_hints(ExperimentConfig)
    return {
        name: next(a for a in (*typing.get_args(hints[name]), hints[name]) if dataclasses.is_dataclass(a))
        for name in hints
    }


SECTION_KEYS = [
    pytest.param(section, cls, key, id=f"{section}.{key}")
    for section, cls in _sections().items()
    for key in cls.constraints
]

STRATEGY_PARAMS = [
    pytest.param(mode, name, param, id=f"{name}.{param.name}")
    for mode in registry.MODES
    for name in registry.names(mode)
    if mode == registry.lookup(name).modes[0]  # each entry once, in its first mode
    for param in registry.lookup(name).params or ()
]


@pytest.mark.parametrize(("section", "cls"), list(_sections().items()))
def test_every_field_of_every_section_is_declared(section, cls):
    assert cls.section_name == section
    assert list(cls.constraints) == [f.name for f in dataclasses.fields(cls)]


@pytest.mark.parametrize(("section", "cls", "key"), SECTION_KEYS)
def test_every_section_key_refuses_its_invalid_example_naming_the_key(section, cls, key):
    invalid = cls.constraints[key].invalid_example()
    with pytest.raises(ValueError, match=rf"^{section}\.{key}\b"):
        cls(**{key: invalid})
    with pytest.raises(ValueError, match=rf"^{section}\.{key}\b"):
        config_from_dict({section: {key: invalid}})


@pytest.mark.parametrize(("mode", "name", "param"), STRATEGY_PARAMS)
def test_every_strategy_parameter_refuses_its_invalid_example_naming_the_key(mode, name, param):
    invalid = param.constraint.invalid_example()
    data = {"experiment": {"mode": mode}, "strategy": {"name": name, "params": {param.name: invalid}}}
    with pytest.raises(ValueError, match=rf"^strategy\.params\.{param.name} "):
        config_from_dict(data)


def test_the_keys_are_discovered():
    keys = {p.id for p in SECTION_KEYS} | {p.id for p in STRATEGY_PARAMS}
    assert {"nodes.count", "task.learning_rate", "scenario.attackers", "peer.neighbours"} <= keys
    assert {"vca.eps", "krum.f", "fedtrimmedavg.beta", "fair.selection"} <= keys


# --- the constraint objects -------------------------------------------------------------------

EXAMPLES: list[Constraint] = [
    Interval(Integral, 1),
    Interval(Integral, None, 5),
    Interval(Integral, 0, 3),
    Interval(Real, 0, 1, closed="neither"),
    Interval(Real, 0, closed="neither"),
    Interval(Real, None, 1, closed="left"),
    Interval(Real),
    StrOptions("a", "b"),
    InstanceOf(bool),
    InstanceOf(str),
    InstanceOf(dict),
    Satisfies(lambda v: v == "ok", "ok", "no"),
    FileName(10),
    ListOf(Interval(Integral, 0)),
    ListOf(Interval(Real, 0), length=2),
    ListOf(Interval(Integral, 0), distinct=True),
    ListOf(Interval(Real, 0, 1), single=True),
    TableOf(StrOptions("x"), Interval(Integral, 0), optional=True),
]


@pytest.mark.parametrize("constraint", EXAMPLES, ids=str)
def test_the_invalid_example_is_refused_with_the_key_and_the_value(constraint):
    invalid = constraint.invalid_example()
    assert not constraint.accepts(invalid)
    with pytest.raises(ValueError, match=r"^the\.key"):
        constraint.check("the.key", invalid)


@pytest.mark.parametrize(
    ("constraint", "words"),
    [
        (Interval(Integral, 1), "an integer >= 1"),
        (Interval(Integral, 0, 3), "an integer in [0, 3]"),
        (Interval(Integral, None, 5), "an integer <= 5"),
        (Interval(Real, 0, 1, closed="right"), "a finite number in (0, 1]"),
        (Interval(Real, 0.0, 0.5, closed="left"), "a finite number in [0.0, 0.5)"),
        (Interval(Real, 0, closed="neither"), "a finite number > 0"),
        (Interval(Real, None, 2, closed="left"), "a finite number < 2"),
        (Interval(Real), "a finite number"),
        (StrOptions("sync", "async"), "one of sync, async"),
        (InstanceOf(bool), "true or false"),
        (ListOf(Interval(Integral, 0), distinct=True), "a list of distinct items, each an integer >= 0"),
        (ListOf(Interval(Real, 0), length=2), "a list of 2 items, each a finite number >= 0"),
        (TableOf(InstanceOf(str), InstanceOf(bool)), "a table from a string to true or false"),
    ],
)
def test_constraints_describe_themselves(constraint, words):
    assert str(constraint) == words


@pytest.mark.parametrize(
    ("closed", "low_ok", "high_ok"),
    [("both", True, True), ("left", True, False), ("right", False, True), ("neither", False, False)],
)
def test_interval_ends(closed, low_ok, high_ok):
    interval = Interval(Real, 0, 1, closed=closed)
    assert (interval.accepts(0), interval.accepts(1), interval.accepts(0.5)) == (low_ok, high_ok, True)
    assert not interval.accepts(-1e-9) and not interval.accepts(1 + 1e-9)


def test_interval_types_and_conversion():
    real, integer = Interval(Real, 0), Interval(Integral, 0)
    assert real.check("k", 2) == 2.0 and isinstance(real.check("k", 2), float)
    assert integer.check("k", 2) == 2 and type(integer.check("k", 2)) is int
    for bad in (True, math.nan, math.inf, "1", None):
        assert not real.accepts(bad), bad
    for bad in (False, 1.0, 1.5, "1"):
        assert not integer.accepts(bad), bad
    with pytest.raises(ValueError, match=r"^task\.alpha must be a finite number >= 0; got nan$"):
        real.check("task.alpha", math.nan)
    with pytest.raises(ValueError, match="Integral or Real"):
        Interval(int, 0)


def test_options_types_and_predicates():
    assert StrOptions("a", "b").check("k", "b") == "b"
    with pytest.raises(ValueError, match=r"^mode must be one of a, b; got 'c'$"):
        StrOptions("a", "b").check("mode", "c")
    assert InstanceOf(bool).accepts(False) and not InstanceOf(bool).accepts(0)
    assert InstanceOf(str).invalid_example() == 0
    odd = Satisfies(lambda v: v % 2 == 1, "an odd number", 2)
    with pytest.raises(ValueError, match=r"^n must be an odd number; got 4$"):
        odd.check("n", 4)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../x", "must be a plain file name (it names the results folder), not a path; got '../x'"),
        ("a\x00b", "must not contain control characters"),
        ("x" * 11, "must be at most 10 characters; got 11"),
        (" ", "must not be empty"),
        (3, "must be a plain file name of at most 10 characters; got 3"),
    ],
)
def test_file_name_says_what_is_wrong(name, problem):
    with pytest.raises(ValueError, match=r"^experiment\.name ") as err:
        FileName(10).check("experiment.name", name)
    assert problem in str(err.value)
    assert FileName(10).check("k", "my run") == "my run"


def test_lists_name_the_item_at_fault_and_become_tuples():
    ids = ListOf(Interval(Integral, 0), distinct=True)
    assert ids.check("k", [2, 0]) == (2, 0)
    with pytest.raises(ValueError, match=r"^scenario\.crash\[1\] must be an integer >= 0; got -1$"):
        ids.check("scenario.crash", [0, -1])
    with pytest.raises(
        ValueError, match=r"^scenario\.crash must be a list of distinct items.*; got \[1, 1\]$"
    ):
        ids.check("scenario.crash", [1, 1])
    pair = ListOf(Interval(Real, 0), length=2)
    assert pair.check("k", (0, 1)) == (0.0, 1.0)
    assert not pair.accepts([1.0]) and not pair.accepts(1.0)
    noise = ListOf(Interval(Real, 0, 1), single=True)
    assert noise.check("k", 1) == 1.0 and noise.check("k", [0, 0.5]) == (0.0, 0.5)


def test_tables_check_names_and_values():
    table = TableOf(Satisfies(str.isdigit, "a node id", "x"), InstanceOf(str), optional=True)
    assert table.check("k", None) is None and table.check("k", {"1": "a"}) == {"1": "a"}
    with pytest.raises(ValueError, match=r"^peer\.neighbours name must be a node id; got 'x'$"):
        table.check("peer.neighbours", {"x": "a"})
    with pytest.raises(ValueError, match=r"^peer\.neighbours\.1 must be a string; got 5$"):
        table.check("peer.neighbours", {"1": 5})
    assert not TableOf(InstanceOf(str), InstanceOf(str)).accepts(None)


def test_require_names_the_key():
    require(True, "a.b", "is fine")
    with pytest.raises(ValueError, match=r"^a\.b needs c$"):
        require(False, "a.b", "needs c")


@dataclass(frozen=True)
class _Example(Constrained):
    section_name = "example"
    constraints: ClassVar[dict[str, Constraint]] = {
        "rate": Interval(Real, 0),
        "ids": ListOf(Interval(Integral, 0)),
    }

    rate: float = 1.0
    ids: Any = ()

    def check_together(self) -> None:
        require(len(self.ids) < 3, "example.ids", "must hold fewer than 3 ids")


def test_constrained_checks_converts_then_checks_together():
    example = _Example(rate=2, ids=[1, 2])
    assert (example.rate, example.ids) == (2.0, (1, 2)) and isinstance(example.rate, float)
    with pytest.raises(ValueError, match=r"^example\.rate must be a finite number >= 0; got -1$"):
        _Example(rate=-1)
    with pytest.raises(ValueError, match=r"^example\.ids must hold fewer than 3 ids$"):
        _Example(ids=[1, 2, 3])
