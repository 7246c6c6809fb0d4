"""The device folders of a Flower deployment: DIR/superlink and one DIR/supernode-N per node.

superlink/: node.toml (the experiment config), pki/ (the CA certificate, the SuperLink's
certificate and key issued for its host and for loopback, where its own `flwr` calls go, every
SuperNode's public key), start.sh (`fedgossip superlink .`: the SuperLink, the keys registered, the
run submitted and followed to its end, the ServerApp's records in flower/records.jsonl) and its
systemd unit. supernode-N/: node.toml, pki/ (the CA certificate, its SuperNode key), start.sh
(`flower-supernode` with partition N, as the launcher starts it) and its unit. The credentials come
from `launcher/flower/security.py`, the command lines from `launcher/flower/processes.py`.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from fedgossip.config import ExperimentConfig, dump_toml
from fedgossip.launcher.devices.folders import (
    PKI,
    Device,
    copy_credentials,
    write_start_script,
    write_systemd_unit,
)
from fedgossip.launcher.devices.inventory import Inventory
from fedgossip.launcher.flower.files import flower_env
from fedgossip.launcher.flower.processes import supernode_options
from fedgossip.launcher.flower.security import Security, security_material

NODE_CONFIG = "node.toml"
RECORDS = "flower/records.jsonl"  # where the SuperLink device's ServerApp writes (launcher's layout)
SUPERNODE_LOG = "supernode.log"
SUPERLINK_LOG = "superlink.log"
# what every Flower process of the launcher gets besides FLWR_HOME and PATH (launcher/flower/files.py)
QUIET = {k: v for k, v in flower_env(Path("."), 1).items() if k.startswith("FLWR_") and k != "FLWR_HOME"}


# Flower's exit code 305 (the process exits 1; its log says which): the SuperLink does not know this
# SuperNode's key yet (it registers the keys once it runs): try again, up to 10 minutes. Each try
# runs in a session of its own (setsid: its pid is its process group), removed whole after it: a
# SuperExec left by a failed try would take the next one's tasks. SIGTERM (systemctl stop, Ctrl-C)
# stops the SuperNode and what it started.
RETRY = """tries=0
while :; do
  touch {log}
  logged=$(wc -c <{log})
  setsid flower-supernode {args} >>{log} 2>&1 &
  child=$!
  trap 'kill -TERM -- "-$child" 2>/dev/null; wait "$child"; exit 143' TERM INT
  code=0
  wait "$child" || code=$?
  trap - TERM INT
  kill -TERM -- "-$child" 2>/dev/null || true
  unknown=0
  tail -c +$((logged + 1)) {log} | grep -q "Exit Code: 305" && unknown=1
  if [ "$unknown" -eq 0 ] || [ "$tries" -ge 120 ]; then exit "$code"; fi
  tries=$((tries + 1))
  echo "{name}: the SuperLink does not know this SuperNode yet; trying again in 5 s" >>{log}
  sleep 5
done
"""


def write_flower_devices(
    config: ExperimentConfig, inventory: Inventory, out: Path, staging: Path, bundle_id: str
) -> list[Path]:
    """DIR/superlink and DIR/supernode-N; credentials are issued into `staging`, then copied."""
    link = inventory.superlink
    assert link is not None  # load_inventory(..., flower=True) checked it
    security = security_material(config, staging, link.host)  # and loopback, for its own flwr calls
    assert security.ca is not None and security.cert is not None and security.key is not None
    experiment = dump_toml(config)
    superlink = Device("superlink", "superlink", None, link)
    folder = out / superlink.name
    folder.mkdir()
    public = {f"supernode-{i}.pub": str(pub) for i, (_, pub) in enumerate(security.node_keys)}
    copy_credentials(
        {"ca": str(security.ca), "cert": str(security.cert), "key": str(security.key), **public}, folder
    )
    (folder / NODE_CONFIG).write_text(experiment)
    write_start_script(
        folder, superlink, f'exec "$FEDGOSSIP" superlink . >>{SUPERLINK_LOG} 2>&1\n', records=RECORDS
    )
    write_systemd_unit(folder, superlink, f"fedgossip Flower SuperLink ({config.experiment.name})")
    superlink.write_manifest(folder, bundle_id, config.experiment.name)
    folders = [folder]
    count = config.nodes.count
    # the SuperNodes' view of the credentials: paths inside their own folder
    relative = Security(
        ca=Path(PKI) / security.ca.name,
        node_keys=tuple((Path(PKI) / key.name, Path(PKI) / pub.name) for key, pub in security.node_keys),
    )
    for node in range(count):
        host = inventory.nodes[node]
        device = Device(f"supernode-{node}", "supernode", node, host)
        folder = out / device.name
        folder.mkdir()
        private, _ = security.node_keys[node]
        copy_credentials({"ca": str(security.ca), "key": str(private)}, folder)
        (folder / NODE_CONFIG).write_text(experiment)
        options = supernode_options(
            link.address, host.port, node, count, relative, max_wait=config.flower.startup_timeout
        )
        environment = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(QUIET.items()))
        body = (
            # flower-supernode and what it starts (flower-superexec, flwr-clientapp) sit beside fedgossip
            'case "$FEDGOSSIP" in */*) PATH="${FEDGOSSIP%/*}:$PATH" ;; esac\n'
            f"export PATH {environment}\n"
            + RETRY.format(args=shlex.join(options), log=SUPERNODE_LOG, name=device.name)
        )
        write_start_script(folder, device, body, records=None)
        write_systemd_unit(folder, device, f"fedgossip Flower SuperNode {node} ({config.experiment.name})")
        device.write_manifest(folder, bundle_id, config.experiment.name)
        folders.append(folder)
    return folders
