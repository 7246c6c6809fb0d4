"""examples/api.ipynb runs top to bottom in a real Jupyter kernel (nbclient, headless), and what
its cells show is checked against the results folders it wrote and the CLI's own messages."""

from __future__ import annotations

import ast
import json

import pytest

from fedgossip.config import load_config
from tests.support import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")


def shown(cell: dict) -> str:
    """The text a cell shows: its printed streams and its result's text/plain."""
    texts = []
    for output in cell["outputs"]:
        if output["output_type"] == "stream":
            texts.append(output["text"])
        elif output["output_type"] == "execute_result":
            texts.append(output["data"]["text/plain"])
    return "".join(texts)


def test_the_example_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDGOSSIP_NOTEBOOK_OUT", str(tmp_path))
    notebook = nbformat.read(REPO / "examples" / "api.ipynb", as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not any(o["output_type"] == "error" for o in cell["outputs"]) for cell in code)
    stderr = [o["text"] for cell in code for o in cell["outputs"] if o.get("name") == "stderr"]
    assert stderr == []  # no warning either (rich draws its progress bar in a widget)
    widgets = [
        o for o in code[2]["outputs"] if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert widgets  # the blocking run's live progress
    assert ast.literal_eval(shown(code[0])) == (4, 3, "vca")
    with pytest.raises(ValueError) as cli_error:
        load_config(None, ["nodes.cont=4"])
    assert shown(code[1]).strip() == f"ConfigError: {cli_error.value}"
    assert ast.literal_eval(shown(code[2]).strip().splitlines()[-1]) == ("complete", 12)
    assert ast.literal_eval(shown(code[3]).strip().splitlines()[-1]) == (0, "complete")
    records = [json.loads(line) for line in (tmp_path / "vca" / "metrics.jsonl").read_text().splitlines()]
    means = {r: round(sum(x["test_accuracy"] for x in records if x["round"] == r) / 4, 3) for r in (1, 2, 3)}
    lines = shown(code[4]).strip().splitlines()[-4:-1]  # "round  value" rows, then the Name line
    assert {int(line.split()[0]): float(line.split()[1]) for line in lines} == means
    table = shown(code[5])
    groups = json.loads((tmp_path / "compare.json").read_text())["groups"]
    assert [g["label"] for g in groups] == ["vca", "average"]
    for group in groups:
        assert f"{group['final_mean_accuracy']['mean']:.6f}" in table
    assert "image/png" in code[6]["outputs"][0]["data"]
