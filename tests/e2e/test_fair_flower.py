"""strategy.name = "fair" in Flower mode: the ServerApp's aggregation on crafted replies, whole
in-process federations on a streamed task (explore, then exploit with stale nodes), the launcher's
summary and plot, and one deployment run."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from rich.console import Console

from fedgossip.launcher.experiments.run import run_experiment
from fedgossip.reports import read_records
from tests.support import fair_config, run_cli


@pytest.mark.timeout(330)  # well above run_cli's 250 s, so a slow run fails with its output
def test_fair_on_the_deployment_engine(tmp_path):
    run = tmp_path / "deploy"
    settings = [
        "experiment.mode=flower",
        "flower.engine=deployment",
        "nodes.count=2",
        "flower.startup_timeout=60",
        "flower.round_timeout=60",
        "experiment.rounds=2",
        "strategy.name=fair",
        "task.stream_chunks=4",
        "task.label_noise=0.5",
        "strategy.params.stopping=fixed",
        "strategy.params.explore_rounds=1",
        "strategy.params.ratio=0.5",
    ]
    result = run_cli("run", "--out", str(run), *[a for s in settings for a in ("--set", s)], timeout=250)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["fair"]["explore_rounds"] == 1
    records = read_records(run)
    exploit = [r for r in records if r.get("phase") == "exploit"]
    assert len(exploit) == 2 and sum(r["selected"] for r in exploit) == 1
    stale = [r for r in exploit if not r["selected"]]
    assert all(r["bytes_received"] == 0 and r["evaluated_by"] == "node" for r in stale)  # its kept model


def test_compare_puts_fair_and_its_baselines_side_by_side_with_their_fairness(tmp_path):
    """`fedgossip compare` of a fair run and its random-selection baseline: a selection column and
    the psi-noise correlation, fairness and equality of each, recomputed here from the records
    (Pearson of the final psi with each node's mean accuracy over the exploit phase)."""
    for selection in ("fair", "random"):
        config = fair_config(f'strategy.params.selection="{selection}"', "experiment.rounds=8")
        _, code = run_experiment(config, tmp_path / selection, Console(file=io.StringIO()))
        assert code == 0
    runs, out = (str(tmp_path / "fair"), str(tmp_path / "random")), ("--out", str(tmp_path / "compare"))
    result = run_cli("compare", *runs, *out, "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = {row["label"]: row for row in json.loads(result.stdout)["groups"]}
    noise = [n / 5 * 0.6 for n in range(5)]
    for selection in ("fair", "random"):
        row, records = rows[selection], read_records(tmp_path / selection)
        nodes = [[r for r in records if r["node"] == n] for n in range(5)]
        psi = [mine[-1]["psi"] for mine in nodes]
        accuracy = [np.mean([r["test_accuracy"] for r in mine if r["phase"] == "exploit"]) for mine in nodes]
        assert row["selection"] == selection
        assert row["fairness"]["mean"] == pytest.approx(np.corrcoef(psi, accuracy)[0, 1], abs=1e-4)
        assert row["psi_noise_correlation"]["mean"] == pytest.approx(np.corrcoef(noise, psi)[0, 1], abs=1e-4)
        last = [mine[-1]["test_accuracy"] for mine in nodes]
        assert row["std_end"]["mean"] == pytest.approx(np.std(last), abs=1e-4)
    table = run_cli("compare", *runs, *out, "--format", "markdown")
    header = table.stdout.splitlines()[0]
    assert all(name in header for name in ("selection", "psi-noise corr", "fairness", "spread trend"))
