"""`fedgossip compare` refuses, with exit 2 and one `error:` line, another tool's folder that holds
a metrics.jsonl, an empty one, and runs that recorded nothing (it printed a table of nothing, a
gossip run with status "5" and a matplotlib warning, and exited 0)."""

from __future__ import annotations

import json

import pytest

from tests.support import run_cli


def refused(*args: str) -> str:
    """The one `error:` line of `fedgossip compare ARGS`, which must exit 2 writing nothing."""
    result = run_cli("compare", *args, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output and "Warning" not in output, output
    errors = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    return errors[0]


@pytest.mark.timeout(120)
def test_compare_refuses_another_tools_folder_and_an_empty_one(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    steps = "".join(json.dumps({"step": step, "loss": 1 / (step + 1)}) + "\n" for step in range(5))
    (foreign / "metrics.jsonl").write_text(steps)
    (foreign / "summary.json").write_text(json.dumps({"status": 5}))
    out = tmp_path / "out"
    line = refused(str(foreign), "--out", str(out))
    assert line == (
        f"error: {foreign} is not a fedgossip results folder: none of the 5 lines of its "
        "metrics.jsonl is a fedgossip record (keys: loss, step)"
    )
    (foreign / "metrics.jsonl").write_text("")
    line = refused(str(foreign), "--out", str(out))
    assert "its metrics.jsonl is empty and it has no fedgossip config.toml" in line
    assert not out.exists()


@pytest.mark.timeout(120)
def test_compare_refuses_runs_that_recorded_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("")
    (run / "config.toml").write_text('[experiment]\nname = "nothing"\n')
    out = tmp_path / "out"
    assert (
        refused(str(run), "--out", str(out))
        == f"error: nothing to compare: no metrics record in {run} (the runs recorded nothing)"
    )
    assert not out.exists()
