"""`fedgossip sweep`'s plan: the grid x seeds, grid values and run names, and bad grids, folders of
another config and no jobs refused before anything runs."""

from __future__ import annotations

import re

import pytest
import tomli_w
from rich.console import Console

from fedgossip.config import load_config
from fedgossip.launcher.experiments.sweep import folder_state, plan, run_name, run_sweep, split_values
from fedgossip.launcher.runs.results import ResultsFolder
from fedgossip.reports.records import read_config_table

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
        (["nodes.count=4,1"], 1, r"nodes.count must be an integer >= 2; got 1"),
        (["strategy.name"], 1, r"--grid expects section.key=v1,v2"),
        (["strategy.name=average,,vca"], 1, r"empty value"),
        (["strategy.name=vca,vca"], 1, r"repeated"),
        (["strategy.name=vca", "strategy.name=average"], 1, r"given twice"),
        (["experiment.seed=1,2"], 1, r"--seeds"),
        (  # no 3-regular graph on 5 nodes: refused before the degree-2 point runs
            ["nodes.count=5", "topology.kind=regular", "topology.degree=2,3"],
            1,
            r"run .*topology.degree=3_seed=0: topology.degree = 3: a random regular graph on 5 nodes",
        ),
        (  # krum with f = 1 needs 2f + 3 = 5 models; a ring peer merges 3
            ["strategy.name=krum", "strategy.params.f=0,1"],
            1,
            r"run .*strategy.params.f=1_seed=0: strategy .krum. .* needs 5 models per merge",
        ),
        ([], 0, r"--seeds must be >= 1"),
    ],
)
def test_a_bad_grid_is_refused_naming_the_problem(grid, seeds, message):
    with pytest.raises(ValueError, match=message):
        plan(None, TINY, grid, seeds)


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
    resolved = read_config_table(folder.path)
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
