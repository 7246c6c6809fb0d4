"""Reading a results folder: the metrics records, the consensus distance and the resolved config
(read through `fedgossip.config`, so a report means by each key what the run did)."""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from fedgossip.config import ExperimentConfig, config_from_dict
from fedgossip.schema import records as schema
from fedgossip.schema.fields import SERVER, Record, consensus_problem, problem
from fedgossip.schema.lines import read_lines

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CONFIG = "config.toml"
CONSENSUS = "consensus.jsonl"
DEFAULT_TARGET = 0.9  # the target accuracy of a run whose config cannot be read


def read_records(run_dir: str | Path) -> list[Record]:
    """Every valid metrics record of a run (`fedgossip.schema.fields`); a torn line (a run killed
    mid-write, a full disk, even cut inside a character), a line that is not a JSON object and a
    malformed record are skipped, not fatal."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        raise ValueError(f"{run_dir} is not a results folder: no {METRICS}")
    return schema.read_records(path)


def not_a_run(run_dir: str | Path) -> str | None:
    """Why `run_dir`, which holds a metrics.jsonl, is not a fedgossip results folder (None if it
    is): its lines are JSON but none is a metrics record (another tool's), or it holds no line
    and the folder has no config.toml of fedgossip (a run that recorded nothing has one)."""
    lines = read_lines(Path(run_dir) / METRICS)
    if any(problem(line) is None for line in lines):
        return None
    if lines:
        keys = sorted({key for line in lines for key in line})
        shown = ", ".join(keys[:8]) + (", ..." if len(keys) > 8 else "")
        return f"none of the {len(lines)} lines of its {METRICS} is a fedgossip record (keys: {shown})"
    if read_config(run_dir) is None:
        return f"its {METRICS} is empty and it has no fedgossip {CONFIG}"
    return None


def read_config(run_dir: str | Path) -> ExperimentConfig | None:
    """The resolved config of a run, read and validated by `fedgossip.config` as the run was.

    None when the folder has none, or it cannot be read or no longer validates (a torn file, a key
    this fedgossip does not know, a user's strategy not importable here): the reports then say what
    the records alone say (the folder's name, gossip mode, no scenario, `DEFAULT_TARGET`)."""
    try:
        table = read_config_table(run_dir)
        return config_from_dict(table) if table else None
    except ValueError:
        return None


def read_config_table(run_dir: str | Path) -> dict[str, Any]:
    """The config.toml of a run as written, a plain dict ({} if it has none); ValueError if it
    cannot be read or is not TOML. (A sweep compares it with the config it would run.)"""
    path = Path(run_dir) / CONFIG
    if not path.exists():
        return {}
    try:
        return tomllib.loads(_read(path).decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ValueError(f"{path} is not a valid config: {err}") from None


def config_table(config: ExperimentConfig | None) -> dict[str, Any]:
    """`config` as a plain nested dict, defaults included ({} without one): what groups of runs
    compare to tell their configs apart."""
    return config.to_dict() if config is not None else {}


def _read(path: Path) -> bytes:
    """The bytes of a results file; an OS error (a folder in its place, unreadable) is a ValueError."""
    try:
        return path.read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror or err}") from None


def read_consensus(run_dir: str | Path, records: list[Record]) -> list[dict[str, Any]]:
    """The consensus distance over rounds, one place for both modes as the reports see it:
    `consensus.jsonl` (gossip: measured by the launcher from the peers' models) if the run has
    one, else the `consensus_*` fields of the server records (Flower: the client models the server
    received). Entries {round, time_s, consensus_distance, consensus_models, ...}, in round order;
    malformed lines are skipped."""
    path = Path(run_dir) / CONSENSUS
    if path.exists():
        entries: list[dict[str, Any]] = read_lines(path)
    else:
        entries = [
            {key: r.get(key) for key in ("round", "time_s", "consensus_distance", "consensus_models")}
            for r in records
            if r.get("node") == SERVER and "consensus_distance" in r
        ]
    valid = [e for e in entries if consensus_problem(e) is None]
    return sorted(valid, key=lambda e: e["round"])


def node_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of learning nodes (not the Flower server's evaluation of the global model)."""
    return [r for r in records if isinstance(r.get("node"), int)]


def evaluated_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records with test figures (a round `experiment.evaluate_every` skips has none)."""
    return [r for r in records if r.get("test_accuracy") is not None]


def by_round(records: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Node records grouped by round, rounds in order."""
    groups: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for record in node_records(records):
        groups[record["round"]].append(record)
    return dict(sorted(groups.items()))
