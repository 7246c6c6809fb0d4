"""Whole gossip experiments through the CLI: real peer processes exchanging models over gRPC."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from fedgossip.config import load_config
from tests.support import RECORD_FIELDS, kill_during_run, metrics, run_cli, start_cli, timeless, wait_for

FIELDS = RECORD_FIELDS | {"neighbours_heard"}
SMALL = [
    "--set",
    "nodes.count=4",
    "--set",
    "experiment.rounds=3",
    "--set",
    "topology.kind=ring",
    "--set",
    "strategy.name=vca",
]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same small config run twice (the first's command timed: `COMMAND_TIMES`)."""
    root = tmp_path_factory.mktemp("gossip")
    runs = []
    for name in ("a", "b"):
        before = time.time()
        result = run_cli("run", "--out", str(root / name), *SMALL)
        COMMAND_TIMES.setdefault(root / name, (before, time.time()))
        assert result.returncode == 0, result.stdout + result.stderr
        runs.append(root / name)
    return runs


COMMAND_TIMES: dict[Path, tuple[float, float]] = {}
"""Per run of `two_runs`: the time just before its command started and just after it ended."""


@pytest.mark.timeout(300)
def test_four_peers_three_rounds_fill_the_results_folder(two_runs):
    run = two_runs[0]
    for name in ("config.toml", "metrics.jsonl", "summary.json", "accuracy.png", "processes.json"):
        assert (run / name).stat().st_size > 0, name
    logs = sorted(p.name for p in (run / "logs").iterdir())  # peers forked by the fork server (the default)
    assert logs == ["forkserver.log", *(f"node-{i}.log" for i in range(4))]
    records = metrics(run)
    assert len(records) == 12
    assert all(r.keys() >= FIELDS for r in records)
    assert {(r["node"], r["round"]) for r in records} == {(n, k) for n in range(4) for k in (1, 2, 3)}
    for r in records:  # a ring: everyone hears both neighbours every round
        assert r["neighbours_heard"] == sorted({(r["node"] - 1) % 4, (r["node"] + 1) % 4})
        assert r["bytes_sent"] == r["bytes_received"] > 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["dead_nodes"] == []
    assert summary["rounds_completed"] == 3
    assert 0.3 < summary["final_mean_accuracy"] <= 1


@pytest.mark.timeout(300)
def test_the_runs_clock_starts_with_the_command(two_runs):
    """time_s, startup_s and wall_time_s count from the command's start, not from the gossip
    launcher's (which comes after the fork server's start, the config's checks and the results
    folder): the clock's origin (the peers' run_start) precedes the folder's config.toml, and
    origin + wall_time_s falls after the last record was written and before the command ended."""
    run = two_runs[0]
    before, after = COMMAND_TIMES[run]
    origin = load_config(str(run / "nodes" / "node-0.toml")).peer.run_start
    assert before < origin < (run / "config.toml").stat().st_mtime
    summary = json.loads((run / "summary.json").read_text())
    assert (run / "metrics.jsonl").stat().st_mtime <= origin + summary["wall_time_s"] < after
    assert 0 < summary["startup_s"] < summary["wall_time_s"]
    assert all(0 < r["time_s"] < summary["wall_time_s"] for r in metrics(run))


@pytest.mark.timeout(300)
def test_same_config_and_seed_give_identical_metrics(two_runs):
    first, second = (timeless(metrics(run)) for run in two_runs)
    assert first == second


@pytest.mark.timeout(300)
def test_a_killed_peer_does_not_stop_the_others(tmp_path):
    out = tmp_path / "killed"
    settings = [
        "nodes.count=4",
        "experiment.rounds=40",  # linear-model rounds take ~10 ms: leave plenty after the kill
        "topology.kind=complete",
        "experiment.round_timeout=4",
        "task.model=linear",
    ]
    code, output = kill_during_run(out, settings, 2, "node-2")
    assert code == 3, output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "partial" and summary["dead_nodes"] == [2]
    records = metrics(out)
    for node in (0, 1, 3):
        assert max(r["round"] for r in records if r["node"] == node) == 40
    last = max(r["round"] for r in records if r["node"] == 2)  # it may finish a round before the kill lands
    late = [r for r in records if r["node"] != 2 and r["round"] > last + 1]
    assert late and all(2 not in r["neighbours_heard"] for r in late), records


@pytest.mark.timeout(300)
def test_tls_and_token_run_of_three_peers(tmp_path):
    out = tmp_path / "secure"
    result = run_cli(
        "run",
        "--out",
        str(out),
        "--set",
        "nodes.count=3",
        "--set",
        "experiment.rounds=2",
        "--set",
        "topology.kind=complete",
        "--set",
        "security.tls=true",
        "--set",
        "security.mutual_tls=true",
        "--set",
        "security.token=true",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((out / "summary.json").read_text())["status"] == "complete"
    node = (out / "nodes" / "node-0.toml").read_text()
    assert "cert_file" in node and "token_file" in node
    assert all(len(r["neighbours_heard"]) == 2 for r in metrics(out))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.timeout(180)
def test_ctrl_c_stops_every_peer_and_keeps_finished_rounds(tmp_path):
    out = tmp_path / "interrupted"
    launcher = start_cli(
        "run",
        "--out",
        str(out),
        settings=["nodes.count=3", "experiment.rounds=100000", "topology.kind=complete", "task.model=linear"],
    )
    try:
        wait_for(lambda: (out / "metrics.jsonl").exists() and len(metrics(out)) >= 6, 120, "two rounds")
        pids = json.loads((out / "processes.json").read_text()).values()
        launcher.send_signal(signal.SIGINT)
        output, _ = launcher.communicate(timeout=60)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert launcher.returncode == 130, output.decode(errors="replace")
    assert not [pid for pid in pids if _alive(pid)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["rounds_completed"] >= 2
