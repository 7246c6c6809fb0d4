"""`fedgossip report` without a browser: bad folders are one `error:` line and exit 2; a run's page
embeds every figure of the folder and no external reference (the browser test opens it)."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from fedgossip.launcher.cli import app
from tests.support import make_run

pytestmark = pytest.mark.timeout(60)


def test_a_folder_without_a_run_is_bad_input(tmp_path):
    done = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert done.exit_code == 2
    assert f"error: {tmp_path} is not a results folder" in done.output.replace("\n", "")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "metrics.jsonl").write_text('{"loss": 1}\n')
    done = CliRunner().invoke(app, ["report", str(tmp_path / "other")])
    assert done.exit_code == 2 and "is not a fedgossip results folder" in done.output.replace("\n", "")


def test_a_run_page_inlines_its_figures_and_references_nothing_outside(tmp_path):
    from matplotlib.figure import Figure

    run = make_run(tmp_path / "run", "vca", seed=1)
    for name in ("accuracy", "fair", "zeta"):
        figure = Figure(figsize=(2, 1))
        figure.subplots().plot([0, 1])
        figure.savefig(run / f"{name}.png")
    done = CliRunner().invoke(app, ["report", str(run)])
    assert done.exit_code == 0, done.output
    html = (run / "report.html").read_text()
    assert re.findall(r"<img src='data:image/png;base64,[^']+' alt='(\w+)'", html) == [
        "accuracy",
        "fair",
        "zeta",
    ]
    assert not re.search(r"(src|href)=['\"](https?:|//)", html)
    assert "<script" not in html
