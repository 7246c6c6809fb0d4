"""`fedgossip bundle CONFIG --hosts HOSTS.toml --out DIR`: one folder per device of a deployment.

Gossip: DIR/node-N for every node: node.toml (the experiment config plus the [peer] section the
launcher would give it, with the neighbours' addresses from the inventory), pki/ (the CA
certificate, its certificate and key issued for its host and named node-N for mutual TLS, its link
keys, the token if security.token), start.sh and fedgossip-node-N.service. Flower: DIR/superlink
and DIR/supernode-N (`flower_bundle.py`). The node configs and credentials come from the launcher's
own functions (`launcher/gossip/launch.py`, `launcher/flower/security.py`); a bundle always uses
TLS with client certificates (its devices talk over real networks). The CA's key is thrown away:
a new bundle issues everything afresh. DIR/experiment.toml is the config the bundle was made of.
"""

from __future__ import annotations

import dataclasses
import secrets
import tempfile
from pathlib import Path

from fedgossip.config import ExperimentConfig, dump_toml
from fedgossip.launcher.devices.folders import (
    METRICS,
    Device,
    copy_credentials,
    write_start_script,
    write_systemd_unit,
)
from fedgossip.launcher.devices.inventory import Inventory, load_inventory
from fedgossip.launcher.gossip.launch import peer_section, security_material
from fedgossip.scenario.topology import run_graph

NODE_CONFIG = "node.toml"
EXPERIMENT = "experiment.toml"
PEER_LOG = "peer.log"


def write_bundle(config: ExperimentConfig, hosts: Path, out: Path) -> list[Path]:
    """Check the inventory against `config`, then write the device folders into `out` (which must
    not exist or be empty); the folders written. ValueError naming the problem."""
    flower = config.experiment.mode == "flower"
    inventory = load_inventory(hosts, config.nodes.count, flower=flower)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} already exists and is not empty: choose another folder")
    secured = dataclasses.replace(config.security, tls=True, mutual_tls=True)
    config = config.replace(security=secured, peer=None)
    out.mkdir(parents=True, exist_ok=True)
    (out / EXPERIMENT).write_text(dump_toml(config))
    bundle_id = secrets.token_hex(8)
    with tempfile.TemporaryDirectory(dir=out, prefix=".issuing-") as staging:
        if flower:
            from fedgossip.launcher.devices.flower_bundle import write_flower_devices

            return write_flower_devices(config, inventory, out, Path(staging), bundle_id)
        return write_gossip_devices(config, inventory, out, Path(staging), bundle_id)


def write_gossip_devices(
    config: ExperimentConfig, inventory: Inventory, out: Path, staging: Path, bundle_id: str
) -> list[Path]:
    """DIR/node-N for every gossip peer; credentials are issued into `staging`, then copied."""
    graph = run_graph(config)
    count = config.nodes.count
    hosts = [inventory.nodes[node] for node in range(count)]
    credentials = security_material(config, graph, staging, [h.host for h in hosts], observer=False)
    addresses = [host.address for host in hosts]
    folders = []
    for node, host in enumerate(hosts):
        device = Device(f"node-{node}", "peer", node, host)
        folder = out / device.name
        folder.mkdir()
        fields = copy_credentials(credentials[node], folder)
        peer = peer_section(graph, node, host.listen, addresses, 0.0, fields)
        (folder / NODE_CONFIG).write_text(dump_toml(config.replace(peer=peer)))
        write_start_script(
            folder, device, f'exec "$FEDGOSSIP" peer {NODE_CONFIG} --metrics {METRICS} 2>>{PEER_LOG}\n'
        )
        write_systemd_unit(folder, device, f"fedgossip gossip peer {node} ({config.experiment.name})")
        device.write_manifest(folder, bundle_id, config.experiment.name)
        folders.append(folder)
    return folders
