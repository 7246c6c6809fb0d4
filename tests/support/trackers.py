"""Tracked runs read back with the trackers' own readers (MlflowClient, tensorboard's
EventAccumulator), as {metric key: {step: value}}, and the numbers a run's records say they hold."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path


def expected_metrics(run_dir: Path, nodes: int) -> dict[str, dict[int, float]]:
    """What a tracker must hold of a run's metrics.jsonl, computed here from the file: every
    numeric field of every record as node-N/field (server/field) at its round, and mean/field per
    round over the nodes that recorded it."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    want: dict[str, dict[int, float]] = defaultdict(dict)
    rows: dict[int, list[dict]] = defaultdict(list)
    for record in records:
        numbers = {
            k: float(v)
            for k, v in record.items()
            if k not in ("node", "round", "tick") and type(v) in (int, float)
        }
        prefix = "server" if record["node"] == "server" else f"node-{record['node']}"
        for key, value in numbers.items():
            want[f"{prefix}/{key}"][record["round"]] = value
        if record["node"] != "server":
            rows[record["round"]].append(numbers)
    for round_, numbers in rows.items():
        for key in {k for row in numbers for k in row}:
            values = [row[key] for row in numbers if key in row]
            want[f"mean/{key}"][round_] = sum(values) / len(values)
    return dict(want)


def mlflow_metrics(store: Path) -> tuple[dict[str, dict[int, float]], dict[str, str], list[str], str]:
    """The one MLflow run of a file store: its metrics, params, artifact paths and status."""
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    experiments = [e.experiment_id for e in client.search_experiments()]
    (run,) = client.search_runs(experiments)
    metrics = {
        key: {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
        for key in run.data.metrics
    }
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    return metrics, run.data.params, artifacts, run.info.status


def tensorboard_events(folder: Path):
    """tensorboard's EventAccumulator over a log folder, loaded whole."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def tensorboard_metrics(folder: Path) -> dict[str, dict[int, float]]:
    events = tensorboard_events(folder)
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def assert_holds(held: dict[str, dict[int, float]], want: dict[str, dict[int, float]]) -> None:
    """`held` has exactly `want`'s keys and steps, each value equal to float32 precision (TensorBoard
    keeps scalars as float32)."""
    assert sorted(held) == sorted(want)
    for key, steps in want.items():
        assert sorted(held[key]) == sorted(steps), key
        for step, value in steps.items():
            assert abs(held[key][step] - value) <= 1e-6 * max(1.0, abs(value)), (key, step)
