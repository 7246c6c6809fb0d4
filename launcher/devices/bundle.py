"""`fedgossip bundle CONFIG --hosts HOSTS.toml --out DIR`: one folder per device of a deployment.

Gossip: DIR/node-N for every node: node.toml (the experiment config plus the [peer] section the
launcher would give it, with the neighbours' addresses from the inventory), pki/ (the CA
certificate, its certificate and key issued for its host and named node-N for mutual TLS, its link
keys, the token if security.token), data/ (for a dataset the launcher prepares, Hugging Face or the
full MNIST: what the node reads of the shards), start.sh and fedgossip-node-N.service. Flower:
DIR/superlink and DIR/supernode-N (`flower_bundle.py`). The node configs, credentials and shards
come from the launcher's own functions (`launcher/gossip/launch.py`, `launcher/flower/security.py`,
`launcher/experiments/prepare.py`); a bundle always uses TLS with client certificates (its devices
talk over real networks). The CA's key is thrown away: a new bundle issues everything afresh.
DIR/experiment.toml is the config the bundle was made of.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import shutil
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
from fedgossip.launcher.experiments.prepare import SHARDS_FOLDER, prepare_shards
from fedgossip.launcher.gossip.launch import peer_section, security_material
from fedgossip.scenario.topology import run_graph
from fedgossip.tasks.datasets import dataset_entry
from fedgossip.tasks.files import MANIFEST as SHARDS_MANIFEST

NODE_CONFIG = "node.toml"
EXPERIMENT = "experiment.toml"
PEER_LOG = "peer.log"


def write_bundle(config: ExperimentConfig, hosts: Path, out: Path) -> list[Path]:
    """Check the inventory against `config`, then write the device folders into `out` (which must
    not exist or be empty); the folders written. ValueError naming the problem."""
    flower = config.experiment.mode == "flower"
    inventory = load_inventory(hosts, config.nodes.count, flower=flower)
    if flower and dataset_entry(config.task.dataset).prepared:
        raise ValueError(
            f"task.dataset {config.task.dataset!r}: a Flower bundle's SuperNodes load their data "
            "themselves, and this dataset is prepared by the launcher: use a gossip bundle, or an npz file"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} already exists and is not empty: choose another folder")
    secured = dataclasses.replace(config.security, tls=True, mutual_tls=True)
    config = config.replace(security=secured, peer=None)
    out.parent.mkdir(parents=True, exist_ok=True)
    # written beside `out`, then renamed to it: Ctrl-C or a full disk never leaves half a bundle
    partial = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        (partial / EXPERIMENT).write_text(dump_toml(config))
        bundle_id = secrets.token_hex(8)
        with tempfile.TemporaryDirectory(dir=partial, prefix=".issuing-") as staging:
            if flower:
                from fedgossip.launcher.devices.flower_bundle import write_flower_devices

                folders = write_flower_devices(config, inventory, partial, Path(staging), bundle_id)
            else:
                folders = write_gossip_devices(config, inventory, partial, Path(staging), bundle_id)
        partial.chmod(0o755)  # mkdtemp's 0700 is the staging's, not the bundle's
        partial.rename(out)  # an empty `out` is replaced
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return [out / folder.name for folder in folders]


def write_gossip_devices(
    config: ExperimentConfig, inventory: Inventory, out: Path, staging: Path, bundle_id: str
) -> list[Path]:
    """DIR/node-N for every gossip peer; credentials are issued into `staging`, then copied."""
    graph = run_graph(config)
    count = config.nodes.count
    hosts = [inventory.nodes[node] for node in range(count)]
    shards = prepared_shards(config, staging)
    credentials = security_material(config, graph, staging, [h.host for h in hosts], observer=False)
    addresses = [host.address for host in hosts]
    folders = []
    for node, host in enumerate(hosts):
        device = Device(f"node-{node}", "peer", node, host)
        folder = out / device.name
        folder.mkdir()
        fields = copy_credentials(credentials[node], folder)
        peer = peer_section(graph, node, host.listen, addresses, 0.0, fields)
        own = config if shards is None else copy_shards(config, shards, node, folder)
        (folder / NODE_CONFIG).write_text(dump_toml(own.replace(peer=peer)))
        write_start_script(
            folder, device, f'exec "$FEDGOSSIP" peer {NODE_CONFIG} --metrics {METRICS} 2>>{PEER_LOG}\n'
        )
        write_systemd_unit(folder, device, f"fedgossip gossip peer {node} ({config.experiment.name})")
        device.write_manifest(folder, bundle_id, config.experiment.name)
        folders.append(folder)
    return folders


def prepared_shards(config: ExperimentConfig, staging: Path) -> Path | None:
    """The launcher's shard folder of a dataset nodes do not load themselves (Hugging Face, the full
    MNIST), written into `staging`; None for the others (a device loads a built-in dataset itself,
    and a file dataset from `task.path` on the device). The node data checks run either way."""
    prepared = prepare_shards(config, staging)
    return Path(prepared.task.path) if prepared.task.dataset == "prepared" else None


def copy_shards(config: ExperimentConfig, shards: Path, node: int, folder: Path) -> ExperimentConfig:
    """Copy what `node` reads of the shard folder (the manifest, its training shard, the test set,
    a stream's chunks) into folder/data; the config that reads them from there."""
    manifest = json.loads((shards / SHARDS_MANIFEST).read_text())
    data = folder / SHARDS_FOLDER
    data.mkdir()
    for name in {SHARDS_MANIFEST, manifest["train"][node], manifest["test"], *manifest["stream"]}:
        shutil.copyfile(shards / name, data / name)
    return config.replace(task=dataclasses.replace(config.task, dataset="prepared", path=SHARDS_FOLDER))
