"""`fedgossip reproduce`: the plan (methods x seeds, optional methods skipped), the command's bad
input, the quick vanishing-variance reproduction end to end with its table recomputed from the
runs' metrics.jsonl, and a Ctrl-C in the middle of it (nothing left running, the write-up not
touched, the same command finishing only what is missing)."""

from __future__ import annotations

import json
import re

import psutil
import pytest

from fedgossip.config import load_config
from fedgossip.launcher.experiments.papers import VANISHING_VARIANCE
from fedgossip.launcher.supervision.proctree import alive, descendants, stop
from fedgossip.reports.reproductions import KEEP_BEGIN, KEEP_END, write_report
from tests.support import interrupt, interrupt_in_second_run, run_cli, run_figures, start_cli


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("no-such-paper",),
            "unknown reproduction 'no-such-paper'; known: vanishing-variance, fair-incentives, fedgmm, "
            "fedgmm-mnist, dp-bayesian-regression",
        ),
        (("vanishing-variance", "--quick", "--full"), "--quick and --full are exclusive"),
        (("vanishing-variance", "--quick", "--seeds", "0"), "--seeds must be >= 1; got 0"),
    ],
)
def test_bad_input_exits_2_with_a_clear_error(tmp_path, args, message):
    result = run_cli("reproduce", *args, "--out", str(tmp_path / "out"), "--docs", str(tmp_path / "docs"))
    output = " ".join((result.stdout + result.stderr).split())  # rich may wrap long lines
    assert result.returncode == 2, output
    assert f"error: {message}" in output
    assert not (tmp_path / "out").exists() and not (tmp_path / "docs").exists()


def _table(markdown: str) -> dict[str, list[str]]:
    """The measured table of the write-up: method -> its cells."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ") and "---" not in line]
    header = next(line for line in lines if line.startswith("| method | seeds | rounds to"))
    rows = lines[lines.index(header) + 1 :]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    return {row[0]: row[1:] for row in cells if len(row) == 9}


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


@pytest.mark.timeout(150)
def test_quick_vanishing_variance_writes_folders_figures_and_a_table_that_matches_the_metrics(tmp_path):
    out, docs = tmp_path / "runs", tmp_path / "docs"
    # two runs at a time (the default on 2 cores is one: 4 peers a run): ~16 s instead of ~26 s
    args = ("--quick", "--out", str(out), "--docs", str(docs), "--jobs", "2")
    result = run_cli("reproduce", "vanishing-variance", *args, timeout=140)
    assert result.returncode == 0, result.stdout + result.stderr
    plan = json.loads((out / "reproduction.json").read_text())
    base = VANISHING_VARIANCE.config_path("quick")
    try:
        load_config(base, ["gossip.schedule=async"])
        async_accepted = True
    except ValueError:
        async_accepted = False
    labels = [m["label"] for m in plan["methods"]]
    assert labels[:3] == ["gossip-average", "gossip-vca", "fl-fedavg"]
    assert bool([m for m in plan["skipped"] if m["label"].endswith("-async")]) != async_accepted
    page = (docs / "vanishing-variance-quick.md").read_text()
    for figure in ("vanishing-variance-quick-accuracy.png", "vanishing-variance-quick-variance.png"):
        data = (docs / figure).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < len(data) < 400_000
        assert f"]({figure})" in page
    if not async_accepted:
        assert "Skipped `gossip-vca-async`: the config refuses" in page
    table = _table(page)
    assert sorted(table) == sorted(labels)
    for method in plan["methods"]:
        (run,) = method["runs"]  # quick: one seed
        assert (out / run / "summary.json").exists()
        cells = table[method["label"]]
        assert cells[0] == "1"
        for index, target in enumerate((0.5, 0.8)):
            figures = run_figures(out / run, target)
            assert cells[1 + 2 * index] == _cell(figures["rounds_to_target"], ".1f"), (method, target)
            assert cells[2 + 2 * index] == _cell(figures["seconds_to_target"], ".1f"), (method, target)
        assert cells[5] == _cell(figures["final_mean_accuracy"], ".3f")
        assert cells[6] == _cell(figures["final_min_accuracy"], ".3f")
        assert cells[7] == _cell(figures["wall_time_s"], ".0f")
    records = [
        json.loads(line) for line in (out / "fl-fedavg_seed=0" / "metrics.jsonl").read_text().splitlines()
    ]
    assert any(r["node"] == "server" and r.get("layer_variance") for r in records)

    # made again: the hand-written reading is kept, the rest regenerated the same
    edited = page.replace(
        f"{KEEP_BEGIN}\n(to be written)\n{KEEP_END}", f"{KEEP_BEGIN}\nmy reading\n{KEEP_END}"
    )
    assert edited != page
    (docs / "vanishing-variance-quick.md").write_text(edited)
    write_report(out, docs)
    again = (docs / "vanishing-variance-quick.md").read_text()
    assert "my reading" in again and re.sub("my reading", "(to be written)", again) == page


@pytest.mark.timeout(240)
def test_ctrl_c_of_a_reproduction_stops_its_runs_keeps_the_write_up_and_the_same_command_resumes(tmp_path):
    out, docs = tmp_path / "runs", tmp_path / "docs"
    docs.mkdir()
    page = docs / "vanishing-variance-quick.md"
    page.write_text("the committed write-up\n")
    args = ("reproduce", "vanishing-variance", "--quick", "--out", str(out), "--docs", str(docs))
    first, second = out / "gossip-average_seed=0", out / "gossip-vca_seed=0"
    launcher = start_cli(*args, "--jobs", "1")
    tree: dict[int, psutil.Process] = {}
    try:
        output, nodes, first_metrics = interrupt_in_second_run(launcher, first, second, tree)
        assert launcher.returncode == 130, output
        assert "the same command runs only what is missing" in output
        assert not [pid for pid in nodes if alive(pid)]
        assert not [p.pid for p in tree.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert page.read_text() == "the committed write-up\n"  # no write-up from part of the runs
        assert sorted(f.name for f in docs.iterdir()) == [page.name]

        again = run_cli(*args, "--jobs", "2", timeout=180)
        assert again.returncode == 0, again.stdout + again.stderr
        runs = json.loads((out / "sweep.json").read_text())["runs"]
        assert [(r["name"], r["skipped"]) for r in runs][:2] == [(first.name, True), (second.name, False)]
        assert all(r["status"] == "complete" for r in runs)
        assert (first / "metrics.jsonl").read_bytes() == first_metrics  # not run again
        assert "gossip-average" in page.read_text() and "the committed write-up" not in page.read_text()
    finally:
        tree.update((proc.pid, proc) for proc in descendants([launcher.pid]))
        interrupt(launcher)
        stop(tree.values(), grace=5)
