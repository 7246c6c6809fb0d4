"""`experiment.evaluate_every`: which rounds evaluate, the config's checks, and reports that count
evaluated rounds only (hand-computed summaries of hand-made records with null test figures).
Real runs in every mode: tests/e2e/test_evaluate_every.py."""

from __future__ import annotations

import pytest
from rich.console import Console

from fedgossip.config import load_config
from fedgossip.launcher.runs.results import ResultsFolder
from fedgossip.reports import compare, markdown_table, run_table, summarize

pytestmark = pytest.mark.timeout(60)


def record(node, round_, acc, time_s):
    tested = acc is not None
    return {
        "node": node,
        "round": round_,
        "time_s": time_s,
        "train_loss": 1.0,
        "test_loss": 0.5 if tested else None,
        "test_accuracy": acc,
        "num_examples": 5,
        "bytes_sent": 10,
        "bytes_received": 10,
    }


def test_every_kth_round_and_the_last_are_evaluated():
    experiment = load_config(None, ["experiment.rounds=7", "experiment.evaluate_every=3"]).experiment
    assert [r for r in range(1, 8) if experiment.evaluated(r)] == [3, 6, 7]
    every = load_config(None, ["experiment.rounds=7", "experiment.evaluate_every=7"]).experiment
    assert [r for r in range(1, 8) if every.evaluated(r)] == [7]
    default = load_config(None, ["experiment.rounds=4"]).experiment
    assert default.evaluate_every == 1
    assert all(default.evaluated(r) for r in range(1, 5))


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("0", "must be an integer >= 1; got 0"),
        ("-2", "must be an integer >= 1; got -2"),
        ("31", "must be at most experiment.rounds (30); got 31"),
        ("1.5", "got 1.5"),
    ],
)
def test_a_bad_evaluate_every_names_the_key(value, says):
    with pytest.raises(ValueError, match=r"^experiment\.evaluate_every ") as err:
        load_config(None, ["experiment.rounds=30", f"experiment.evaluate_every={value}"])
    assert says in str(err.value)


@pytest.fixture
def every_two(tmp_path, monkeypatch):
    """Two nodes, 5 rounds evaluated every 2 (2, 4 and the last, 5), target 0.8. The mean of the
    unevaluated round 3 would have been above the target: only evaluated rounds count."""
    monkeypatch.chdir(tmp_path)
    config = load_config(
        None,
        ["experiment.rounds=5", "experiment.evaluate_every=2", "experiment.target_accuracy=0.8"],
    )
    results = ResultsFolder("every-two", config)
    accuracies = {1: (None, None), 2: (0.5, 0.7), 3: (None, None), 4: (0.8, 0.9), 5: (0.9, 0.92)}
    for round_, (a, b) in accuracies.items():
        results.append(record(0, round_, a, float(round_)))
        results.append(record(1, round_, b, round_ + 0.5))
    results.close()
    return results.path


def test_rounds_to_target_counts_evaluated_rounds_and_the_summary_says_so(every_two, tmp_path):
    summary = summarize(every_two, {"status": "complete"})
    assert summary["evaluate_every"] == 2
    assert summary["rounds_completed"] == 5
    assert summary["mean_accuracy_by_round"] == pytest.approx([None, 0.6, None, 0.85, 0.91])
    assert summary["rounds_to_target"] == 4 and summary["seconds_to_target"] == 4.5
    assert summary["final_mean_accuracy"] == pytest.approx(0.91)
    console = Console(width=200, record=True)
    console.print(run_table(summary, "every two"))
    assert "rounds to 0.8 (evaluated rounds only: every 2 rounds and the last)" in console.export_text()
    rows = compare([every_two], tmp_path / "compare").rows
    assert rows[0]["rounds_to_target"]["mean"] == 4
    assert "rounds to 0.8 (evaluated rounds only: every 2 rounds and the last)" in markdown_table(rows)


def test_every_round_evaluated_keeps_the_tables_as_they_were(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = ResultsFolder("every-round", load_config(None, ["experiment.target_accuracy=0.5"]))
    results.append(record(0, 1, 0.6, 1.0))
    results.close()
    summary = summarize(results.path, {"status": "complete"})
    console = Console(width=200, record=True)
    console.print(run_table(summary, "every round"))
    text = console.export_text()
    assert "rounds to 0.5 " in text and "evaluated" not in text


def test_a_test_subset_is_said_in_the_tables(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(
        None, ["experiment.rounds=2", "task.eval_examples=100", "experiment.evaluate_every=1"]
    )
    results = ResultsFolder("subset", config)
    for round_ in (1, 2):
        results.append(record(0, round_, 0.5, float(round_)))
    results.close()
    summary = summarize(results.path, {"status": "complete"})
    assert summary["eval_examples"] == 100
    console = Console(width=200, record=True)
    console.print(run_table(summary, "subset"))
    said = "rounds to 0.9 (on 100 test examples before the last round)"
    assert said in console.export_text()
    rows = compare([results.path], tmp_path / "compare").rows
    assert rows[0]["eval_examples"] == 100 and said in markdown_table(rows)
