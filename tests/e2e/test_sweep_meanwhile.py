"""A sweep looks at a run folder again as it is about to start its run: one finished meanwhile by
another command is taken as done (not run again, not reported as a crash), one that another
command holds is left alone and reported as not run (never removed under it)."""

from __future__ import annotations

import json
import shutil

import pytest
from rich.console import Console

from fedgossip.launcher.experiments import sweep as sweeping
from fedgossip.launcher.runs.claim import FolderClaim
from tests.support import run_cli

TINY = ("experiment.mode=flower", "flower.engine=inprocess", "nodes.count=2", "experiment.rounds=1")


@pytest.mark.timeout(180)
def test_a_run_finished_or_held_by_another_command_meanwhile_is_not_run_again(tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    runs = sweeping.plan(None, TINY, ["task.hidden=4,5,6"], 1)
    done_meanwhile, held = out / runs[1].name, out / runs[2].name
    # what another command leaves: run 2 finished (its own `fedgossip run`, the same config)
    elsewhere = tmp_path / "elsewhere"
    settings = [arg for item in (*TINY, *runs[1].overrides) for arg in ("--set", item)]
    assert run_cli("run", "--out", str(elsewhere), *settings, timeout=120).returncode == 0
    started, claims = [], []
    real_start = sweeping._start

    def start(config_path, overrides, run, out, track):  # while run 1 starts, another command
        if not started:  # finishes run 2 and starts writing run 3
            shutil.copytree(elsewhere, done_meanwhile)
            held.mkdir()
            claims.append(FolderClaim(held))
        started.append(run.name)
        return real_start(config_path, overrides, run, out, track)

    monkeypatch.setattr(sweeping, "_start", start)
    try:
        outcome = sweeping.run_sweep(None, runs, TINY, out, 1, Console(width=200))
    finally:
        for claim in claims:
            claim.release()
    assert started == [runs[0].name]
    statuses = {r.name: (r.status, r.skipped) for r in outcome.results}
    assert statuses == {
        runs[0].name: ("complete", False),
        runs[1].name: ("complete", True),
        runs[2].name: ("not run", False),
    }
    assert outcome.exit_code == 1  # not every run reached its end
    assert held.is_dir()  # the other command's folder stays
    record = json.loads((out / "sweep.json").read_text())
    assert [r["status"] for r in record["runs"]] == ["complete", "complete", "not run"]
