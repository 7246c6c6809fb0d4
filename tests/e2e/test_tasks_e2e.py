"""File datasets end to end: 3 gossip peers through the real CLI on an .npz file and on a local
Hugging Face dataset (prepared once into shards by the launcher), and prepared shards that give
every node exactly the rows it would have had, read with numpy alone in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fedgossip.config import PeerSection, load_config
from fedgossip.launcher.experiments.prepare import prepare_shards
from fedgossip.launcher.supervision.processes import child_env
from fedgossip.tasks import node_dataset
from tests.support import (
    RECORD_FIELDS,
    cli_argv,
    digit_images,
    loopback_ports,
    metrics,
    run_cli,
    save_hf_digits,
    start_peer,
    wait_exit,
    write_node_config,
)

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


@pytest.mark.timeout(300)
def test_devices_started_by_hand_each_learn_their_own_npz_file(tmp_path):
    """`fedgossip peer` on two devices: each node config points at the device's own file, and
    task.partition = "none" makes the whole file that node's data (its own test set included)."""
    x, y = digit_images(1200)
    ports = loopback_ports(2)
    children = []
    try:
        for node in range(2):
            own = slice(node * 600, (node + 1) * 600)  # disjoint data per device
            path = tmp_path / f"device-{node}.npz"
            np.savez(path, x=x[own][:500], y=y[own][:500], x_test=x[own][500:], y_test=y[own][500:])
            peer = PeerSection(
                id=node,
                listen=f"127.0.0.1:{ports[node]}",
                neighbours={str(1 - node): f"127.0.0.1:{ports[1 - node]}"},
            )
            settings = [
                *SMALL[1:],
                "nodes.count=2",
                'task.dataset="npz"',
                f'task.path="{path}"',
                'task.partition="none"',
            ]
            config = write_node_config(tmp_path / f"node-{node}.toml", peer, *settings)
            children.append(start_peer(config, tmp_path / f"node-{node}.log"))
        assert [wait_exit(child, 240) for child in children] == [0, 0]
    finally:
        for child in children:
            child.stop()
    for node in range(2):
        lines = (tmp_path / f"node-{node}.log").read_text().splitlines()
        events = [json.loads(line) for line in lines if line.startswith('{"type": "record"')]
        rounds = [event["record"] for event in events]
        assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1))
        assert all(r["num_examples"] == 500 and r["neighbours_heard"] == [1 - node] for r in rounds)
        assert rounds[-1]["test_accuracy"] > 0.5


@pytest.mark.timeout(300)
def test_three_peers_merge_a_batchnorm_model_keeping_their_statistics(tmp_path):
    """BatchNorm statistics (int64 counters among them) stay each node's own; the rest is merged."""
    from tests.support import USER_MODULE

    (tmp_path / "user_nets.py").write_text(textwrap.dedent(USER_MODULE))
    out = tmp_path / "bn"
    argv = cli_argv("run", "--out", str(out), settings=[*SMALL, 'task.model="user_nets:bn_net"'])
    env = child_env(1, {"PYTHONPATH": str(tmp_path)})
    result = subprocess.run(argv, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    records = metrics(out)
    assert len(records) == 3 * ROUNDS
    assert all(r["merged"] == 2 and r["discarded"] is None for r in records)
    assert min(r["test_accuracy"] for r in records if r["round"] == ROUNDS) > 0.5


@pytest.mark.usefixtures("offline")
@pytest.mark.parametrize("partition", ["dirichlet", "none"])
def test_prepared_shards_give_every_node_its_rows_with_numpy_only(tmp_path, partition):
    folder = save_hf_digits(tmp_path / "hf", 600)
    config = load_config(
        None,
        [
            'task.dataset="hf"',
            f'task.path="{folder}"',
            f'task.partition="{partition}"',
            "task.label_noise=0.3",
            "nodes.count=3",
            "experiment.seed=4",
        ],
    )
    prepared = prepare_shards(config, tmp_path / "run")
    assert prepared.task.dataset == "prepared" and prepared.task.path == str(
        (tmp_path / "run" / "data").resolve()
    )
    assert prepared.replace(task=config.task) == config  # nothing else changed
    manifest = json.loads((tmp_path / "run" / "data" / "shards.json").read_text())
    assert manifest["num_nodes"] == 3 and manifest["input_shape"] == [1, 8, 8]
    for node in range(3):  # the same rows, noise and test set as loading the dataset in the node
        direct, shard = node_dataset(config.task, node, 3, 4), node_dataset(prepared.task, node, 3, 4)
        for field in ("x_train", "y_train", "x_test", "y_test"):
            np.testing.assert_array_equal(getattr(shard, field), getattr(direct, field), err_msg=field)
    code = (
        "import sys\nfrom fedgossip.tasks import TaskConfig, node_dataset\n"
        f"node_dataset(TaskConfig(dataset='prepared', path={prepared.task.path!r}), 1, 3, 4)\n"
        "print(sorted({'datasets', 'pyarrow', 'flwr_datasets', 'torch', 'pandas'} & set(sys.modules)))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert loaded.stdout.strip() == "[]", loaded.stderr
    with pytest.raises(
        ValueError, match=r"the shards were written for 3 nodes, the experiment has nodes\.count=4"
    ):
        node_dataset(prepared.task, 0, 4, 4)
