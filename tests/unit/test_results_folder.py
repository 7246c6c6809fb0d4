"""The results folder and its readers: a started run is never discarded, and a torn last line of
metrics.jsonl or a cut summary.json is skipped by the records, the summary and the comparison."""

from __future__ import annotations

import pytest

from fedgossip.config import load_config
from fedgossip.launcher.runs.results import ResultsFolder
from fedgossip.reports import build_summary, compare, read_records


def test_a_started_run_is_never_discarded(tmp_path):
    folder = ResultsFolder(tmp_path / "run", load_config())
    folder.append(_record(0, 1, 0.5))
    assert not folder.discard_unstarted()
    assert read_records(folder.path) == [_record(0, 1, 0.5)]
    folder.close()
    with pytest.raises(ValueError, match="already holds a run"):
        ResultsFolder(tmp_path / "run", load_config())
    assert read_records(tmp_path / "run") == [_record(0, 1, 0.5)]


def _record(node: int, round_: int, accuracy: float) -> dict:
    return {"node": node, "round": round_, "time_s": float(round_), "test_accuracy": accuracy}


def test_readers_skip_a_torn_last_line(tmp_path):
    folder = ResultsFolder(tmp_path / "run", load_config(None, ["experiment.target_accuracy=0.5"]))
    whole = [_record(0, 1, 0.4), _record(1, 1, 0.6)]
    for record in whole:
        folder.append(record)
    folder.close()
    with open(folder.path / "metrics.jsonl", "ab") as stream:
        stream.write('{"node": 0, "round": 2, "note": "é'.encode()[:-1])  # torn inside a character
    assert read_records(folder.path) == whole
    summary = build_summary(folder.path)
    assert summary["final_mean_accuracy"] == pytest.approx(0.5) and summary["rounds_to_target"] == 1
    (folder.path / "summary.json").write_text('{"name": "torn')  # a summary cut by a full disk
    (row,) = compare([folder.path], tmp_path / "compare").rows
    assert row["final_mean_accuracy"]["mean"] == pytest.approx(0.5) and row["status"] == "unknown"
