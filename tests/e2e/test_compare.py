"""`fedgossip compare`: seed grouping, every number against an independent recomputation from the
runs' metrics.jsonl, narrow terminals that never cut a number or a name, and the output formats."""

from __future__ import annotations

import json

import pytest

from fedgossip.reports.tables import compare_cells
from tests.support import run_cli


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
