"""A Flower bundle's SuperNode start scripts against Flower itself, without a network: the argv
each script gives `flower-supernode` is accepted by flwr's own argument parser, and the files it
names (the CA certificate, the SuperNode's key) load with flwr's own loaders from the device's
folder, where the script runs (it starts with `cd "$(dirname "$0")"`)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from flwr.common.args import try_obtain_root_certificates
from flwr.common.config import parse_config_args
from flwr.supernode.cli.flower_supernode import _parse_args_run_supernode, _try_setup_client_authentication
from typer.testing import CliRunner

from fedgossip.launcher.cli import app


def supernode_argv(script: Path) -> list[str]:
    """The arguments the start script passes to flower-supernode (the line that starts it)."""
    line = next(line for line in script.read_text().splitlines() if "setsid flower-supernode " in line)
    words = shlex.split(line)
    start = words.index("flower-supernode") + 1
    return [
        word for word in words[start:] if not word.startswith((">", "2>")) and word != "&"
    ]  # redirections


@pytest.mark.timeout(60)
def test_flower_supernode_accepts_each_start_scripts_argv_and_loads_the_files_it_names(tmp_path, monkeypatch):
    hosts = tmp_path / "hosts.toml"
    nodes = "".join(f'[nodes.{n}]\nhost = "10.0.0.{n + 2}"\n' for n in range(2))
    hosts.write_text(f'[defaults]\nport = 7000\n{nodes}[superlink]\nhost = "10.0.0.1"\nport = 9300\n')
    args = ["bundle", "--hosts", str(hosts), "--out", str(tmp_path / "bundle")]
    for item in ("experiment.mode=flower", "nodes.count=2", "task.model=linear", "experiment.rounds=1"):
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for node in range(2):
        folder = tmp_path / "bundle" / f"supernode-{node}"
        parsed = _parse_args_run_supernode().parse_args(supernode_argv(folder / "start.sh"))
        assert parsed.superlink == "10.0.0.1:9300" and not parsed.insecure
        assert parse_config_args([parsed.node_config]) == {"partition-id": node, "num-partitions": 2}
        monkeypatch.chdir(folder)  # where the script runs: its relative paths must resolve there
        assert (
            try_obtain_root_certificates(parsed, parsed.superlink) == (folder / "pki" / "ca.pem").read_bytes()
        )
        assert _try_setup_client_authentication(parsed) is not None  # its SuperNode key, parsed by flwr
