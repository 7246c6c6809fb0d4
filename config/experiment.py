"""The experiment config: TOML in, validated frozen dataclasses out, and back to TOML.

`load_config` is the one entry point used by the launcher, the gossip peer and the Flower apps, so a
config means the same thing to every part. Unknown sections and keys, wrong types and bad values all
raise ValueError naming the key.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedgossip.config.sections import (
    FLOWER_STRATEGIES,
    GOSSIP_STRATEGIES,
    ExperimentSection,
    FlowerSection,
    NodesSection,
    PeerSection,
    SecuritySection,
    StrategySection,
    TopologySection,
    require_choice,
)
from fedgossip.tasks import TaskConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

QUICKSTART = Path(__file__).with_name("quickstart.toml")


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: one section per TOML table."""

    experiment: ExperimentSection = field(default_factory=ExperimentSection)
    task: TaskConfig = field(default_factory=TaskConfig)
    nodes: NodesSection = field(default_factory=NodesSection)
    topology: TopologySection = field(default_factory=TopologySection)
    strategy: StrategySection = field(default_factory=StrategySection)
    security: SecuritySection = field(default_factory=SecuritySection)
    flower: FlowerSection = field(default_factory=FlowerSection)
    peer: PeerSection | None = None

    def __post_init__(self) -> None:
        allowed = GOSSIP_STRATEGIES if self.experiment.mode == "gossip" else FLOWER_STRATEGIES
        require_choice(self.strategy.name, f"strategy.name (mode {self.experiment.mode})", allowed)
        if self.strategy.name == "fedprox" and self.flower.proximal_mu > 0 and self.task.model == "linear":
            raise ValueError(
                "strategy.name 'fedprox' trains with a proximal term (flower.proximal_mu > 0) that "
                "task.model 'linear' (scikit-learn) does not have: "
                "use a torch model or flower.proximal_mu = 0"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (TOML-ready) of every section, defaults included."""
        out = {}
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if section is not None:
                out[f.name] = {k: _plain(v) for k, v in dataclasses.asdict(section).items() if v is not None}
        return out

    def replace(self, **sections: Any) -> ExperimentConfig:
        """A copy with whole sections replaced."""
        return dataclasses.replace(self, **sections)


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Read a TOML config (the built-in quickstart when `path` is None) and apply `--set` overrides."""
    source = Path(path) if path is not None else QUICKSTART
    try:
        data = tomllib.loads(source.read_text())
    except FileNotFoundError:
        raise ValueError(f"config file not found: {source}") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{source} is not valid TOML: {err}") from None
    for item in overrides:
        apply_override(data, item)
    return config_from_dict(data)


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one `section.key=value` override in place; the value is parsed as TOML, else a string."""
    key, sep, raw = item.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name:
        raise ValueError(f"--set expects section.key=value; got {item!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    data.setdefault(section, {})[name] = value


def config_from_dict(data: Mapping[str, Any]) -> ExperimentConfig:
    """Validate a nested dict (parsed TOML) into an ExperimentConfig."""
    hints = typing.get_type_hints(ExperimentConfig)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise ValueError(f"unknown section [{unknown[0]}]; known: {', '.join(hints)}")
    sections = {}
    for name, table in data.items():
        if not isinstance(table, Mapping):
            raise ValueError(f"[{name}] must be a table")
        sections[name] = build_section(_section_class(hints[name]), table, name)
    return ExperimentConfig(**sections)


def build_section(cls: type, table: Mapping[str, Any], name: str) -> Any:
    """Build dataclass `cls` from a TOML table, checking key names and value types."""
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(table) - set(hints))
    if unknown:
        raise ValueError(f"unknown key {name}.{unknown[0]}; known: {', '.join(hints)}")
    values = {key: _coerce(value, hints[key], f"{name}.{key}") for key, value in table.items()}
    return cls(**values)


def dump_toml(config: ExperimentConfig) -> str:
    """The config as TOML text, defaults included, so a run can be repeated exactly."""
    import tomli_w

    return tomli_w.dumps(config.to_dict())


def _section_class(hint: Any) -> type:
    """The dataclass inside an `X | None` hint."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against a field's type hint; widen int to float and lists to tuples."""
    options = typing.get_args(hint) if _is_union(hint) else (hint,)
    for option in options:
        ok, converted = _try_type(value, option)
        if ok:
            return converted
    expected = " or ".join(_type_name(o) for o in options if o is not type(None))
    raise ValueError(f"{key} must be {expected}; got {value!r}")


def _try_type(value: Any, option: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(option)
    if option is type(None):
        return value is None, None
    if option is bool:
        return isinstance(value, bool), value
    if option is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if option is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if option is str:
        return isinstance(value, str), value
    if origin is tuple and isinstance(value, (list, tuple)):
        (item,) = typing.get_args(option)[:1]
        converted = [_try_type(v, item) for v in value]
        return all(ok for ok, _ in converted), tuple(v for _, v in converted)
    if origin is dict and isinstance(value, Mapping):
        return all(isinstance(v, str) for v in value.values()), {str(k): v for k, v in value.items()}
    return False, None


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _type_name(option: Any) -> str:
    origin = typing.get_origin(option)
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(option)[0])}"
    if origin is dict:
        return "a table of strings"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        option, str(option)
    )


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
