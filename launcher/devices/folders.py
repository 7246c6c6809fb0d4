"""What every device folder of a bundle holds besides its node config: its manifest (device.json),
its credentials copied in with paths relative to the folder, its start script and systemd unit.

A device folder is self-contained: `start.sh` changes into it, so it runs from wherever the folder
was copied. The start script refuses to start over a metrics file that already holds a run (a
second run appended to it would mix two runs in one `fedgossip collect`).
"""

from __future__ import annotations

import json
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from fedgossip.launcher.devices.inventory import Host

MANIFEST = "device.json"
START = "start.sh"
PKI = "pki"
METRICS = "metrics.jsonl"  # what the device records: the peer's events, or the ServerApp's


@dataclass(frozen=True)
class Device:
    """One device folder of a bundle: its name (folder name), role and node, where it runs."""

    name: str  # node-3, superlink, supernode-3
    role: str  # "peer", "superlink" or "supernode"
    node: int | None
    host: Host

    def write_manifest(self, folder: Path, bundle_id: str, experiment: str) -> None:
        """device.json: what `fedgossip collect` needs to know of this folder."""
        manifest = {
            "bundle": bundle_id,
            "experiment": experiment,
            "name": self.name,
            "role": self.role,
            "node": self.node,
            "address": self.host.address,
            "listen": self.host.listen,
        }
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def copy_credentials(fields: dict[str, str], folder: Path) -> dict[str, str]:
    """Copy the files that `fields` (config key -> path) name into folder/pki (keys stay 0600);
    the same fields with paths relative to `folder`."""
    pki = folder / PKI
    pki.mkdir(mode=0o700, parents=True, exist_ok=True)
    relative = {}
    for key, path in fields.items():
        source = Path(path)
        shutil.copy2(source, pki / source.name)
        relative[key] = f"{PKI}/{source.name}"
    return relative


def write_start_script(folder: Path, device: Device, body: str, records: str | None = METRICS) -> Path:
    """start.sh: change into the folder, refuse to start over a run's `records` (a file the device
    appends to), then `body` (shell lines; `$FEDGOSSIP` is the fedgossip command, the inventory's
    `command` unless the environment says)."""
    script = folder / START
    refuse = (
        f"if [ -s {records} ]; then\n"
        f'  echo "{device.name}: {records} already holds a run; move it away to start again" >&2\n'
        "  exit 2\n"
        "fi\n"
        if records
        else ""
    )
    script.write_text(
        "#!/bin/sh\n"
        f"# fedgossip device {device.name} ({device.role}): start it here or with its systemd unit.\n"
        "set -eu\n"
        'cd "$(dirname "$0")"\n'
        f': "${{FEDGOSSIP:={shlex.quote(device.host.command)}}}"\n' + refuse + body
    )
    script.chmod(0o755)
    return script


def write_systemd_unit(folder: Path, device: Device, description: str) -> Path:
    """fedgossip-NAME.service: runs start.sh once (no restart: a finished run stays finished)
    from the device's folder under the inventory's `dir` (and `user`, if given)."""
    where = f"{device.host.dir.rstrip('/')}/{device.name}"
    lines = [
        "[Unit]",
        f"Description={description}",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        *([f"User={device.host.user}"] if device.host.user else []),
        f"WorkingDirectory={where}",
        f"ExecStart=/bin/sh {where}/{START}",
        "Restart=no",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    unit = folder / f"fedgossip-{device.name}.service"
    unit.write_text("\n".join(lines) + "\n")
    return unit
