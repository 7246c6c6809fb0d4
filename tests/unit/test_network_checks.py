"""What emulated hosts and the kernel's network layer refuse, each an error naming the key: the
config's combinations, and a machine without root or iproute2 (faked inputs); and the tc
commands the kernel layer runs for a small scenario, against hand-written ones."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest

from fedgossip.base.seeding import stream
from fedgossip.config import ScenarioSection, load_config
from fedgossip.launcher.network import nfqueue, shaping
from fedgossip.launcher.network.delays import queued_links
from fedgossip.launcher.network.hosts import check_network
from fedgossip.launcher.network.queue_delay import Delays, QueuedLink
from fedgossip.launcher.network.shaping import LinkShape, ingress_commands, link_shapes, loss_filter
from fedgossip.launcher.supervision import namespaces

NAMESPACES = ["launcher.network=namespaces", "security.tls=true"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["launcher.network=namespaces"], "security.tls = true (or security.insecure = true"),
        ([*NAMESPACES, "launcher.engine=ray"], "launcher.engine 'ray' has none"),
        (
            [*NAMESPACES, "experiment.mode=flower", "strategy.name=fedavg", "flower.engine=inprocess"],
            "flower.engine 'inprocess' has no processes",
        ),
        (["scenario.network_layer=kernel"], "scenario.network_layer 'kernel' shapes the links"),
        ([*NAMESPACES, "scenario.network_layer=kernel", "nodes.per_process=2"], "nodes.per_process > 1"),
        (
            [
                *NAMESPACES,
                "scenario.network_layer=kernel",
                "scenario.partition_groups=2",
                "scenario.partition_rounds=[1, 2]",
            ],
            "scenario.partition_groups is not supported",
        ),
        (['scenario.link_delay_ms={"0-8"=5}'], "scenario.link_delay_ms names a node >= nodes.count (8)"),
        (['scenario.link_delay_ms={"3-3"=5}'], "scenario.link_delay_ms name must be"),
        (['scenario.link_delay_ms={"0-1"=-5}'], "scenario.link_delay_ms.0-1"),
    ],
)
def test_network_combinations_are_refused_naming_the_key(settings, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(None, settings)


def test_namespaces_without_root_or_iproute2_name_the_key(monkeypatch):
    config = load_config(None, NAMESPACES)
    monkeypatch.setattr(namespaces.shutil, "which", lambda tool: f"/usr/sbin/{tool}")
    monkeypatch.setattr(namespaces.os, "geteuid", lambda: 1000)
    with pytest.raises(
        ValueError, match=r"launcher\.network 'namespaces' cannot run on this machine: .*need root"
    ):
        check_network(config)
    monkeypatch.setattr(namespaces.os, "geteuid", lambda: 0)
    monkeypatch.setattr(namespaces.shutil, "which", lambda tool: None if tool == "ip" else "/usr/sbin/tc")
    with pytest.raises(ValueError, match=r"launcher\.network 'namespaces' .*: ip \(iproute2\) not found"):
        check_network(config)
    check_network(load_config(None, []))  # loopback runs ask nothing of the machine


def test_a_kernel_without_netem_or_queues_refuses_delays_naming_the_key(monkeypatch):
    monkeypatch.setattr(namespaces.shutil, "which", lambda tool: f"/usr/sbin/{tool}")
    monkeypatch.setattr(namespaces.os, "geteuid", lambda: 0)
    monkeypatch.setattr(shaping, "has_qdisc", lambda kind: kind != "netem")
    monkeypatch.setattr(shaping, "queue_unavailable_reason", lambda: "pyroute2 is not installed")
    kernel = [*NAMESPACES, "scenario.network_layer=kernel"]
    with pytest.raises(
        ValueError,
        match=r"scenario\.network_layer 'kernel' cannot delay packets .* no netem qdisc .*pyroute2 is not",
    ):
        check_network(load_config(None, [*kernel, "scenario.delay_ms=20"]))
    check_network(load_config(None, [*kernel, "scenario.loss=0.1", "scenario.bandwidth_mbps=5"]))
    monkeypatch.setattr(shaping, "queue_unavailable_reason", lambda: None)  # the queues stand in for netem
    check_network(load_config(None, [*kernel, "scenario.delay_ms=20"]))
    monkeypatch.setattr(shaping, "has_qdisc", lambda kind: True)
    monkeypatch.setattr(shaping, "queue_unavailable_reason", lambda: "never asked where netem is")
    check_network(load_config(None, [*kernel, 'scenario.link_delay_ms={"0-1"=5}']))


def test_link_shapes_add_a_link_delay_to_both_directions():
    shapes = link_shapes(ScenarioSection(delay_ms=10, jitter_ms=2, loss=0.1, link_delay_ms={"1-0": 50.0}), 3)
    assert set(shapes) == {(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)}
    assert shapes[(0, 1)] == shapes[(1, 0)] == LinkShape(60.0, 2.0, 0.1, 0.0)
    assert shapes[(2, 1)] == LinkShape(10.0, 2.0, 0.1, 0.0)


def test_loss_filter_is_the_hand_assembled_program():
    # 10.64.0.2 = 10 x 2^24 + 64 x 2^16 + 2 = 171_966_466; 0.25 x 2^32 = 1_073_741_824
    assert loss_filter("10.64.0.2", 0.25) == (
        "8,40 0 0 12,21 0 5 2048,32 0 0 26,21 0 3 171966466,32 0 0 4294963256,"
        "53 1 0 1073741824,6 0 0 4294967295,6 0 0 0"
    )


def test_ingress_commands_shape_each_source():
    shapes = {"10.64.0.3": LinkShape(delay_ms=50, rate_mbps=2.5), "10.64.0.4": LinkShape(loss=0.5)}
    program = loss_filter("10.64.0.4", 0.5)
    q = "quantum 60000"
    assert ingress_commands("fgabcdefh0", shapes) == [
        "qdisc add dev fgabcdefh0 root handle 1: htb default 1",
        f"class add dev fgabcdefh0 parent 1: classid 1:1 htb rate 10gbit {q}",
        f"class add dev fgabcdefh0 parent 1: classid 1:ffff htb rate 10gbit {q}",
        "qdisc add dev fgabcdefh0 parent 1:ffff handle ffff: pfifo limit 0",
        f"class add dev fgabcdefh0 parent 1: classid 1:2 htb rate 2500kbit ceil 2500kbit {q}",
        "qdisc add dev fgabcdefh0 parent 1:2 handle 2: netem delay 50ms limit 100000",
        "filter add dev fgabcdefh0 parent 1: protocol ip prio 2 u32 match ip src 10.64.0.3/32 flowid 1:2",
        f"class add dev fgabcdefh0 parent 1: classid 1:3 htb rate 10gbit ceil 10gbit {q}",
        f'filter add dev fgabcdefh0 parent 1: protocol ip prio 1 bpf bytecode "{program}" flowid 1:ffff',
        "filter add dev fgabcdefh0 parent 1: protocol ip prio 2 u32 match ip src 10.64.0.4/32 flowid 1:3",
    ]


def test_queued_links_hold_each_delayed_direction_in_its_receivers_namespace():
    hosts = SimpleNamespace(
        namespaces=["fgabcdef-0", "fgabcdef-1", "fgabcdef-2"],
        addresses=["10.64.0.2", "10.64.0.3", "10.64.0.4"],
    )
    links = queued_links(hosts, {(1, 0): (50.0, 2.0), (0, 2): (0.0, 0.0), (0, 1): (50.0, 2.0)})
    assert links == [
        QueuedLink(0, 1, "fgabcdef-1", "10.64.0.2", 50.0, 2.0),
        QueuedLink(1, 0, "fgabcdef-0", "10.64.0.3", 50.0, 2.0),
    ]  # (0, 2) delays nothing: not queued


def test_nfqueue_verdict_and_packet_messages_are_the_kernels_structs():
    # nlmsghdr (len 32, type NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_VERDICT = 0x301, NLM_F_REQUEST, seq 0,
    # port 0), nfgenmsg (AF_UNSPEC, version 0, queue 7 big-endian), NFQA_VERDICT_HDR (len 12, type 2):
    # NF_ACCEPT (1) and the packet id, big-endian
    assert nfqueue.verdict(7, 0x01020304) == bytes.fromhex(
        "20000000010301000000000000000000000000070c0002000000000101020304"
    )
    packet = bytes.fromhex(  # a NFQNL_MSG_PACKET of queue 3: NFQA_MARK (type 3) first, then the header
        "280000000003000000000000000000000200000308000300000000000b000100000000a908000100"
    )
    assert list(
        nfqueue.packets(packet + packet.replace(bytes.fromhex("000000a9"), bytes.fromhex("000000aa")))
    ) == [
        (3, 0xA9),
        (3, 0xAA),
    ]
    ack = bytes.fromhex("2400000002000000000000000000000000000000") + bytes(16)
    nfqueue._check_ack(ack, "binding queue 3")
    with pytest.raises(nfqueue.QueueError, match="binding queue 3: Operation not permitted"):
        nfqueue._check_ack(ack[:16] + bytes.fromhex("ffffffff") + ack[20:], "binding queue 3")


def test_the_delay_process_draws_each_links_jitter_from_the_seeds_network_stream():
    links = [
        QueuedLink(0, 1, "fgabcdef-1", "10.64.0.2", 50.0, 10.0),
        QueuedLink(1, 0, "fgabcdef-0", "10.64.0.3", 20.0),
    ]
    delays = Delays(links, seed=7)
    released = np.array([delays.release("fgabcdef-1", 0, 100.0) for _ in range(1000)])
    drawn = stream(7, "network", 0, 1).uniform(-10.0, 10.0, 1000)  # the link (0, 1)'s own stream
    np.testing.assert_allclose(released, 100.0 + (50.0 + drawn) / 1000.0)
    assert 0.040 <= (released - 100.0).min() < 0.041 and 0.059 < (released - 100.0).max() <= 0.060
    assert delays.release("fgabcdef-0", 1, 5.0) == 5.0 + 0.020  # no jitter: the delay exactly
