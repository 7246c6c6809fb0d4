"""Gossip runs of 4 peers in 4 emulated hosts (launcher.network = "namespaces", root, iproute2):
mutual TLS over the hosts' own addresses completes; plaintext between hosts is refused unless
security.insecure = true; the kernel's network layer loses packets (slower pushes) but no model,
and delays one link by 50 ms (in the mutual-TLS run: netem, or netfilter queues and the run's delay
process where the kernel has no netem) in that link's push times only; no namespace, veth,
process (the delay process included) or nftables table is left after the run, after a failure
(the delay process killed, where it runs, or every peer) and after a SIGKILL of the launcher.
Flower deployment: the SuperLink and each SuperNode run in hosts of their own, under mutual TLS."""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
from pathlib import Path

import psutil
import pytest
from cryptography import x509

from fedgossip.config import PeerSection, load_config
from fedgossip.launcher.network.nfqueue import TABLE
from fedgossip.launcher.network.shaping import has_qdisc
from fedgossip.launcher.supervision.namespaces import NETNS_DIR, EmulatedHosts
from fedgossip.launcher.supervision.processes import python_module
from tests.support import metrics, run_cli, run_status, start_cli, wait_for, write_node_config
from tests.support.namespaces import needs_namespaces, network_leftovers

pytestmark = [pytest.mark.e2e, needs_namespaces]

FOUR = ["nodes.count=4", "experiment.rounds=2", "task.model=linear", "launcher.network=namespaces"]
MTLS = [*FOUR, "security.tls=true", "security.mutual_tls=true", "scenario.network_layer=kernel"]
LONG = [*FOUR, "experiment.rounds=100000", "security.insecure=true"]  # ~10 ms rounds until stopped
LONG += ["scenario.network_layer=kernel", 'scenario.link_delay_ms={"0-1"=5}']  # and its delay process


def run(out: Path, settings: list[str]) -> subprocess.CompletedProcess:
    """`fedgossip run --out OUT --set ...` to the end."""
    args = ["run", "--out", str(out)]
    for setting in settings:
        args += ["--set", setting]
    return run_cli(*args, timeout=150)


def pushes(out: Path) -> dict[tuple[int, int], list[float]]:
    """The push times of a kernel-layer run by link direction (sender, receiver)."""
    times: dict[tuple[int, int], list[float]] = {}
    for line in (out / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event["kind"] == "push":
            times.setdefault((event["node"], event["details"]["to"]), []).append(event["details"]["push_s"])
    return times


def gone(pids: list[int]) -> bool:
    """Whether none of `pids` runs any more (zombies count as gone)."""
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


SLOW_LINK = ((0, 1), (1, 0))  # 50 ms more each way in the mutual-TLS run


@pytest.fixture(scope="module")
def mtls_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mtls") / "run"
    done = run(out, [*MTLS, 'scenario.link_delay_ms={"0-1"=50}'])
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def unshaped_pushes(out: Path) -> list[float]:
    """The push times of a run's links but the slow one."""
    return [t for link, times in pushes(out).items() if link not in SLOW_LINK for t in times]


@pytest.mark.timeout(180)
def test_mutual_tls_between_hosts_completes_on_their_own_addresses(mtls_run):
    network = json.loads((mtls_run / "network.json").read_text())
    addresses = {int(node): host["address"] for node, host in network["nodes"].items()}
    assert len(set(addresses.values())) == 4 and not any(a.startswith("127.") for a in addresses.values())
    for node in range(4):
        peer = load_config(mtls_run / "nodes" / f"node-{node}.toml", []).peer
        assert peer.listen.rpartition(":")[0] == addresses[node]
        assert all(address.rpartition(":")[0] == addresses[int(n)] for n, address in peer.neighbours.items())
        cert = x509.load_pem_x509_certificate(Path(peer.cert_file).read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert addresses[node] in {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    records = metrics(mtls_run)
    assert sorted((r["node"], r["round"]) for r in records) == [(n, r) for n in range(4) for r in (1, 2)]
    assert all(r["merged"] == 3 and r["refused"] == 0 for r in records)  # 4 nodes, degree 3: all heard
    assert set(pushes(mtls_run)) == {(a, b) for a in range(4) for b in range(4) if a != b}
    assert network_leftovers(network["prefix"]) == [] and fedgossip_tables() == []
    assert (network["delay_process"] is None) == has_qdisc("netem")  # netem, or the queues' process
    delay_process = [network["delay_process"]] if network["delay_process"] else []
    assert gone(list(json.loads((mtls_run / "processes.json").read_text()).values()) + delay_process)


@pytest.mark.timeout(120)
def test_plaintext_between_hosts_is_refused_unless_insecure(tmp_path):
    refused = run(tmp_path / "plain", FOUR)
    assert refused.returncode == 2
    assert "security.tls = true (or security.insecure = true" in refused.stdout + refused.stderr
    assert not (tmp_path / "plain").exists()
    with EmulatedHosts(2) as hosts:  # and a peer itself refuses to serve plaintext on its host's address
        peer = PeerSection(
            id=0, listen=f"{hosts.addresses[0]}:5000", neighbours={"1": f"{hosts.addresses[1]}:5000"}
        )
        config = write_node_config(tmp_path / "node-0.toml", peer, "nodes.count=2", "task.model=linear")
        argv = hosts.command(0, python_module("fedgossip.client.gossip.peer", str(config)))
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"plaintext gRPC on non-loopback address {hosts.addresses[0]}:5000" in done.stderr


@pytest.mark.timeout(180)
def test_kernel_loss_slows_pushes_but_loses_no_model(tmp_path, mtls_run):
    out = tmp_path / "lossy"
    settings = [*FOUR, "security.insecure=true", "scenario.network_layer=kernel", "scenario.loss=0.2"]
    settings.append("launcher.fork_server=false")  # peers started afresh: `ip netns exec` (forked: setns)
    # TCP gets every model through, but not in bounded time: a connection whose SYNs and their
    # retransmissions (1, 3, 7, 15 s) are all lost fails gRPC's 20 s connect attempt, and a push
    # then missed the default 30 s round (seen once in CI): the round is long enough to retry it
    settings.append("experiment.round_timeout=120")
    done = run(out, settings)
    assert done.returncode == 0, done.stdout + done.stderr
    records = metrics(out)
    assert len(records) == 8 and all(r["merged"] == 3 for r in records)  # every model arrived, in time
    assert all("dropped" not in r for r in records)  # the kernel's losses are not counted (README)
    # TCP retransmits what the kernel dropped: a push that lost a segment waits a retransmission
    # timeout (>= 0.2 s, doubling), the others are as fast as without loss. Means, not medians: with
    # 20% loss fewer than half the pushes may lose one (9 of 24 seen; the median was then 10 ms)
    lossy = statistics.mean(t for times in pushes(out).values() for t in times)
    clean = statistics.mean(unshaped_pushes(mtls_run))
    assert lossy > 2 * clean, (lossy, clean)
    assert network_leftovers(json.loads((out / "network.json").read_text())["prefix"]) == []


@pytest.mark.timeout(30)
def test_a_kernel_delay_on_one_link_shows_in_its_push_times_only(mtls_run):
    slow = [t for link in SLOW_LINK for t in pushes(mtls_run)[link]]
    fast = unshaped_pushes(mtls_run)
    # a push is a request out and a reply back: two one-way delays of 50 ms on the slow link
    assert min(slow) >= 0.1, slow
    assert statistics.median(fast) < statistics.median(slow) - 0.08, (fast, slow)


def start_long_run(out: Path) -> tuple[subprocess.Popen, dict, list[int]]:
    """A long run under the kernel layer with a delay, started in the background, once its peers
    recorded a round: the launcher, its network.json and the PIDs of its node processes."""
    launcher = start_cli("run", "--out", str(out), settings=LONG)
    try:
        wait_for(
            lambda: (out / "metrics.jsonl").exists() and len(metrics(out)) >= 4, 120, "the first records"
        )
    except BaseException:
        launcher.kill()
        raise
    network = json.loads((out / "network.json").read_text())
    return launcher, network, list(json.loads((out / "processes.json").read_text()).values())


def fedgossip_tables() -> list[str]:
    """The nftables tables of this (the default) namespace named as the delay process names those
    it makes inside the hosts: none is expected here, ever."""
    from pyroute2.nftables.main import NFTables

    nft = NFTables(nfgen_family=socket.AF_INET)
    try:
        names = [table.get_attr("NFTA_TABLE_NAME") for table in nft.get_tables()]
    finally:
        nft.close()
    return [name for name in names if name == TABLE]


@pytest.mark.timeout(180)
def test_nothing_is_left_after_a_failed_run_or_a_sigkill_of_the_launcher(tmp_path):
    launcher, network, nodes = start_long_run(tmp_path / "failed")
    prefix, delay_process = network["prefix"], network["delay_process"]
    try:
        assert len(network_leftovers(prefix)) == 4 + 4 + 1  # namespaces, veths, bridge
        # the run fails: its delay process dies (its links stop) where it has one, else every peer
        for pid in [delay_process] if delay_process else nodes:
            psutil.Process(pid).kill()
        assert launcher.wait(60) == 1
        output = launcher.stdout.read().decode()
        if delay_process:
            assert f"the kernel layer's delay process (PID {delay_process}) exited with -9" in output, output
        assert run_status(tmp_path / "failed") == "failed"
        assert network_leftovers(prefix) == [] and fedgossip_tables() == []
        assert gone(nodes)
    finally:
        launcher.kill()
        launcher.wait(10)
    launcher, network, nodes = start_long_run(tmp_path / "killed")
    prefix, delay_process = network["prefix"], network["delay_process"]
    try:
        tree = [p.pid for p in psutil.Process(launcher.pid).children(recursive=True)]
        assert delay_process is None or delay_process in tree
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(10)
        wait_for(lambda: network_leftovers(prefix) == [], 5, f"the watchdog to remove {prefix}'s network")
        wait_for(lambda: gone(tree + nodes), 5, "every process of the run to be stopped")
        assert fedgossip_tables() == []
    finally:
        launcher.kill()
        launcher.wait(10)


def namespace_of(pid: int) -> str:
    """The network namespace `pid` runs in, as /proc names it ("net:[INODE]")."""
    return os.readlink(f"/proc/{pid}/ns/net")


@pytest.mark.timeout(300)
def test_flower_superlink_and_supernodes_in_their_own_hosts(tmp_path):
    out = tmp_path / "flower"
    settings = ["experiment.mode=flower", "strategy.name=fedavg", "flower.engine=deployment", "nodes.count=2"]
    settings += ["experiment.rounds=1", "task.model=linear", "flower.fraction_evaluate=0.0"]
    settings += ["launcher.network=namespaces", "security.tls=true", "security.mutual_tls=true"]
    launcher = start_cli("run", "--out", str(out), settings=settings)
    try:
        started = wait_for(
            lambda: (out / "processes.json").exists() and json.loads((out / "processes.json").read_text()),
            120,
            "the SuperLink and SuperNodes to start",
        )
        network = json.loads((out / "network.json").read_text())
        hosts = [network["superlink"], network["nodes"]["0"], network["nodes"]["1"]]
        inodes = [f"net:[{(NETNS_DIR / host['namespace']).stat().st_ino}]" for host in hosts]
        names = ["superlink", "supernode-0", "supernode-1"]
        assert [namespace_of(started[name]) for name in names] == inodes  # each in a host of its own
        output = launcher.communicate(timeout=180)[0].decode()
    finally:
        launcher.kill()
        launcher.wait(10)
    assert launcher.returncode == 0, output
    superlink = network["superlink"]["address"]
    cert = x509.load_pem_x509_certificate((out / "secrets" / "superlink.pem").read_bytes())
    names_in_cert = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert superlink in {str(ip) for ip in names_in_cert.get_values_for_type(x509.IPAddress)}
    assert sorted(r["node"] for r in metrics(out) if r["node"] != "server") == [0, 1]
    assert network_leftovers(network["prefix"]) == []
