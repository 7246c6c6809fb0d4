"""`fedgossip report` opened in a real headless Chromium (Debian's package): the page loads with no
console error and no network request (only itself and its inlined images), every figure shows,
the summary's numbers are summary.json's, the events timeline has a mark per event, and a
comparison's table holds compare.json's numbers. Skipped (with the reason) where chromium is not
installed; CI installs it (.ci/run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedgossip.reports import build_summary, plot_run, plot_variance, read_records, write_summary
from fedgossip.reports.html_parts import shown
from tests.support import make_run, run_cli
from tests.support.browser import available, chromium

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(800)]


@pytest.fixture(autouse=True)
def _chromium():
    """Skip (with the reason) where chromium is missing; wait for CI's background install first."""
    if not available():
        pytest.skip("chromium is not installed (apt-get install chromium)")


CELLS = """[...document.querySelectorAll('section.summary > table.summary td[data-key]')]
  .map(td => [td.dataset.key, JSON.parse(td.dataset.value), td.textContent])"""
IMAGES = (
    """[...document.images].map(i => [i.alt, i.complete, i.naturalWidth, i.getBoundingClientRect().width])"""
)


def a_run(tmp_path: Path) -> Path:
    """A results folder as the launcher leaves it: records, summary, figures and scenario events."""
    run = make_run(tmp_path / "run", "vca", seed=2)
    records = read_records(run)
    write_summary(run / "summary.json", build_summary(run, {"status": "complete", "wall_time_s": 12.5}))
    plot_run(records, run / "accuracy.png", "run: test accuracy")
    plot_variance(
        [{**r, "layer_variance": {"w": 0.1 * r["round"]}} for r in records], run / "variance.png", "v"
    )
    events = [
        {"time_s": 3.5, "round": 1, "node": 1, "kind": "crash", "details": {}},
        {"time_s": 6.25, "round": 3, "node": 1, "kind": "rejoin", "details": {"rejoin_s": 1.2}},
    ]
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return run


def problems(page) -> tuple[list[str], list[str]]:
    """The page's errors, and its requests that are not itself or an inlined image."""
    foreign = [u for u in page.requests() if not (u.startswith("data:image/png") or u.startswith("file://"))]
    files = [u for u in page.requests() if u.startswith("file://")]
    return page.errors(), foreign + files[1:]  # one file request: the page


def test_a_run_report_loads_offline_shows_every_figure_and_the_summary_numbers(tmp_path):
    run = a_run(tmp_path)
    done = run_cli("report", str(run))
    assert done.returncode == 0, done.stdout + done.stderr
    page_path = run / "report.html"
    summary = json.loads((run / "summary.json").read_text())
    with chromium() as page:
        page.open(page_path.as_uri())
        errors, requests = problems(page)
        assert errors == [] and requests == []
        images = page.evaluate(IMAGES)
        assert sorted(alt for alt, *_ in images) == ["accuracy", "variance"]
        assert all(complete and natural > 0 and width > 0 for _, complete, natural, width in images)
        cells = page.evaluate(CELLS)
        plain = {key: value for key, value in summary.items() if not isinstance(value, dict | list)}
        assert {key for key, _, _ in cells} == set(plain)
        for key, value, text in cells:
            assert value == summary[key], key
            assert text == shown(value), key
        hover = page.evaluate(
            "[...document.querySelectorAll('svg.accuracy circle.point title')].map(t => t.textContent)"
        )
        evaluated = [r for r in read_records(run) if r["node"] != "server" and r["test_accuracy"] is not None]
        assert sorted(hover) == sorted(
            f"node {r['node']}, round {r['round']}: accuracy {r['test_accuracy']:.4f}" for r in evaluated
        )
        marks = page.evaluate(
            "[...document.querySelectorAll('svg.timeline circle.event title')].map(t => t.textContent)"
        )
        assert marks == ["node 1, round 1: crash ", 'node 1, round 3: rejoin {"rejoin_s": 1.2}']
        links = page.evaluate("[...document.querySelectorAll('p.links a')].map(a => a.getAttribute('href'))")
        assert {"metrics.jsonl", "summary.json", "config.toml", "events.jsonl"} <= set(links)
        page.screenshot(tmp_path / "shot.png")
    assert (tmp_path / "shot.png").stat().st_size > 20_000


def test_a_comparison_report_holds_the_compare_numbers(sweep_dir, tmp_path):
    out = tmp_path / "page" / "report.html"
    done = run_cli("report", str(sweep_dir), "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    groups = json.loads((out.parent / "compare.json").read_text())["groups"]
    with chromium() as page:
        page.open(out.as_uri())
        errors, requests = problems(page)
        assert errors == [] and requests == []
        rows = page.evaluate(
            """[...document.querySelectorAll('table.comparison tr[data-group]')].map(tr => [tr.dataset.group,
               JSON.parse(tr.querySelector("td[data-key='final_mean_accuracy']").dataset.value)])"""
        )
        assert rows == [[g["label"], g["final_mean_accuracy"]["mean"]] for g in groups]
        images = page.evaluate(IMAGES)
        assert {"compare", "compare-final"} <= {alt for alt, *_ in images}
        assert all(complete and natural > 0 for _, complete, natural, _ in images)
        runs = page.evaluate("[...document.querySelectorAll('section.run')].map(s => s.dataset.run)")
        assert sorted(runs) == sorted(p.name for p in sweep_dir.iterdir() if (p / "metrics.jsonl").exists())
