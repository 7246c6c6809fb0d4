"""Reports read results folders: summaries checked against hand-computed values."""

from __future__ import annotations

import json

import pytest

from fedgossip.config import ExperimentConfig, load_config
from fedgossip.launcher.runs.results import ResultsFolder
from fedgossip.reports import build_summary, compare, read_config, read_records, summarize
from fedgossip.reports.records import not_a_run


def record(node, round_, acc, time_s, sent=10):
    return {
        "node": node,
        "round": round_,
        "time_s": time_s,
        "train_loss": 1.0,
        "test_loss": 1.0,
        "test_accuracy": acc,
        "num_examples": 5,
        "bytes_sent": sent,
        "bytes_received": sent,
    }


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = ResultsFolder("run", load_config(None, ["experiment.target_accuracy=0.8"]))
    for r in [
        record(0, 1, 0.5, 1.0),
        record(1, 1, 0.7, 1.5),
        record(0, 2, 0.9, 2.0),
        record(1, 2, 0.8, 2.5),
        record(0, 3, 0.95, 3.0),
        {"node": "server", "round": 3, "test_accuracy": 0.99, "time_s": 3.1},
    ]:
        results.append(r)
    results.close()
    return results.path


def test_results_folder_is_absolute_and_never_overwritten(run_dir, tmp_path):
    assert run_dir.is_absolute() and run_dir == tmp_path / "run"
    with pytest.raises(ValueError, match="already holds a run"):
        ResultsFolder(run_dir, load_config())


def test_summary_against_hand_computed_values(run_dir):
    summary = summarize(run_dir, {"status": "partial", "dead_nodes": [1]})
    # node 1 stopped after round 2 (0.8); node 0 ended at round 3 (0.95); the server record is no node
    assert summary["final_mean_accuracy"] == pytest.approx((0.95 + 0.8) / 2)
    assert summary["final_min_accuracy"] == pytest.approx(0.8)
    assert summary["final_round_by_node"] == {"0": 3, "1": 2}  # what the final figures mix, said
    assert summary["mean_accuracy_by_round"] == pytest.approx([0.6, 0.85, 0.95])
    assert summary["rounds_to_target"] == 2  # mean 0.85 >= 0.8 first at round 2
    assert summary["seconds_to_target"] == 2.5  # the slowest node of that round
    assert summary["bytes_sent"] == 50 and summary["rounds_completed"] == 3
    assert summary["status"] == "partial" and summary["dead_nodes"] == [1]
    assert json.loads((run_dir / "summary.json").read_text()) == summary


def test_a_torn_last_line_is_skipped(run_dir):
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"node": 1, "round": 3, "test_acc')
    assert len(read_records(run_dir)) == 6


def test_compare_writes_its_files_and_labels_runs(run_dir, tmp_path):
    comparison = compare([run_dir, run_dir], tmp_path / "cmp")  # the same folder counts once
    assert [(row["label"], row["seeds"]) for row in comparison.rows] == [("run", 1)]
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 10_000
    assert sorted(p.name for p in comparison.files) == sorted(p.name for p in (tmp_path / "cmp").iterdir())
    with pytest.raises(ValueError, match="not a results folder"):
        compare([tmp_path / "cmp"], tmp_path / "x")


def test_reports_read_the_config_through_the_config_module(run_dir):
    config = read_config(run_dir)
    assert isinstance(config, ExperimentConfig) and config.experiment.target_accuracy == 0.8
    summary = build_summary(run_dir)
    assert (summary["strategy"], summary["nodes"]) == (config.strategy.name, config.nodes.count)
    assert (summary["name"], summary["schedule"], summary["target_accuracy"]) == ("quickstart", "sync", 0.8)


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.unlink(),  # an old or interrupted folder without one
        lambda path: path.write_bytes(path.read_bytes()[:40]),  # torn mid-line
        lambda path: path.write_text(path.read_text() + "\n[retired]\nkey = 1\n"),  # an unknown section
        lambda path: path.write_bytes(b"\xff\xfe"),  # not UTF-8
    ],
    ids=["missing", "torn", "unknown section", "not UTF-8"],
)
def test_a_run_whose_config_is_missing_or_unreadable_is_reported_from_its_records(run_dir, tmp_path, damage):
    damage(run_dir / "config.toml")
    assert read_config(run_dir) is None
    summary = build_summary(run_dir)
    assert (summary["name"], summary["mode"], summary["strategy"], summary["nodes"]) == (
        "run",
        "gossip",
        None,
        None,
    )
    assert (summary["schedule"], summary["scenario"], summary["target_accuracy"]) == ("sync", "none", 0.9)
    assert summary["rounds_to_target"] == 3 and "fair" not in summary  # mean 0.95 >= 0.9 at round 3
    comparison = compare([run_dir], tmp_path / "cmp")
    assert [(row["label"], row["strategy"]) for row in comparison.rows] == [("run", None)]


def test_a_folder_of_another_tool_or_with_nothing_recorded_is_not_a_run(run_dir, tmp_path):
    assert not_a_run(run_dir) is None
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": i, "loss": 0.5}) + "\n" for i in range(3))
    )
    assert (
        not_a_run(foreign)
        == "none of the 3 lines of its metrics.jsonl is a fedgossip record (keys: loss, step)"
    )
    (foreign / "metrics.jsonl").write_text("")
    assert not_a_run(foreign) == "its metrics.jsonl is empty and it has no fedgossip config.toml"
    (foreign / "config.toml").write_text((run_dir / "config.toml").read_text())
    assert not_a_run(foreign) is None  # a run that recorded nothing
    with pytest.raises(ValueError, match="nothing to compare: no metrics record in"):
        compare([foreign], tmp_path / "out")
    assert len(compare([foreign, run_dir], tmp_path / "out").rows) == 1  # it joins the other's group
