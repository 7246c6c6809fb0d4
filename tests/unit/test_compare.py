"""`fedgossip compare` on results folders written here: seed grouping, every number against an
independent recomputation from the runs' metrics.jsonl, and narrow terminals that never cut a
number or a name."""

from __future__ import annotations

import csv
import io
import json

import pytest
from rich.console import Console

from fedgossip.reports import compare, compare_view, default_out_dir
from fedgossip.reports.tables import compare_cells
from tests.support import TARGET, assert_row_matches, make_run, run_figures


def test_seeds_are_grouped_and_every_number_is_recomputed_from_metrics(sweep_dir, tmp_path):
    comparison = compare([sweep_dir], tmp_path / "out")
    rows = {row["label"]: row for row in comparison.rows}
    assert list(rows) == ["strategy.name=average", "strategy.name=vca"]
    for strategy, seeds in (("average", 3), ("vca", 2)):
        row = rows[f"strategy.name={strategy}"]
        runs = [sweep_dir / f"strategy.name={strategy}_seed={seed}" for seed in range(seeds)]
        assert (row["strategy"], row["mode"], row["nodes"]) == (strategy, "gossip", 3)
        assert [r["seed"] for r in row["runs"]] == list(range(seeds))
        assert_row_matches(row, runs, TARGET)
    assert rows["strategy.name=average"]["status"] == "1 partial, 2 complete"
    # the files hold the same numbers
    written = json.loads((tmp_path / "out" / "compare.json").read_text())["groups"]
    assert written == comparison.rows
    lines = list(csv.DictReader(io.StringIO((tmp_path / "out" / "compare.csv").read_text())))
    for line, row in zip(lines, comparison.rows, strict=True):
        assert line["label"] == row["label"] and int(line["seeds"]) == row["seeds"]
        assert float(line["final_mean_accuracy_mean"]) == pytest.approx(row["final_mean_accuracy"]["mean"])
        assert float(line["bytes_sent_std"]) == pytest.approx(row["bytes_sent"]["std"])
        assert line["status"] == row["status"]
    for name in ("compare.png", "compare-final.png"):
        assert (tmp_path / "out" / name).stat().st_size > 10_000


def test_a_target_given_to_compare_replaces_the_runs_own(sweep_dir, tmp_path):
    (row, _) = compare([sweep_dir], tmp_path, target=0.35).rows
    runs = [sweep_dir / f"strategy.name=average_seed={seed}" for seed in range(3)]
    assert row["target_accuracy"] == 0.35
    assert_row_matches(row, runs, 0.35)
    reached = [run_figures(r, 0.35)["rounds_to_target"] for r in runs]
    assert None not in reached and reached != [run_figures(r, TARGET)["rounds_to_target"] for r in runs]
    with pytest.raises(ValueError, match="--target"):
        compare([sweep_dir], tmp_path, target=1.5)


def test_runs_of_other_configs_stay_apart_and_clashing_labels_are_told_apart(tmp_path):
    make_run(tmp_path / "a" / "strategy.name=vca_seed=0", "vca", 0)
    make_run(tmp_path / "b" / "strategy.name=vca_seed=0", "vca", 0, nodes=4)  # another config
    single = make_run(tmp_path / "plain", "vca", 7, nodes=4)  # same config as b's, another seed
    rows = compare([tmp_path / "a", tmp_path / "b", single, single], tmp_path).rows
    assert [row["label"] for row in rows] == ["a/strategy.name=vca", "b/strategy.name=vca"]
    assert [row["seeds"] for row in rows] == [1, 2]  # `single` once, grouped with b's run
    assert [r["seed"] for r in rows[1]["runs"]] == [0, 7]
    assert rows[0]["final_mean_accuracy"]["std"] is None  # one seed: no spread
    with pytest.raises(ValueError, match="not a results folder"):
        compare([tmp_path / "nothing-here"], tmp_path)


def test_default_out_dir_is_the_sweep_folder_given_alone(sweep_dir, tmp_path):
    run = sweep_dir / "strategy.name=vca_seed=0"
    assert default_out_dir([sweep_dir]) == sweep_dir
    assert str(default_out_dir([run])) == "."
    assert str(default_out_dir([sweep_dir, run])) == "."


@pytest.mark.parametrize("width", [60, 80, 100])
def test_a_narrow_terminal_never_cuts_a_number_or_a_name(sweep_dir, tmp_path, width):
    long_name = "strategy.name=vca_nodes.count=3_task.learning_rate=0.05_topology.kind=regular"
    make_run(tmp_path / "other" / f"{long_name}_seed=0", "vca", 3)
    rows = compare([sweep_dir, tmp_path / "other"], tmp_path).rows
    console = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
    console.print(compare_view(rows, console))
    text = console.file.getvalue()
    assert "…" not in text
    assert all(len(line) <= width for line in text.splitlines())
    for cells in compare_cells(rows):
        for cell in cells:
            assert cell in text or cell in text.replace("\n", ""), cell


def test_a_wide_terminal_gets_one_row_per_group(sweep_dir, tmp_path):
    rows = compare([sweep_dir], tmp_path).rows
    console = Console(width=250, file=io.StringIO(), color_system=None)
    console.print(compare_view(rows, console))
    lines = console.file.getvalue().splitlines()
    for cells in compare_cells(rows):
        (line,) = [line for line in lines if cells[0] in line]
        assert all(cell in line for cell in cells)
