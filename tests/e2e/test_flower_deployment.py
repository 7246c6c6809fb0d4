"""Flower's deployment engine for real: `fedgossip run` starts a SuperLink and SuperNodes on free
loopback ports, submits the fedgossip app and follows it to the end. Every test checks that each
process of the run (SuperLink, SuperNodes, and the SuperExec/ServerApp/ClientApp processes they
started) is gone afterwards; `fedgossip run` has its own timeout and is killed on expiry."""

from __future__ import annotations

import json
import time

import pytest
import tomllib

from fedgossip.base.flower_protocol import load_model
from fedgossip.reports import read_records
from tests.support import (
    FLOWER,
    RECORD_FIELDS,
    cli_argv,
    ctrl_c_after_round_1,
    processes_gone,
    run_cli,
    run_inprocess,
)


@pytest.mark.timeout(180)
def test_superlink_and_two_supernodes_run_two_rounds_over_tls_with_registered_keys(tmp_path):
    run = tmp_path / "deploy"
    before = time.time()
    result = run_cli(
        "run",
        "--out",
        str(run),
        *FLOWER,
        "--set",
        "experiment.rounds=2",
        "--set",
        "strategy.name=average",
        "--set",
        "security.tls=true",
        "--set",
        "security.mutual_tls=true",
        timeout=170,
    )
    after = time.time()
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["errors"] == []
    assert summary["flower"]["status"] == "finished:completed"
    # the run's clock (time_s, startup_s, wall_time_s) starts with the command, before its results
    # folder, and ends after its last record, before the command's end
    origin = tomllib.loads((run / "flower" / "run-config.toml").read_text())["run-start"]
    assert before < origin < (run / "config.toml").stat().st_mtime
    assert (run / "metrics.jsonl").stat().st_mtime <= origin + summary["wall_time_s"] < after
    assert 0 < summary["startup_s"] < summary["wall_time_s"]
    log = (run / "logs" / "superlink.log").read_text()
    assert "https://127.0.0.1:" in log and log.count("RegisterNode] Created node_id") == 2
    assert {p.name for p in (run / "secrets").iterdir()} >= {
        "ca.pem",
        "superlink.pem",
        "supernode-0",
        "supernode-0.pub",
        "supernode-1",
    }
    for name in (
        "config.toml",
        "metrics.jsonl",
        "summary.json",
        "accuracy.png",
        "processes.json",
        "logs/superlink.log",
        "logs/supernode-0.log",
        "logs/supernode-1.log",
        "flower/app/pyproject.toml",
        "flower/records.jsonl",
    ):
        assert (run / name).stat().st_size > 0, name
    records = read_records(run)
    nodes = [r for r in records if isinstance(r["node"], int)]
    assert {(r["node"], r["round"]) for r in nodes} == {(0, 1), (1, 1), (0, 2), (1, 2)}
    assert [r["round"] for r in records if r["node"] == "server"] == [0, 1, 2]
    assert all(r.keys() >= RECORD_FIELDS and r["evaluated_by"] == "node" for r in nodes)
    assert all(r["bytes_sent"] > 0 and r["bytes_received"] == 2 * r["bytes_sent"] for r in nodes)
    assert summary["final_mean_accuracy"] > 0.8
    assert processes_gone(run) == {}
    # the same config and seed in process (no Flower runtime) gives the same numbers
    same = tmp_path / "same"
    run_inprocess(same, [*FLOWER, "experiment.rounds=2", "strategy.name=average"])
    assert _numbers(read_records(same)) == _numbers(records)
    deployed, local = (
        load_model(run / "flower" / "final-model.npz"),
        load_model(same / "flower" / "final-model.npz"),
    )
    assert list(deployed) == list(local) and all((deployed[k] == local[k]).all() for k in deployed)


def _numbers(records: list[dict]) -> list[tuple]:
    keys = ("node", "round", "train_loss", "test_loss", "test_accuracy", "num_examples", "bytes_sent")
    return sorted((tuple(str(r.get(k)) for k in keys) for r in records), key=str)


@pytest.mark.timeout(120)
def test_a_failing_client_app_fails_the_run_with_its_reason(tmp_path):
    run = tmp_path / "diverge"
    result = run_cli(
        "run",
        "--out",
        str(run),
        *FLOWER,
        "--set",
        "experiment.rounds=3",
        "--set",
        "task.learning_rate=1e30",
        "--set",
        "flower.fraction_evaluate=0.0",
        timeout=110,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["flower"]["status"] == "finished:failed"
    assert any("training diverged" in e for e in summary["errors"]), summary["errors"]
    assert "training diverged" in result.stdout
    assert processes_gone(run) == {}


@pytest.mark.timeout(120)
def test_ctrl_c_stops_every_process_and_keeps_finished_rounds(tmp_path):
    run = tmp_path / "interrupted"
    argv = cli_argv(
        "run",
        "--out",
        str(run),
        # the server evaluates (flower.fraction_evaluate = 0): round 1 ends one ClientApp per node sooner
        settings=[s for s in FLOWER if s != "--set"] + ["experiment.rounds=8", "flower.fraction_evaluate=0"],
    )
    code, _ = ctrl_c_after_round_1(argv, run, tmp_path / "launcher.log", 0, 90)
    assert code == 130, (tmp_path / "launcher.log").read_text(errors="replace")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["rounds_completed"] >= 1
    assert processes_gone(run) == {}
    started = json.loads((run / "processes.json").read_text())
    assert "clientapp-forks" in started, started  # the run's ClientApp fork server, stopped too
