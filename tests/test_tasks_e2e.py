"""File datasets end to end: 3 gossip peers through the real CLI on an .npz file and on a local
Hugging Face dataset (prepared once into shards by the launcher)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from .data_helpers import digit_images, save_hf_digits
from .helpers import RECORD_FIELDS, metrics, run_cli

ROUNDS = 3
SMALL = [
    "nodes.count=3",
    f"experiment.rounds={ROUNDS}",
    'topology.kind="ring"',
    'strategy.name="vca"',
    "task.local_epochs=2",
    "task.momentum=0.9",
]


def _run(out, *settings: str) -> list[dict]:
    args = ["run", "--out", str(out)]
    for item in [*SMALL, *settings]:
        args += ["--set", item]
    result = run_cli(*args, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    records = metrics(out)
    assert all(r.keys() >= RECORD_FIELDS for r in records)
    assert {(r["node"], r["round"]) for r in records} == {
        (n, k) for n in range(3) for k in range(1, ROUNDS + 1)
    }
    final = [r["test_accuracy"] for r in records if r["round"] == ROUNDS]
    assert min(final) > 0.5  # chance is 0.1
    return records


@pytest.mark.timeout(300)
def test_three_peers_learn_an_npz_file(tmp_path):
    x, y = digit_images(900)
    path = tmp_path / "digits.npz"
    np.savez(path, x=x, y=y)
    _run(tmp_path / "run", 'task.dataset="npz"', f'task.path="{path}"', 'task.model="cnn"')


@pytest.mark.timeout(300)
def test_three_peers_learn_a_local_hugging_face_dataset_from_prepared_shards(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    folder = save_hf_digits(tmp_path / "hf", 900, test=180)
    out = tmp_path / "run"
    records = _run(out, 'task.dataset="hf"', f'task.path="{folder}"', 'task.partition="dirichlet"')
    manifest = json.loads((out / "data" / "shards.json").read_text())
    assert manifest["train"] == [f"node-{i}.npz" for i in range(3)]
    node_config = (out / "nodes" / "node-0.toml").read_text()
    assert 'dataset = "prepared"' in node_config and str((out / "data").resolve()) in node_config
    assert 'dataset = "hf"' in (out / "config.toml").read_text()  # the run as given, repeatable
    sizes = {r["node"]: r["num_examples"] for r in records}
    assert sum(sizes.values()) == 720 and len(set(sizes.values())) > 1  # Dirichlet: unequal shards
