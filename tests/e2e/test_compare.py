"""`fedgossip compare`: seed grouping, every number against an independent recomputation from the
runs' metrics.jsonl, narrow terminals that never cut a number or a name, and the output formats."""

from __future__ import annotations

import csv
import io
import json
import random

import pytest
from rich.console import Console

from fedgossip.config import load_config
from fedgossip.launcher.runs.results import ResultsFolder
from fedgossip.reports import compare, compare_view, default_out_dir
from fedgossip.reports.tables import compare_cells
from tests.support import assert_row_matches, run_cli, run_figures

TARGET = 0.6


def make_run(path, strategy: str, seed: int, status: str = "complete", rounds: int = 4, nodes: int = 3):
    """A results folder written by the launcher's own writer: records drawn from `seed`, some of
    them reaching the target, the last node stopping a round early (its last record counts)."""
    config = load_config(
        None,
        [
            f"strategy.name={strategy}",
            f"experiment.seed={seed}",
            f"nodes.count={nodes}",
            f"experiment.target_accuracy={TARGET}",
        ],
    )
    rng = random.Random(f"{strategy}-{seed}")
    folder = ResultsFolder(path, config)
    for round_ in range(1, rounds + 1):
        for node in range(nodes):
            if node == nodes - 1 and round_ == rounds:
                continue
            folder.append(
                {
                    "node": node,
                    "round": round_,
                    "time_s": round(2.0 * round_ + rng.random(), 3),
                    "train_loss": 1.0,
                    "test_loss": 1.0,
                    "test_accuracy": round(min(1.0, 0.12 * round_ + rng.uniform(0.0, 0.3)), 4),
                    "num_examples": 10,
                    "bytes_sent": rng.randrange(1000, 5000),
                    "bytes_received": 0,
                }
            )
    folder.append({"node": "server", "round": rounds, "time_s": 9.0, "test_accuracy": 0.99})
    folder.close()
    wall = round(10 + rng.random() * 5, 3)
    (folder.path / "summary.json").write_text(json.dumps({"status": status, "wall_time_s": wall}))
    return folder.path


@pytest.fixture
def sweep_dir(tmp_path):
    """A sweep-like folder: average over 3 seeds (one partial), vca over 2 seeds."""
    root = tmp_path / "sweep"
    for strategy, seeds in (("average", 3), ("vca", 2)):
        for seed in range(seeds):
            status = "partial" if (strategy, seed) == ("average", 2) else "complete"
            make_run(root / f"strategy.name={strategy}_seed={seed}", strategy, seed, status)
    (root / "logs").mkdir()  # not a run: ignored
    return root


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


@pytest.mark.timeout(90)
def test_cli_prints_the_full_table_as_csv_json_or_markdown(sweep_dir):
    written = run_cli("compare", str(sweep_dir))
    assert written.returncode == 0, written.stdout + written.stderr
    assert "…" not in written.stdout and "strategy.name=average" in written.stdout
    for fmt, name in (("csv", "compare.csv"), ("json", "compare.json")):
        result = run_cli("compare", str(sweep_dir), "--format", fmt)
        assert result.returncode == 0, result.stderr
        assert result.stdout == (sweep_dir / name).read_text()  # default out: the sweep folder
        assert "compare.csv" in result.stderr
    markdown = run_cli("compare", str(sweep_dir), "--format", "markdown").stdout.splitlines()
    assert markdown[0].startswith("| run | strategy |") and len(markdown) == 4
    rows = json.loads((sweep_dir / "compare.json").read_text())["groups"]
    for line, cells in zip(markdown[2:], compare_cells(rows), strict=True):
        assert line == "| " + " | ".join(cells) + " |"
    bad = run_cli("compare", str(sweep_dir), "--format", "xml")
    assert bad.returncode == 2 and "error:" in bad.stdout and "--format" in bad.stdout
