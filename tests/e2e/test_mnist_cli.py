"""`task.dataset = "mnist"` through the real CLI: found in the data folder (FEDGOSSIP_DATA) and
prepared into one shard per node; with no local copy and the hub unreachable, exit 2 with a
message saying both ways. The network is never touched: Hugging Face runs offline and every
HTTP(S) request would go to a closed loopback port."""

from __future__ import annotations

import json
import subprocess

import pytest

from fedgossip.launcher.supervision.processes import child_env
from fedgossip.tasks.mnist import DATA_FOLDER_ENV
from tests.support import cli_argv, metrics, shared_file

NO_NETWORK = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "",
}


def _run(out, data_folder, timeout: float, *settings: str) -> subprocess.CompletedProcess:
    argv = cli_argv("run", "--out", str(out), settings=['task.dataset="mnist"', *settings])
    env = child_env(1, {**NO_NETWORK, DATA_FOLDER_ENV: str(data_folder)})
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.timeout(60)
def test_without_a_local_copy_offline_the_run_exits_2_saying_both_ways(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _run(tmp_path / "run", empty, 45, "experiment.rounds=1")
    output = " ".join((result.stdout + result.stderr).split())  # rich wraps long lines
    assert result.returncode == 2, output
    assert "Traceback" not in output
    assert f"error: task.dataset 'mnist': no local copy (task.path is empty, {DATA_FOLDER_ENV}=" in output
    assert "holds no mnist.npz" in output and "cannot be loaded" in output
    assert f"set {DATA_FOLDER_ENV} to it, or name the file with task.path" in output
    assert 'go online with the hf extra (pip install -c constraints.txt ".[hf]")' in output
    assert not (tmp_path / "run").exists()  # nothing started: no results folder left behind


@pytest.mark.timeout(240)
def test_three_peers_learn_mnist_from_the_data_folder_each_reading_its_shard(tmp_path):
    out = tmp_path / "run"
    result = _run(
        out,
        shared_file("mnist.npz").parent,
        200,
        "nodes.count=3",
        "experiment.rounds=2",
        'task.model="mlp"',
        'topology.kind="ring"',
    )
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((out / "data" / "shards.json").read_text())
    assert manifest["train"] == ["node-0.npz", "node-1.npz", "node-2.npz"]
    assert manifest["input_shape"] == [1, 28, 28]
    assert 'dataset = "prepared"' in (out / "nodes" / "node-0.toml").read_text()
    records = metrics(out)
    assert sorted(r["num_examples"] for r in records if r["round"] == 2) == [20000, 20000, 20000]
    assert min(r["test_accuracy"] for r in records if r["round"] == 2) > 0.5  # chance is 0.1
