"""Trackers fed a run through the tracking path (`fedgossip track`'s replay: the same Tracking the
launcher streams to), read back with their own readers: every record's numbers per node and the
round means, recomputed here from metrics.jsonl; the config, the summary and the figures; and a
tracker that cannot write reports one warning and raises nothing."""

from __future__ import annotations

import json
import threading
import time
from typing import ClassVar

import pytest

from fedgossip.config import dump_toml
from fedgossip.reports import read_config
from fedgossip.reports.tracker_backends import BACKENDS
from fedgossip.reports.tracking import Track, Tracking, track_run
from tests.support import make_run
from tests.support.trackers import (
    assert_holds,
    expected_metrics,
    mlflow_metrics,
    tensorboard_events,
    tensorboard_metrics,
)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def run(tmp_path):
    """A finished run (3 nodes, 4 rounds, the last node a round short) with a figure."""
    from matplotlib.figure import Figure

    path = make_run(tmp_path / "run", "vca", seed=3)
    figure = Figure(figsize=(2, 1))
    figure.subplots().plot([0, 1])
    figure.savefig(path / "accuracy.png")
    summary = json.loads((path / "summary.json").read_text())
    (path / "summary.json").write_text(json.dumps({**summary, "final_mean_accuracy": 0.5, "text": "x"}))
    return path


def test_tensorboard_holds_every_record_the_means_config_summary_and_figures(run, tmp_path):
    assert track_run(Track("tensorboard", str(tmp_path / "tb")), run) == []
    held = tensorboard_metrics(tmp_path / "tb")
    want = expected_metrics(run, nodes=3)
    assert_holds({k: v for k, v in held.items() if not k.startswith("summary/")}, want)
    assert want["mean/test_accuracy"][4] == pytest.approx(  # the round the last node missed: 2 nodes
        sum(
            r["test_accuracy"]
            for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if r["round"] == 4 and r["node"] != "server"
        )
        / 2
    )
    assert held["summary/final_mean_accuracy"] == {4: 0.5}
    events = tensorboard_events(tmp_path / "tb")
    from tensorboard.util import tensor_util

    text = tensor_util.make_ndarray(events.Tensors("config")[0].tensor_proto)[0].decode()
    assert dump_toml(read_config(run)) in text
    image = events.Images("figures/accuracy")[0]
    assert image.encoded_image_string == (run / "accuracy.png").read_bytes()


def test_mlflow_holds_every_record_the_params_summary_and_artifacts(run, tmp_path):
    store = tmp_path / "mlruns"
    assert track_run(Track("mlflow", store.as_uri()), run) == []
    metrics, params, artifacts, status = mlflow_metrics(store)
    summary = {k: v for k, v in metrics.items() if k.startswith("summary/")}
    assert_holds({k: v for k, v in metrics.items() if k not in summary}, expected_metrics(run, 3))
    wall = json.loads((run / "summary.json").read_text())["wall_time_s"]
    assert summary == {"summary/final_mean_accuracy": {0: 0.5}, "summary/wall_time_s": {0: wall}}
    config = read_config(run)
    assert params["nodes.count"] == "3" and params["strategy.name"] == "vca"
    assert params["experiment.seed"] == str(config.experiment.seed)
    assert sorted(artifacts) == ["accuracy.png", "config.toml", "summary.json"]
    assert status == "FINISHED"


@pytest.mark.parametrize(
    ("name", "where"),
    [("tensorboard", "/dev/null/tb"), ("mlflow", "file:///dev/null/mlruns"), ("mlflow", "nosuch://x/y")],
)
def test_a_tracker_that_cannot_write_warns_once_and_raises_nothing(run, name, where):
    warnings = track_run(Track(name, where), run)
    assert len(warnings) == 1 and warnings[0].startswith(f"tracking ({name}) failed, the run goes on")


class Stuck:
    """A tracker whose library hangs until `gate` opens (a dead server, a full disk that blocks)."""

    gate = threading.Event()
    sent: ClassVar[list[int]] = []

    def __init__(self, uri, run_dir, config) -> None:
        pass

    def start(self, params, config_toml) -> None:
        pass

    def metrics(self, step, values) -> None:
        self.gate.wait(30)
        self.sent.append(step)

    def finish(self, final, status, files) -> None:
        pass


def test_a_stuck_tracker_never_holds_up_the_launcher(run, monkeypatch):
    monkeypatch.setitem(BACKENDS, "tensorboard", Stuck)
    Stuck.gate.clear()
    Stuck.sent.clear()
    tracking = Tracking(Track("tensorboard"), run, read_config(run))
    started = time.perf_counter()
    for round_ in range(1, 201):
        tracking.record({"node": 0, "round": round_, "test_accuracy": 0.5})
    assert time.perf_counter() - started < 0.2  # 200 records queued while the tracker hangs
    assert Stuck.sent == []
    warnings = tracking.close(timeout=0.3)
    reason = "still writing after 0.3s; the rest is dropped"
    assert warnings == [f"tracking (tensorboard) failed, the run goes on without it: {reason}"]
    Stuck.gate.set()


def test_an_unknown_tracker_is_bad_input():
    with pytest.raises(ValueError, match="--track must be one of mlflow, tensorboard, wandb; got 'neptune'"):
        Track("neptune")


def test_fedgossip_track_exports_every_run_of_a_sweep(sweep_dir):
    from typer.testing import CliRunner

    from fedgossip.launcher.cli import app

    done = CliRunner().invoke(app, ["track", str(sweep_dir), "--to", "tensorboard"])
    assert done.exit_code == 0, done.output
    runs = sorted(p for p in sweep_dir.iterdir() if (p / "metrics.jsonl").exists())
    assert len(runs) == 5 and done.output.count("tracked (tensorboard)") == 5
    for run in runs:
        held = tensorboard_metrics(run / "tensorboard")
        assert_holds(
            {k: v for k, v in held.items() if not k.startswith("summary/")}, expected_metrics(run, 3)
        )
    bad = CliRunner().invoke(app, ["track", str(sweep_dir), "--to", "neptune"])
    assert bad.exit_code == 2
    assert "error: --track must be one of mlflow, tensorboard, wandb; got 'neptune'" in bad.output


def test_a_launcher_that_fails_before_any_record_ends_the_tracked_run_as_failed(tmp_path, monkeypatch):
    """The run's folder is removed (nothing was recorded); the MLflow run kept elsewhere is FAILED,
    not left RUNNING."""
    from rich.console import Console

    from fedgossip.config import load_config
    from fedgossip.launcher.experiments import run as run_module
    from fedgossip.launcher.runs.outcome import LaunchError

    def fails(config, results, console, started):
        raise LaunchError("the fork server died")

    monkeypatch.setattr(run_module, "_runtime", lambda config: fails)
    store = tmp_path / "mlruns"
    config = load_config(None, ["nodes.count=2", "experiment.rounds=1"])
    with pytest.raises(LaunchError, match="the fork server died"):
        run_module.run_experiment(
            config, tmp_path / "run", Console(quiet=True), Track("mlflow", store.resolve().as_uri())
        )
    assert not (tmp_path / "run").exists()
    assert mlflow_metrics(store)[3] == "FAILED"


def test_the_runs_of_a_sweep_share_one_mlflow_store_and_one_tensorboard_root(tmp_path):
    sweep = tmp_path / "sweep"
    assert Track("mlflow").in_sweep(sweep, "a").argv() == [
        "--track",
        "mlflow",
        "--track-uri",
        (sweep / "mlruns").resolve().as_uri(),
    ]
    assert Track("mlflow", "http://host:5000").in_sweep(sweep, "a").uri == "http://host:5000"
    assert Track("tensorboard").in_sweep(sweep, "a").uri == str(sweep / "tensorboard" / "a")
    assert Track("tensorboard", "/logs").in_sweep(sweep, "a").uri == "/logs/a"
    assert Track("wandb").in_sweep(sweep, "a").argv() == ["--track", "wandb"]
