"""A sweep from Python: `fedgossip sweep`'s grid x seeds (the CLI's own `sweep_folder`), each run a
`fedgossip run` of its own, then the comparison."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tomli_w
from rich.console import Console

from fedgossip.api.configs import Overrides, Source, as_config, bad_input, cli_items, config_data
from fedgossip.api.results import Comparison, compare
from fedgossip.api.runs import restored_signals
from fedgossip.config import apply_override
from fedgossip.launcher.experiments.sweep import sweep_folder
from fedgossip.reports.compare import is_sweep
from fedgossip.reports.tracking import Track

BASE_CONFIG = "sweep-config.toml"
"""The sweep folder's copy of a config given in Python (dict or ExperimentConfig): what its runs read."""


def grid_items(grid: Mapping[str, Sequence[Any]]) -> list[str]:
    """{"section.key": [v1, v2]} as the CLI's `section.key=v1,v2` items (values as TOML; a string
    that reads back as itself stays bare, so run folders are named as the CLI names them)."""
    return [f"{key}={','.join(_toml_value(value) for value in values)}" for key, values in grid.items()]


def _toml_value(value: Any) -> str:
    """A grid value as the CLI takes it: a plain string bare (if it reads back as itself), the rest
    as TOML."""
    if isinstance(value, str) and "," not in value and _reads_as(value) == value:
        return value
    return tomli_w.dumps({"v": value}).partition("=")[2].strip()


def _reads_as(text: str) -> Any:
    """What the CLI makes of a `--set` value: TOML, else the text."""
    data: dict[str, Any] = {}
    apply_override(data, f"x.v={text}")
    return data["x"]["v"]


def sweep(
    source: Source = None,
    overrides: Overrides = (),
    *,
    grid: Mapping[str, Sequence[Any]],
    out: str | Path,
    seeds: int = 1,
    jobs: int | None = None,
    console: Console | None = None,
    track: str | None = None,
    track_uri: str | None = None,
    **sections: Mapping[str, Any],
) -> Comparison:
    """Run the grid x seeds of a config into `out` (rerun to resume: finished runs are skipped;
    `track`: each run sent to that tracker as `fedgossip sweep --track` does) and compare them. A
    config given as a file is read by every run as the CLI's sweep reads it; one given in Python is
    written to OUT/sweep-config.toml first (as given: defaults not filled in). KeyboardInterrupt
    after Ctrl-C stopped every run; ConfigError on bad input."""
    out = Path(out)
    as_config(source, overrides, **sections)  # bad input: ConfigError before anything runs
    with bad_input():
        tracked = None if track is None else Track(track, track_uri)
    cli_like = isinstance(source, str | Path | None) and not isinstance(overrides, Mapping) and not sections
    with restored_signals(), bad_input():
        if cli_like:
            config_path, settings = (None if source is None else Path(source)), cli_items(overrides)
        else:  # the config as given, not resolved: a grid may change its strategy and parameters
            out.mkdir(parents=True, exist_ok=True)
            config_path, settings = out / BASE_CONFIG, []
            config_path.write_text(tomli_w.dumps(config_data(source, overrides, **sections)))
        console = console or Console(emoji=False)
        outcome = sweep_folder(config_path, settings, grid_items(grid), seeds, jobs, out, console, tracked)
    if outcome.interrupted:
        raise KeyboardInterrupt(f"sweep interrupted: every run was stopped; rerun into {out} to resume")
    if not is_sweep(out):
        raise RuntimeError(f"no run of the sweep into {out} recorded anything: nothing to compare")
    return compare(out, out=out)
