"""Real runs tracked as they go: the MLflow file store and the TensorBoard log folder a run writes
in its results folder hold every record (read back with MlflowClient and tensorboard's
EventAccumulator, checked against metrics.jsonl); a tracker pointed at an unwritable place: the
run completes (exit 0, every record on disk) and says so in one warning."""

from __future__ import annotations

import json

import pytest

import fedgossip.api as fg
from tests.support import run_cli, set_args
from tests.support.trackers import assert_holds, expected_metrics, mlflow_metrics, tensorboard_metrics

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

TINY = ["nodes.count=4", "experiment.rounds=2"]


def test_a_run_tracked_in_mlflow_holds_every_record(tmp_path):
    out = tmp_path / "run"
    done = run_cli("run", "--out", str(out), "--track", "mlflow", *set_args(TINY))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "tracking" not in done.stdout
    metrics, params, artifacts, status = mlflow_metrics(out / "mlruns")
    summary = json.loads((out / "summary.json").read_text())
    assert_holds({k: v for k, v in metrics.items() if not k.startswith("summary/")}, expected_metrics(out, 4))
    assert metrics["summary/final_mean_accuracy"] == {0: summary["final_mean_accuracy"]}
    assert params["nodes.count"] == "4" and params["experiment.rounds"] == "2"
    assert {"accuracy.png", "summary.json", "config.toml"} <= set(artifacts)
    assert status == "FINISHED"


def test_a_run_tracked_in_tensorboard_from_python_holds_every_record(tmp_path):
    results = fg.run(None, TINY, out=tmp_path / "run", track="tensorboard")
    held = tensorboard_metrics(tmp_path / "run" / "tensorboard")
    assert_holds(
        {k: v for k, v in held.items() if not k.startswith("summary/")}, expected_metrics(results.path, 4)
    )
    assert held["summary/final_mean_accuracy"][2] == pytest.approx(results.summary["final_mean_accuracy"])


def test_a_tracker_that_cannot_write_never_stops_the_run(tmp_path):
    out = tmp_path / "run"
    done = run_cli(
        "run", "--out", str(out), "--track", "tensorboard", "--track-uri", "/dev/null/tb", *set_args(TINY)
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout.count("tracking (tensorboard) failed, the run goes on without it") == 1
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 8
    assert json.loads((out / "summary.json").read_text())["status"] == "complete"
