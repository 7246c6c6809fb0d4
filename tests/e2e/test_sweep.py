"""`fedgossip sweep`: the grid x seeds plan, bad grids refused before anything runs, and a real sweep
interrupted with SIGINT and restarted, which runs only what is missing and compares at the end."""

from __future__ import annotations

import json
import re

import psutil
import pytest
import tomli_w
from rich.console import Console

from fedgossip.config import load_config
from fedgossip.launcher.experiments.sweep import folder_state, plan, run_name, run_sweep, split_values
from fedgossip.launcher.runs.results import ResultsFolder
from fedgossip.launcher.supervision.proctree import alive, descendants, stop
from fedgossip.reports.records import read_config
from tests.support import (
    assert_row_matches,
    interrupt,
    interrupt_in_second_run,
    run_cli,
    run_status,
    start_cli,
)

TINY = ["experiment.rounds=2", "nodes.count=3", "topology.kind=ring"]


def test_the_plan_is_the_grid_times_the_seeds_counted_from_the_configs_seed():
    runs = plan(None, ["experiment.seed=5", *TINY], ["strategy.name=average,vca", "task.batch_size=8,32"], 2)
    assert [run.name for run in runs] == [
        f"strategy.name={s}_task.batch_size={b}_seed={seed}"
        for s in ("average", "vca")
        for b in (8, 32)
        for seed in (5, 6)
    ]
    first = runs[0]
    assert first.overrides == ("strategy.name=average", "task.batch_size=8", "experiment.seed=5")
    assert (first.config.strategy.name, first.config.task.batch_size, first.config.experiment.seed) == (
        "average",
        8,
        5,
    )
    assert runs[-1].config.experiment.rounds == 2 and runs[-1].seed == 6
    assert [r.name for r in plan(None, TINY, ["strategy.name=average,vca"], 2)] == [
        r.name for r in plan(None, TINY, ["strategy.name=average,vca"], 2)
    ]
    (only,) = plan(None, TINY, [], 1)  # no grid: the seeds alone
    assert only.name == "seed=0" and only.config == load_config(None, TINY)


def test_grid_values_split_on_commas_outside_lists_and_quotes():
    assert split_values("[1, 2],[3], 'a,b',4") == ["[1, 2]", "[3]", "'a,b'", "4"]
    (run,) = plan(None, TINY, ['strategy.name="vca"'], 1)
    assert run.config.strategy.name == "vca"


def test_unsafe_or_long_names_end_in_a_hash_and_stay_apart():
    a, b = run_name([("task.path", "/data/x y")], 0), run_name([("task.path", "-data-x-y")], 0)
    assert a != b and b == "task.path=-data-x-y_seed=0"
    assert re.fullmatch(r"[A-Za-z0-9._=+-]+", a) and a.endswith("_seed=0")
    long = run_name([("task.path", "x" * 300)], 3)
    assert len(long) <= 120 and long.endswith("_seed=3")


@pytest.mark.parametrize(
    ("grid", "seeds", "message"),
    [
        (["strategy.name=average,nosuch"], 1, r"run strategy.name=nosuch_seed=0: strategy.name"),
        (["strategy.nosuchkey=1,2"], 1, r"unknown key strategy.nosuchkey"),
        (["nodes.count=4,1"], 1, r"nodes.count must be >= 2"),
        (["strategy.name"], 1, r"--grid expects section.key=v1,v2"),
        (["strategy.name=average,,vca"], 1, r"empty value"),
        (["strategy.name=vca,vca"], 1, r"repeated"),
        (["strategy.name=vca", "strategy.name=average"], 1, r"given twice"),
        (["experiment.seed=1,2"], 1, r"--seeds"),
        ([], 0, r"--seeds must be >= 1"),
    ],
)
def test_a_bad_grid_is_refused_naming_the_problem(grid, seeds, message):
    with pytest.raises(ValueError, match=message):
        plan(None, TINY, grid, seeds)


def test_a_bad_grid_exits_2_before_anything_runs(tmp_path):
    out = tmp_path / "sweep"
    result = run_cli("sweep", "--grid", "strategy.name=average,nosuch", "--out", str(out), timeout=60)
    assert result.returncode == 2 and "error:" in result.stdout and "nosuch" in result.stdout
    assert not out.exists()


def test_a_folder_holding_a_run_of_another_config_is_refused_before_anything_runs(tmp_path):
    runs = plan(None, TINY, ["strategy.name=average,vca"], 1)
    ResultsFolder(tmp_path / runs[1].name, load_config(None, ["strategy.name=average"])).close()
    with pytest.raises(ValueError, match="holds a run of another config"):
        run_sweep(None, runs, TINY, tmp_path, 1, Console(file=None))
    assert not (tmp_path / runs[0].name).exists()


def test_a_run_made_before_a_key_with_a_default_was_added_is_still_the_same_config(tmp_path):
    run = plan(None, TINY, [], 1)[0]
    folder = ResultsFolder(tmp_path / run.name, run.config)
    folder.close()
    saved = folder.path / "config.toml"
    resolved = read_config(folder.path)
    del resolved["gossip"]["schedule"]  # as written by a fedgossip without async gossip
    saved.write_text(tomli_w.dumps(resolved))
    assert folder_state(folder.path, run.config) == "unfinished"  # resumable, not refused
    resolved["gossip"]["max_pushes"] = 7  # a value that differs: another config
    saved.write_text(tomli_w.dumps(resolved))
    with pytest.raises(ValueError, match="holds a run of another config"):
        folder_state(folder.path, run.config)


def test_no_jobs_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="--jobs must be >= 1"):
        run_sweep(None, plan(None, TINY, [], 1), TINY, tmp_path / "sweep", 0, Console(file=None))
    assert not (tmp_path / "sweep").exists()


@pytest.mark.timeout(240)
def test_an_interrupted_sweep_restarted_runs_only_what_is_missing(tmp_path):
    out = tmp_path / "sweep"
    args = ("sweep", "--grid", "strategy.name=average", "--seeds", "2", "--jobs", "1", "--out", str(out))
    first, second = out / "strategy.name=average_seed=0", out / "strategy.name=average_seed=1"
    sweep = start_cli(*args, settings=TINY)
    tree: dict[int, psutil.Process] = {}
    try:
        output, pids, first_metrics = interrupt_in_second_run(sweep, first, second, tree)
        assert sweep.returncode == 130, output
        assert "interrupted" in output
        assert not [pid for pid in pids if alive(pid)]  # the running run stopped its nodes
        assert not [p.pid for p in tree.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert run_status(second) == "interrupted"
        record = json.loads((out / "sweep.json").read_text())
        assert [r["status"] for r in record["runs"]] == ["complete", "interrupted"]

        again = run_cli(*args, *(a for item in TINY for a in ("--set", item)), timeout=180)
        assert again.returncode == 0, again.stdout + again.stderr
        record = json.loads((out / "sweep.json").read_text())
        assert [(r["name"], r["skipped"], r["status"]) for r in record["runs"]] == [
            (first.name, True, "complete"),
            (second.name, False, "complete"),
        ]
        assert (first / "metrics.jsonl").read_bytes() == first_metrics  # not run again
        (row,) = json.loads((out / "compare.json").read_text())["groups"]
        assert row["label"] == "strategy.name=average" and [r["seed"] for r in row["runs"]] == [0, 1]
        assert_row_matches(row, [first, second], target=0.9)
        assert "strategy.name=average" in again.stdout and "…" not in again.stdout
    finally:
        tree.update((proc.pid, proc) for proc in descendants([sweep.pid]))
        interrupt(sweep)
        stop(tree.values(), grace=5)
