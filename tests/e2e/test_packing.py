"""Several peers per OS process (`nodes.per_process`): own ports, the same records as one peer per
process, and a crash of one process ends only its peers."""

from __future__ import annotations

import json

import psutil
import pytest

from tests.support import kill_during_run, metrics, node_config, run_cli, set_args, timeless

EIGHT = [
    "nodes.count=8",
    "experiment.rounds=3",
    "topology.kind=regular",
    "topology.degree=3",
    "task.model=mlp",
]


@pytest.mark.timeout(400)
def test_four_peers_per_process_record_what_one_peer_per_process_records(tmp_path):
    runs = {}
    for per_process in (4, 1):
        out = tmp_path / f"per-{per_process}"
        result = run_cli("run", "--out", str(out), *set_args([*EIGHT, f"nodes.per_process={per_process}"]))
        assert result.returncode == 0, result.stdout + result.stderr
        runs[per_process] = timeless(metrics(out))
    processes = json.loads((tmp_path / "per-4" / "processes.json").read_text())
    assert sorted(processes) == ["nodes-0-3", "nodes-4-7"]
    assert sorted(p.name for p in (tmp_path / "per-4" / "logs").iterdir()) == [
        "forkserver.log",
        "nodes-0-3.log",
        "nodes-4-7.log",
    ]
    assert len(runs[4]) == 24 and all(r["merged"] == 3 and r["train_loss"] is not None for r in runs[4])
    assert runs[4] == runs[1]  # losses, accuracies, bytes and who was heard, to the last bit


def listening_ports(pid: int) -> set[int]:
    return {
        c.laddr.port for c in psutil.Process(pid).net_connections("tcp") if c.status == psutil.CONN_LISTEN
    }


@pytest.mark.timeout(300)
def test_killing_one_process_of_four_peers_leaves_the_other_four_running(tmp_path):
    out = tmp_path / "killed"
    settings = [
        "nodes.count=8",
        "nodes.per_process=4",
        "experiment.rounds=40",  # linear-model rounds take ~10 ms: leave plenty after the kill
        "topology.kind=complete",
        "experiment.round_timeout=4",
        "task.model=linear",
    ]

    def one_server_per_peer(processes: dict[str, int]) -> None:
        for name, nodes in (("nodes-0-3", range(4)), ("nodes-4-7", range(4, 8))):
            own = {int(node_config(out, n).peer.listen.rsplit(":", 1)[1]) for n in nodes}
            assert listening_ports(processes[name]) == own  # one gRPC server per hosted peer

    code, output = kill_during_run(out, settings, 0, "nodes-0-3", one_server_per_peer)
    assert code == 3, output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "partial" and summary["dead_nodes"] == [0, 1, 2, 3]
    records = metrics(out)
    for node in range(4, 8):
        assert max(r["round"] for r in records if r["node"] == node) == 40
    last = max(r["round"] for r in records if r["node"] < 4)
    late = [r for r in records if r["node"] >= 4 and r["round"] > last + 1]
    assert late and all(set(r["neighbours_heard"]) == set(range(4, 8)) - {r["node"]} for r in late), records
