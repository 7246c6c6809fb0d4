"""`fedgossip bundle` and `fedgossip collect` without processes: the inventory's bad input (exit 2
naming the problem), what a gossip device folder holds (neighbours' real addresses, a certificate
for its host signed by the bundle's CA, link keys shared with exactly its neighbours, no CA key),
and collect's clock alignment on records written by hand on four skewed clocks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from fedgossip.client.gossip.transport.security import check_node_config
from fedgossip.config import load_config
from fedgossip.launcher.cli import app
from fedgossip.launcher.devices.collect import clock_offsets
from fedgossip.launcher.devices.folders import copy_credentials
from fedgossip.launcher.devices.inventory import is_host
from tests.support.disks import resize, small_disk

RING = ["nodes.count=4", "topology.kind=ring", "task.model=linear", "experiment.rounds=2"]


def inventory(
    path: Path, hosts: dict[int, str], port: int = 7000, ports: dict[int, int] | None = None
) -> Path:
    """HOSTS.toml with one [nodes.N] table per entry of `hosts`."""
    lines = ["[defaults]", f"port = {port}"]
    for node, host in hosts.items():
        lines += [f"[nodes.{node}]", f'host = "{host}"']
        if ports and node in ports:
            lines.append(f"port = {ports[node]}")
    path.write_text("\n".join(lines) + "\n")
    return path


def bundle(tmp_path: Path, hosts: Path, *overrides: str):
    args = ["bundle", "--hosts", str(hosts), "--out", str(tmp_path / "bundle")]
    for item in (*RING, *overrides):
        args += ["--set", item]
    return CliRunner().invoke(app, args)


def assert_refused(result, message: str, out: Path) -> None:
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert text.startswith("error:") and message in text, text
    assert not out.exists()


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("hosts", "ports", "message"),
    [
        ({0: "10.0.0.1", 1: "10.0.0.2", 2: "10.0.0.3"}, None, "hosts.nodes.3: node 3 has no host"),
        ({0: "10.0.0.1", 1: "10.0.0.2", 2: "10.0.0.3", 3: "10.0.0.2"}, None, "hosts.nodes.3: 10.0.0.2:7000"),
        ({0: "a.lan", 1: "A.lan", 2: "c.lan", 3: "d.lan"}, {1: 7000}, "hosts.nodes.1: A.lan:7000 is also"),
        (
            {0: "10.0.0.1", 1: "pi 2.local", 2: "10.0.0.3", 3: "10.0.0.4"},
            None,
            "hosts.nodes.1.host: 'pi 2.local'",
        ),
        (
            {0: "10.0.0.1", 1: "10.0.0.2", 2: "300.1.2.3", 3: "10.0.0.4"},
            None,
            "hosts.nodes.2.host: '300.1.2.3'",
        ),
        ({0: "-x.lan", 1: "10.0.0.2", 2: "10.0.0.3", 3: "10.0.0.4"}, None, "hosts.nodes.0.host: '-x.lan'"),
        (
            {0: "10.0.0.1", 1: "10.0.0.2", 2: "10.0.0.3", 3: "10.0.0.4"},
            {2: 70000},
            "hosts.nodes.2.port: 70000",
        ),
        ({0: "a", 1: "b", 2: "c", 3: "d", 4: "e"}, None, "hosts.nodes.4: no such node"),
    ],
)
def test_a_bad_inventory_is_refused_with_exit_2_naming_the_problem(tmp_path, hosts, ports, message):
    result = bundle(tmp_path, inventory(tmp_path / "hosts.toml", hosts, ports=ports))
    assert_refused(result, message, tmp_path / "bundle")


@pytest.mark.timeout(30)
def test_a_flower_bundle_needs_the_superlink_and_its_own_data_and_a_missing_inventory_is_named(tmp_path):
    hosts = inventory(tmp_path / "hosts.toml", {n: f"10.0.0.{n + 1}" for n in range(4)})
    flower = bundle(tmp_path, hosts, "experiment.mode=flower")
    assert_refused(
        flower, "hosts.superlink: a Flower deployment needs the SuperLink's host", tmp_path / "bundle"
    )
    hosts.write_text(hosts.read_text() + '[superlink]\nhost = "10.0.0.100"\n')
    prepared = bundle(tmp_path, hosts, "experiment.mode=flower", "task.dataset=mnist")
    assert_refused(
        prepared, "task.dataset 'mnist': a Flower bundle's SuperNodes load their data", tmp_path / "bundle"
    )
    missing = bundle(tmp_path, tmp_path / "nowhere.toml")
    assert_refused(missing, f"cannot read the inventory {tmp_path / 'nowhere.toml'}", tmp_path / "bundle")


def test_hosts_are_ip_addresses_or_dns_names():
    good = ["10.0.0.1", "::1", "fe80::1", "pi-2.local", "node7", "a.b.example.org.", "x" * 63]
    bad = ["", "[::1]", "pi_2.local", "a..b", "-a.lan", "a-.lan", "1.2.3.256", "x" * 64, "10.0.0.1:7000"]
    assert all(is_host(h) for h in good)
    assert not any(is_host(h) for h in bad)


@pytest.mark.timeout(60)
def test_a_gossip_device_folder_has_its_neighbours_addresses_its_certificate_and_its_link_keys(tmp_path):
    hosts = {0: "10.0.0.1", 1: "10.0.0.2", 2: "pi-3.lan", 3: "10.0.0.4"}
    result = bundle(tmp_path, inventory(tmp_path / "hosts.toml", hosts, ports={3: 7400}))
    assert result.exit_code == 0, result.output
    out = tmp_path / "bundle"
    addresses = {0: "10.0.0.1:7000", 1: "10.0.0.2:7000", 2: "pi-3.lan:7000", 3: "10.0.0.4:7400"}
    ca = x509.load_pem_x509_certificate((out / "node-0" / "pki" / "ca.pem").read_bytes())
    links = {}
    for node in range(4):
        folder = out / f"node-{node}"
        config = load_config(folder / "node.toml")
        peer = config.peer
        ring = {(node - 1) % 4, (node + 1) % 4}  # topology.kind=ring, by hand
        assert peer.neighbours == {str(n): addresses[n] for n in ring}
        assert peer.listen == (addresses[node] if node != 2 else "0.0.0.0:7000")  # a name: bind all
        assert peer.run_start == 0.0 and peer.client_ca_file == peer.ca_file == "pki/ca.pem"
        cert = x509.load_pem_x509_certificate((folder / peer.cert_file).read_bytes())
        ca.public_key().verify(
            cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
        )
        assert cert.subject.rfc4514_string() == f"CN=node-{node}"
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert hosts[node] in [
            str(n) for n in names.get_values_for_type(x509.IPAddress)
        ] + names.get_values_for_type(x509.DNSName)
        key_file = folder / peer.key_file
        assert oct(key_file.stat().st_mode & 0o777) == "0o600"
        links[node] = json.loads((folder / peer.link_keys_file).read_text())
        assert "observer" not in links[node]  # no launcher observes a deployment
        assert sorted(p.name for p in (folder / "pki").iterdir()) == sorted(
            ["ca.pem", f"node-{node}.pem", f"node-{node}.key", f"node-{node}.links"]
        )
        cwd = os.getcwd()
        os.chdir(folder)  # the start script runs in its folder: the paths are relative to it
        try:
            check_node_config(config)
        finally:
            os.chdir(cwd)
        assert config.security.tls and config.security.mutual_tls
        script = (folder / "start.sh").read_text()
        assert "peer node.toml --metrics metrics.jsonl" in script and os.access(folder / "start.sh", os.X_OK)
        unit = (folder / f"fedgossip-node-{node}.service").read_text()
        assert f"ExecStart=/bin/sh /opt/fedgossip/node-{node}/start.sh" in unit
    for node in range(4):
        for other, secret in links[node]["links"].items():
            assert links[int(other)]["links"][str(node)] == secret
    assert len({s for n in links.values() for s in n["links"].values()}) == 4  # one secret per ring edge
    assert not list(out.rglob("ca.key")) and not list(out.glob(".issuing-*"))
    again = bundle(tmp_path, tmp_path / "hosts.toml")
    assert again.exit_code == 2 and "already exists and is not empty" in " ".join(again.output.split())


def test_clocks_are_aligned_on_the_earliest_round_1_record():
    records = {
        0: [{"round": 1, "time_s": 30.0}, {"round": 2, "time_s": 31.0}],  # started 25 s early
        1: [{"round": 1, "time_s": 5.0}, {"round": 2, "time_s": 6.5}],  # started last
        2: [{"round": 1, "time_s": 12.25}],
        3: [{"round": 2, "time_s": 9.0}],  # no round 1: its own clock
    }
    assert clock_offsets(records) == {0: -25.0, 1: 0.0, 2: -7.25, 3: 0.0}
    assert clock_offsets({}) == {}


@pytest.mark.timeout(60)
def test_a_flower_bundle_has_a_superlink_for_its_host_and_supernodes_with_their_own_keys(tmp_path):
    hosts = inventory(tmp_path / "hosts.toml", {n: f"10.0.0.{n + 2}" for n in range(4)})
    hosts.write_text(hosts.read_text() + '[superlink]\nhost = "coordinator.lan"\nport = 9300\n')
    result = bundle(tmp_path, hosts, "experiment.mode=flower")
    assert result.exit_code == 0, result.output
    out = tmp_path / "bundle"
    link = out / "superlink"
    cert = x509.load_pem_x509_certificate((link / "pki" / "superlink.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "coordinator.lan" in names.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in [str(n) for n in names.get_values_for_type(x509.IPAddress)]  # its own flwr calls
    assert "fedgossip superlink ." in (link / "start.sh").read_text().replace('"$FEDGOSSIP"', "fedgossip")
    for node in range(4):
        folder = out / f"supernode-{node}"
        script = (folder / "start.sh").read_text()
        assert "--superlink coordinator.lan:9300" in script
        assert f"'partition-id={node} num-partitions=4'" in script
        assert (
            f"--auth-supernode-private-key pki/supernode-{node}" in script
            and "--root-certificates pki/ca.pem" in script
        )
        private = (folder / "pki" / f"supernode-{node}").read_bytes()
        key = serialization.load_ssh_private_key(private, password=None)
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        assert (
            link / "pki" / f"supernode-{node}.pub"
        ).read_bytes().strip() == public  # registered by the SuperLink
        assert json.loads((folder / "device.json").read_text())["role"] == "supernode"


@pytest.mark.timeout(60)
def test_collect_refuses_folders_of_two_bundles_and_a_folder_without_devices(tmp_path):
    hosts = inventory(tmp_path / "hosts.toml", {n: f"10.0.0.{n + 2}" for n in range(4)})
    first = bundle(tmp_path / "a", hosts)
    second = bundle(tmp_path / "b", hosts)
    assert first.exit_code == second.exit_code == 0
    a, b = tmp_path / "a" / "bundle", tmp_path / "b" / "bundle"
    mixed = CliRunner().invoke(
        app, ["collect", str(a / "node-0"), str(b / "node-1"), "--out", str(tmp_path / "r")]
    )
    assert_refused(mixed, f"{b / 'node-1'}: from another bundle than {a / 'node-0'}", tmp_path / "r")
    empty = CliRunner().invoke(app, ["collect", str(tmp_path), "--out", str(tmp_path / "r")])
    assert_refused(empty, f"{tmp_path}: no device folder (device.json) in it", tmp_path / "r")


@pytest.mark.timeout(120)
def test_a_prepared_dataset_gives_each_device_its_own_shard_and_the_test_set(tmp_path):
    import numpy as np

    from fedgossip.tasks.files import read_shard
    from tests.support import digit_images, save_hf_digits

    digits = save_hf_digits(tmp_path / "hf", 300, test=60)
    hosts = inventory(tmp_path / "hosts.toml", {n: f"10.0.0.{n + 2}" for n in range(4)})
    result = bundle(tmp_path, hosts, "task.dataset=hf", f"task.path={digits}")
    assert result.exit_code == 0, result.output
    x, y = digit_images(300)
    images = x.reshape(300, 64)
    rows = []
    for node in range(4):
        folder = tmp_path / "bundle" / f"node-{node}"
        task = load_config(folder / "node.toml").task
        assert (task.dataset, task.path) == ("prepared", "data")
        assert sorted(p.name for p in (folder / "data").iterdir()) == [
            f"node-{node}.npz",
            "shards.json",
            "test.npz",
        ]
        own = read_shard(str(folder / "data"), node, 4)
        np.testing.assert_array_equal(own.x_test, images[240:])  # the dataset's test split, everywhere
        np.testing.assert_array_equal(own.y_test, y[240:])
        rows += [bytes(row) for row in own.x.astype(np.uint8)]
    # the devices' training shards are a partition of the 240 training images (iid: disjoint, covering)
    assert sorted(rows) == sorted(bytes(row) for row in images[:240].astype(np.uint8))


def device_record(node: int, round_: int, time_s: float, accuracy: float) -> dict:
    return {
        "type": "record",
        "node": node,
        "record": {
            "node": node,
            "round": round_,
            "time_s": time_s,
            "test_accuracy": accuracy,
            "bytes_sent": 100,
            "merged": 2,
            "neighbours_heard": [],
        },
    }


@pytest.mark.timeout(60)
def test_collect_aligns_each_devices_clock_and_a_missing_device_is_a_dead_node(tmp_path):
    hosts = inventory(tmp_path / "hosts.toml", {n: f"10.0.0.{n + 2}" for n in range(4)})
    assert bundle(tmp_path, hosts).exit_code == 0
    out = tmp_path / "bundle"
    starts = {0: 40.0, 1: 10.0, 2: 12.5}  # each device's round-1 time on its own clock; node 3 lost
    for node, t1 in starts.items():
        events = [{"type": "ready", "node": node, "port": 7000, "setup_s": 1.0}]
        events += [device_record(node, 1, t1, 0.5), device_record(node, 2, t1 + 2.0, 0.6 + node / 10)]
        events += [
            {"type": "scenario", "node": node, "round": 2, "time_s": t1 + 1.0, "kind": "drop", "details": {}}
        ]
        events += [{"type": "done", "node": node}]
        (out / f"node-{node}" / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    folders = [str(out / f"node-{n}") for n in range(3)]
    result = CliRunner().invoke(app, ["collect", *folders, "--out", str(tmp_path / "r")])
    assert result.exit_code == 3, result.output  # partial
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "partial" and summary["dead_nodes"] == [3]
    assert "node 3: no device folder collected" in summary["errors"]
    records = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    # every round-1 record moved to 10.0 (node 1's, the last started); later ones by the same shift
    assert sorted((r["node"], r["round"], r["time_s"]) for r in records) == [
        (0, 1, 10.0),
        (0, 2, 12.0),
        (1, 1, 10.0),
        (1, 2, 12.0),
        (2, 1, 10.0),
        (2, 2, 12.0),
    ]
    events = [json.loads(line) for line in (tmp_path / "r" / "events.jsonl").read_text().splitlines()]
    assert sorted((e["node"], e["time_s"]) for e in events) == [(0, 11.0), (1, 11.0), (2, 11.0)]
    assert summary["final_mean_accuracy"] == pytest.approx((0.6 + 0.7 + 0.8) / 3)
    assert summary["wall_time_s"] == 12.0


@pytest.mark.timeout(60)
def test_collect_onto_a_full_disk_names_the_file_leaves_no_folder_and_runs_again_once_space_is_freed(
    tmp_path,
):
    hosts = inventory(tmp_path / "hosts.toml", {n: f"10.0.0.{n + 2}" for n in range(4)})
    assert bundle(tmp_path, hosts).exit_code == 0
    devices = tmp_path / "bundle"
    for node in range(4):
        events = [device_record(node, 1, 10.0, 0.5), device_record(node, 2, 12.0, 0.6)]
        events += [{"type": "done", "node": node}]
        (devices / f"node-{node}" / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
        (devices / f"node-{node}" / "peer.log").write_text("a log line\n" * 20_000)  # 220 KB a device
    folders = [str(devices / f"node-{n}") for n in range(4)]
    with small_disk(tmp_path / "disk", "120k") as disk:
        out = disk / "results"
        full = CliRunner().invoke(app, ["collect", *folders, "--out", str(out)])
        said = "".join(full.output.split())  # the console folds long paths anywhere
        assert full.exit_code == 2 and "NospaceleftondeviceNo" not in said, full.output
        assert said.endswith(f"to{out}/logs/node-0.log:Nospaceleftondevice"), full.output
        assert not out.exists()  # only copies were in it: a rerun must not be refused
        resize(disk, "10m")
        again = CliRunner().invoke(app, ["collect", *folders, "--out", str(out)])
        assert again.exit_code == 0, again.output
        assert json.loads((out / "summary.json").read_text())["final_mean_accuracy"] == pytest.approx(0.6)
        assert len((out / "metrics.jsonl").read_text().splitlines()) == 8


@pytest.mark.timeout(60)
def test_a_bundle_cut_short_by_a_full_disk_leaves_nothing_and_the_same_command_runs_again(tmp_path):
    hosts = inventory(tmp_path / "hosts.toml", {n: f"10.0.0.{n + 2}" for n in range(4)})
    with small_disk(tmp_path / "disk", "100k") as disk:  # a 4-device bundle takes ~170k
        args = ["bundle", "--hosts", str(hosts), "--out", str(disk / "bundle")]
        for item in RING:
            args += ["--set", item]
        full = CliRunner().invoke(app, args)
        assert full.exit_code == 2 and "Nospaceleftondevice" in "".join(full.output.split()), full.output
        assert list(disk.iterdir()) == []  # no half bundle, no staging folder
        resize(disk, "10m")
        again = CliRunner().invoke(app, args)
        assert again.exit_code == 0, again.output
        assert sorted(p.name for p in disk.iterdir()) == ["bundle"]
        assert sorted(p.name for p in (disk / "bundle").iterdir()) == [
            "experiment.toml",
            *(f"node-{n}" for n in range(4)),
        ]


def test_a_bundle_interrupted_while_issuing_leaves_nothing(tmp_path, monkeypatch):
    from fedgossip.launcher.devices import bundle as bundling

    hosts = inventory(tmp_path / "hosts.toml", {n: f"10.0.0.{n + 2}" for n in range(4)})
    issued = []

    def interrupted(*args, **kwargs):  # Ctrl-C while the third device's credentials are copied
        issued.append(args)
        if len(issued) == 3:
            raise KeyboardInterrupt
        return copy_credentials(*args, **kwargs)

    monkeypatch.setattr(bundling, "copy_credentials", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bundling.write_bundle(load_config(None, list(RING)), hosts, tmp_path / "out" / "bundle")
    assert list((tmp_path / "out").iterdir()) == []
