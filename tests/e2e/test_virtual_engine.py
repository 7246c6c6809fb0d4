"""The virtual-time engine (`launcher.engine = "simulation"`) through `fedgossip run`: synchronous
gossip gives the records of real peer processes field for field (timing aside), asynchronous
gossip and the tick schedule are reproducible bit for bit and change with the seed, and the tick
schedule also runs in real peer processes over gRPC."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import psutil
import pytest

from fedgossip.launcher.supervision.proctree import descendants
from tests.support import interrupt, metrics, run_cli, set_args, start_cli, wait_for

TIMING = {"time_s", "rejoin_s", "train_s", "evaluate_s", "delayed_s"}
SIMULATION = "launcher.engine=simulation"
SIX = ["nodes.count=6", "experiment.rounds=6"]


def untimed(records: list[dict]) -> list[dict]:
    """Records without their timing fields, in (node, round) order."""
    stripped = [{k: v for k, v in r.items() if k not in TIMING} for r in records]
    return sorted(stripped, key=lambda r: (r["node"], r["round"]))


def run(out: Path, settings: list[str]) -> list[dict]:
    """`fedgossip run` with `settings`; its records (the run must complete)."""
    done = run_cli("run", "--out", str(out), *set_args(settings), timeout=150)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete", summary
    return metrics(out)


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("scenario", "threads"),
    [([], 1), (["scenario.attack=sign-flip", "scenario.attackers=[2]", "strategy.name=median"], 2)],
    ids=["vca", "sign-flip-median-2-threads"],
)
def test_sync_records_equal_those_of_real_peer_processes(tmp_path, scenario, threads):
    real = run(tmp_path / "real", [*SIX, *scenario])
    threaded = f"launcher.simulation_threads={threads}"
    virtual = run(tmp_path / "virtual", [*SIX, *scenario, SIMULATION, threaded])
    assert len(real) == len(virtual) == 36
    for a, b in zip(untimed(real), untimed(virtual), strict=True):
        assert a == b, f"node {a['node']} round {a['round']}"
    assert sum(r["merged"] for r in virtual) > 0


def runs_by_seed(tmp_path: Path, settings: list[str]) -> tuple[list[dict], list[dict], list[dict]]:
    """Two runs of seed 1 and one of seed 2 in the virtual-time engine."""
    return tuple(
        run(tmp_path / f"{name}", [*settings, SIMULATION, f"experiment.seed={seed}"])
        for name, seed in (("a", 1), ("b", 1), ("c", 2))
    )


@pytest.mark.timeout(240)
def test_async_gossip_in_virtual_time_is_reproducible_bit_for_bit(tmp_path):
    settings = [*SIX, "gossip.schedule=async", "gossip.async_interval=[0.0, 2.0]"]
    settings.append("gossip.async_merge_timeout=1.5")
    first, again, other = runs_by_seed(tmp_path, settings)
    key = lambda r: (r["node"], r["round"])  # noqa: E731
    assert sorted(first, key=key) == sorted(again, key=key)  # every field, time_s (virtual) too
    assert untimed(first) != untimed(other)
    # virtual time: a unit's record is stamped with the pauses so far (0..2 s each), compute is free
    for r in first:
        assert 0 <= r["time_s"] <= 2.0 * r["round"]
    triggers = {r["merge_trigger"] for r in first}
    assert "fresh" in triggers and "timeout" in triggers


@pytest.mark.timeout(240)
def test_the_tick_schedule_in_virtual_time_is_reproducible_bit_for_bit(tmp_path):
    settings = [*SIX, "gossip.schedule=ticks", "gossip.eval_every_ticks=30", "gossip.tick_s=0.5"]
    first, again, other = runs_by_seed(tmp_path, settings)
    key = lambda r: (r["node"], r["round"])  # noqa: E731
    assert sorted(first, key=key) == sorted(again, key=key)
    assert untimed(first) != untimed(other)
    for r in first:  # record k closes tick 30 k, at virtual time tick x tick_s
        assert r["tick"] == 30 * r["round"] and r["time_s"] == 0.5 * r["tick"]
    # 30 ticks hold two trainings of each neighbour (every 8-12 ticks): a full buffer at least once
    assert all(r["merged"] for r in first)


@pytest.mark.timeout(180)
def test_the_tick_schedule_runs_in_real_peer_processes(tmp_path):
    settings = [
        "nodes.count=4",
        "topology.kind=ring",
        "experiment.rounds=3",
        "gossip.schedule=ticks",
        "gossip.eval_every_ticks=20",
        "gossip.tick_s=0.05",
        "task.model=linear",
    ]
    records = run(tmp_path / "ticks", settings)
    assert sorted((r["node"], r["round"], r["tick"]) for r in records) == [
        (n, k, 20 * k) for n in range(4) for k in (1, 2, 3)
    ]
    for r in records:  # a ring: what was merged came from the two neighbours, over gRPC
        assert set(r["neighbours_heard"]) <= {(r["node"] - 1) % 4, (r["node"] + 1) % 4}
    assert sum(r["merged"] for r in records) > 0 and sum(r["bytes_sent"] for r in records) > 0


@pytest.mark.timeout(60)
def test_the_simulation_engine_refuses_what_it_cannot_run_naming_the_key(tmp_path):
    done = run_cli("run", "--out", str(tmp_path / "x"), *set_args([SIMULATION, "security.token=true"]))
    assert done.returncode == 2
    assert "security.token" in done.stdout + done.stderr and "simulation" in done.stdout + done.stderr


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.mark.timeout(120)
def test_ctrl_c_stops_the_simulation_with_130_and_leaves_no_process(tmp_path):
    out = tmp_path / "interrupted"
    launcher = start_cli("run", "--out", str(out), settings=[SIMULATION, *SIX, "experiment.rounds=500"])
    try:
        metrics_file = out / "metrics.jsonl"
        wait_for(lambda: metrics_file.exists() and len(metrics(out)) >= 12, 90, "two rounds of every peer")
        procs = descendants([launcher.pid])
        assert procs, "the simulation's process was not seen"
        launcher.send_signal(signal.SIGINT)
        launcher.communicate(timeout=60)
    finally:
        interrupt(launcher)
    assert launcher.returncode == 130
    wait_for(lambda: not [p for p in procs if _running(p)], 10, "the run's processes to go")
    assert len(metrics(out)) >= 12  # the records written stay
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
