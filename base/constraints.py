"""Declarative constraints on values, in the manner of scikit-learn's `_param_validation`.

A constraint checks a value (returning it, converted: an integer to a float for a real interval, a
list to a tuple), describes itself in words (the error messages say "KEY must be DESCRIPTION; got
VALUE") and gives an invalid example, so one test can feed every declared key a bad value. A
frozen dataclass declares its fields' constraints once (:class:`Constrained`)::

    @dataclass(frozen=True)
    class NodesSection(Constrained):
        section_name = "nodes"
        constraints: ClassVar[dict[str, Constraint]] = {"count": Interval(Integral, 2)}
        count: int = 8

and a public function checks an argument with one: ``Interval(Integral, 1).check("epochs", epochs)``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from numbers import Integral, Real
from typing import Any, ClassVar


def require(condition: bool, key: str, message: str) -> None:
    """Raise ValueError "KEY MESSAGE" unless `condition`: the short explicit form of a check that
    involves several keys, which no single constraint can declare."""
    if not condition:
        raise ValueError(f"{key} {message}")


class Constraint(ABC):
    """A rule one value must follow."""

    def check(self, key: str, value: Any) -> Any:
        """`value`, converted; ValueError naming `key`, the rule and the value when it breaks it."""
        if not self.accepts(value):
            raise ValueError(f"{key} must be {self}; got {value!r}")
        return self.convert(value)

    @abstractmethod
    def accepts(self, value: Any) -> bool:
        """Whether `value` follows the rule."""

    def convert(self, value: Any) -> Any:
        """The accepted `value` in the form it is kept in (itself unless a subclass says so)."""
        return value

    @abstractmethod
    def __str__(self) -> str:
        """The rule in words, completing "must be ..."."""

    @abstractmethod
    def invalid_example(self) -> Any:
        """A value that breaks the rule (for tests)."""


class Interval(Constraint):
    """An integer (`kind` Integral) or a finite real number (`kind` Real, kept as a float) between
    `low` and `high` (None: unbounded), each end included or not as `closed` says: "both",
    "left", "right" or "neither". Booleans are not numbers here."""

    def __init__(self, kind: type, low: float | None = None, high: float | None = None, *, closed="both"):
        if kind not in (Integral, Real) or closed not in ("both", "left", "right", "neither"):
            raise ValueError(f"Interval of Integral or Real, closed both/left/right/neither; got {kind}")
        self.kind, self.low, self.high = kind, low, high
        self.low_closed, self.high_closed = closed in ("both", "left"), closed in ("both", "right")

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, self.kind) or not math.isfinite(value):
            return False
        above = self.low is None or (value >= self.low if self.low_closed else value > self.low)
        below = self.high is None or (value <= self.high if self.high_closed else value < self.high)
        return above and below

    def convert(self, value: Any) -> int | float:
        return int(value) if self.kind is Integral else float(value)

    def __str__(self) -> str:
        noun = "an integer" if self.kind is Integral else "a finite number"
        if self.low is None and self.high is None:
            return noun
        if self.high is None:
            return f"{noun} {'>=' if self.low_closed else '>'} {self.low}"
        if self.low is None:
            return f"{noun} {'<=' if self.high_closed else '<'} {self.high}"
        left, right = "[" if self.low_closed else "(", "]" if self.high_closed else ")"
        return f"{noun} in {left}{self.low}, {self.high}{right}"

    def invalid_example(self) -> Any:
        if self.low is not None:
            return self.low - 1 if self.low_closed else self.low
        if self.high is not None:
            return self.high + 1 if self.high_closed else self.high
        return "not a number"


class StrOptions(Constraint):
    """One of the strings `options` (listed in the given order)."""

    def __init__(self, *options: str):
        self.options = options

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.options

    def __str__(self) -> str:
        return f"one of {', '.join(self.options)}"

    def invalid_example(self) -> str:
        return "|".join(self.options) + "?"


class Registered(StrOptions):
    """One of the names of `registry` (read at each check, so an entry registered later counts)."""

    def __init__(self, registry: Mapping[str, Any]):
        self.registry = registry

    @property
    def options(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(self.registry)


TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a table"}
"""Each TOML value type in words (the config loader's type errors use them too)."""


class InstanceOf(Constraint):
    """A value of type `kind` (bool, str or dict: a TOML table) whatever its content."""

    def __init__(self, kind: type):
        self.kind = kind

    def accepts(self, value: Any) -> bool:
        return isinstance(value, self.kind)

    def __str__(self) -> str:
        return TYPE_NAMES.get(self.kind, f"of type {self.kind.__name__}")

    def invalid_example(self) -> Any:
        return "0" if isinstance(0, self.kind) else 0


class Satisfies(Constraint):
    """A value for which `test` is true, described by `description`, broken by `invalid`: a rule
    of one key that the other constraints do not express (an address, a non-empty string)."""

    def __init__(self, test: Callable[[Any], bool], description: str, invalid: Any):
        self.test, self.description, self.invalid = test, description, invalid

    def accepts(self, value: Any) -> bool:
        return bool(self.test(value))

    def __str__(self) -> str:
        return self.description

    def invalid_example(self) -> Any:
        return self.invalid


class Composite(Constraint):
    """A constraint that defines `check` itself, its errors saying which part of the value breaks
    the rule (an item, a name); it accepts what `check` passes."""

    @abstractmethod
    def check(self, key: str, value: Any) -> Any:
        """`value`, converted; ValueError naming `key` (or the part of it at fault) otherwise."""

    def accepts(self, value: Any) -> bool:
        try:
            self.check("", value)
        except ValueError:
            return False
        return True


class ListOf(Composite):
    """A list (kept as a tuple) whose items each follow `item`, of `length` items if given, with no
    item twice if `distinct`; with `single`, one item alone is accepted too (and kept as is). An
    item's error names it as KEY[INDEX]."""

    def __init__(self, item: Constraint, *, length: int | None = None, distinct=False, single=False):
        self.item, self.length, self.distinct, self.single = item, length, distinct, single

    def check(self, key: str, value: Any) -> Any:
        if self.single and not isinstance(value, (list, tuple)):
            return self.item.check(key, value)
        if not isinstance(value, (list, tuple)) or len(value) != (self.length or len(value)):
            raise ValueError(f"{key} must be {self}; got {value!r}")
        items = tuple(self.item.check(f"{key}[{index}]", item) for index, item in enumerate(value))
        if self.distinct and len(set(items)) != len(items):
            raise ValueError(f"{key} must be {self}; got {list(value)}")
        return items

    def __str__(self) -> str:
        count = f"{self.length} " if self.length else "distinct " if self.distinct else ""
        listed = f"a list of {count}items, each {self.item}"
        return f"{self.item}, or {listed}" if self.single else listed

    def invalid_example(self) -> list[Any]:
        return [self.item.invalid_example()]


class TableOf(Composite):
    """A table (kept as a dict) whose names follow `names` and whose values follow `values`, or
    nothing (None) if `optional`; a value's error names it as KEY.NAME."""

    def __init__(self, names: Constraint, values: Constraint, *, optional=False):
        self.names, self.values, self.optional = names, values, optional

    def check(self, key: str, value: Any) -> Any:
        if value is None and self.optional:
            return None
        if not isinstance(value, Mapping):
            raise ValueError(f"{key} must be {self}; got {value!r}")
        return {
            self.names.check(f"{key} name", k): self.values.check(f"{key}.{k}", v) for k, v in value.items()
        }

    def __str__(self) -> str:
        return f"a table from {self.names} to {self.values}" + (", or none" if self.optional else "")

    def invalid_example(self) -> dict[Any, Any]:
        return {self.names.invalid_example(): self.values.invalid_example()}


class Constrained:
    """A frozen dataclass whose fields are checked against its class's `constraints` (field name ->
    Constraint) when it is built, each error naming `section_name.FIELD`, and kept converted;
    `check_together` then runs the checks that involve several fields."""

    section_name: ClassVar[str] = ""
    constraints: ClassVar[Mapping[str, Constraint]] = {}

    def __post_init__(self) -> None:
        for name, constraint in self.constraints.items():
            value = constraint.check(f"{self.section_name}.{name}", getattr(self, name))
            object.__setattr__(self, name, value)
        self.check_together()

    def check_together(self) -> None:
        """Checks that involve several fields (none unless a subclass has some)."""
