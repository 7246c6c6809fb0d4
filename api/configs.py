"""Experiment configs built in Python, validated exactly as `fedgossip run` validates them: from a
TOML file, a dict or an `ExperimentConfig`, with dotted overrides and per-section keywords. Every
bad key or value raises `ConfigError` carrying the CLI's own `error:` message."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import tomli_w

from fedgossip.config import ExperimentConfig, apply_override, config_from_dict, dump_toml
from fedgossip.config.experiment import read_config_data, set_key
from fedgossip.launcher.runs.results import os_error_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Source = str | Path | Mapping[str, Any] | ExperimentConfig | None
"""What a config is made from: a TOML file, a dict of sections, a config, or None (the quickstart)."""

Overrides = Mapping[str, Any] | Iterable[str]
"""{"section.key": value} or the CLI's "section.key=value" strings (values parsed as TOML)."""


class ConfigError(ValueError):
    """Bad input, as the CLI's `error: ...` line (exit 2) says it: a key, a value, a path, a folder."""


def make_config(
    source: Source = None, overrides: Overrides = (), **sections: Mapping[str, Any]
) -> ExperimentConfig:
    """The validated config of `source` with `overrides`, then `sections` (e.g. `nodes={"count": 4}`)
    applied: the same checks and messages as `fedgossip run SOURCE --set ...`; ConfigError if bad."""
    with bad_input():
        return config_from_dict(config_data(source, overrides, **sections))


def config_data(source: Source = None, overrides: Overrides = (), **sections: Mapping[str, Any]) -> dict:
    """The config's TOML table as given (defaults not filled in), overrides applied; unchecked
    but for its form (ValueError)."""
    data = _table(source)
    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            set_key(data, key, value)
    else:
        for item in cli_items(overrides):
            apply_override(data, item)
    for section, table in sections.items():
        if not isinstance(table, Mapping):
            raise ValueError(f"[{section}] must be a table; got {table!r}")
        for key, value in table.items():
            set_key(data, f"{section}.{key}", value)
    return _as_toml(data)


def cli_items(overrides: Iterable[str]) -> list[str]:
    """CLI-style overrides as a list (one string is one item)."""
    return [overrides] if isinstance(overrides, str) else list(overrides)


def as_config(
    source: Source = None, overrides: Overrides = (), **sections: Mapping[str, Any]
) -> ExperimentConfig:
    """`source` itself if it is already a config and nothing changes it, else `make_config`."""
    if isinstance(source, ExperimentConfig) and not overrides and not sections:
        return source
    return make_config(source, overrides, **sections)


def _table(source: Source) -> dict[str, Any]:
    """The (unchecked) TOML table of `source`."""
    if isinstance(source, ExperimentConfig):
        return tomllib.loads(dump_toml(source))
    if isinstance(source, Mapping):
        return {name: dict(table) if isinstance(table, Mapping) else table for name, table in source.items()}
    if source is None or isinstance(source, str | Path):
        return read_config_data(source)
    raise ConfigError(f"a config is a TOML file, a dict or an ExperimentConfig; got {type(source).__name__}")


def _as_toml(data: dict[str, Any]) -> dict[str, Any]:
    """`data` as TOML text would give it back: a value TOML cannot hold (None, an object) is an
    error naming its key, as it could never come from a config file."""
    try:
        return tomllib.loads(tomli_w.dumps(data))
    except TypeError as err:
        raise ValueError(f"{_bad_key(data)}: not a TOML value ({err})") from None


def _bad_key(data: Mapping[str, Any], prefix: str = "") -> str:
    """The dotted key of the first value of `data` that TOML cannot hold."""
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            found = _bad_key(value, dotted + ".")
            if found:
                return found
            continue
        try:
            tomli_w.dumps({"v": value})
        except TypeError:
            return dotted
    return prefix.rstrip(".")


@contextmanager
def bad_input() -> Iterator[None]:
    """Bad input met while running (a folder in use, an unwritable --out) as ConfigError, with the
    CLI's message."""
    try:
        yield
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(str(err)) from None
    except OSError as err:
        raise ConfigError(os_error_text(err)) from None
