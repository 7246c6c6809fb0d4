"""Netfilter queueing for the kernel layer's delays on kernels without netem: the nftables rule
that queues a source's packets (pyroute2) and nfnetlink_queue's messages (bind, packet, verdict),
spoken directly over a netlink socket (pyroute2 has no nfqueue client; the protocol is four
structs, include/uapi/linux/netfilter/nfnetlink_queue.h).

Both are made in the calling thread's network namespace: a netlink socket stays in the namespace
it was created in, so one process can serve every host after a setns(2) into each.

The rule is nftables' `ip saddr SOURCE` match followed by iptables' NFQUEUE target (nft_compat,
as iptables-nft writes it): some kernels (this project's CI) have NFQUEUE but not nft's own
`queue` expression (CONFIG_NFT_QUEUE).
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator, Sequence

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN, NFQA_CFG_MASK, NFQA_CFG_FLAGS = 1, 2, 3, 4, 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_CFG_F_GSO = 4  # a GSO packet is queued whole, not segmented for the queue
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NFQ_FLAG_BYPASS = 1  # no process on the queue: the packet goes on (undelayed) rather than dropped
NF_ACCEPT = 1
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK = 1, 4
SO_RCVBUFFORCE = 33
RECEIVE_BUFFER = 32 << 20  # bytes of queued packets' messages (~100 each) the socket holds
QUEUE_MAXLEN = 100_000  # packets a queue may hold back (as the tc layer's NETEM_LIMIT)
TABLE, CHAIN = "fedgossip", "delay"

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_NFGEN = struct.Struct("=BBH")  # nfgenmsg: family, version, res_id (big-endian: packed apart)


class QueueError(RuntimeError):
    """The kernel refused a queue's rule or binding: one line."""


def _attribute(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _message(kind: int, queue: int, attributes: bytes, flags: int = NLM_F_REQUEST) -> bytes:
    """A nfnetlink_queue message of `kind` for `queue` (its nfgenmsg: AF_UNSPEC, version 0)."""
    body = struct.pack("=BB", socket.AF_UNSPEC, 0) + struct.pack(">H", queue) + attributes
    return _HEADER.pack(_HEADER.size + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind, flags, 0, 0) + body


def verdict(queue: int, packet_id: int) -> bytes:
    """The message that lets packet `packet_id` of `queue` go on (NF_ACCEPT)."""
    return _message(
        NFQNL_MSG_VERDICT, queue, _attribute(NFQA_VERDICT_HDR, struct.pack(">II", NF_ACCEPT, packet_id))
    )


def open_socket() -> socket.socket:
    """A nfnetlink socket in this thread's network namespace, with room for many queued packets."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
    sock.bind((0, 0))
    return sock


def bind_queues(sock: socket.socket, queues: Sequence[int]) -> None:
    """Bind `queues` to `sock`: metadata only (no packet bytes), GSO packets whole, QUEUE_MAXLEN;
    QueueError with the kernel's errno if it refuses."""
    for queue in queues:
        config = [
            _attribute(NFQA_CFG_CMD, struct.pack("=BxH", NFQNL_CFG_CMD_BIND, 0)),
            _attribute(NFQA_CFG_PARAMS, struct.pack(">IB", 0, NFQNL_COPY_META))
            + _attribute(NFQA_CFG_QUEUE_MAXLEN, struct.pack(">I", QUEUE_MAXLEN))
            + _attribute(NFQA_CFG_MASK, struct.pack(">I", NFQA_CFG_F_GSO))
            + _attribute(NFQA_CFG_FLAGS, struct.pack(">I", NFQA_CFG_F_GSO)),
        ]
        for attributes in config:
            sock.send(_message(NFQNL_MSG_CONFIG, queue, attributes, NLM_F_REQUEST | NLM_F_ACK))
            _check_ack(sock.recv(65536), f"binding queue {queue}")


def _check_ack(data: bytes, what: str) -> None:
    """QueueError naming `what` unless `data` is a netlink acknowledgement without error."""
    _, kind, _, _, _ = _HEADER.unpack_from(data)
    errno = struct.unpack_from("=i", data, _HEADER.size)[0] if kind == NLMSG_ERROR else -1
    if errno != 0:
        raise QueueError(f"{what}: {os.strerror(-errno)} (nfnetlink_queue)")


def packets(data: bytes) -> Iterator[tuple[int, int]]:
    """The (queue, packet id) of every queued packet in what the socket received."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, _, _, _ = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size:
            return
        if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            queue = struct.unpack_from(">H", data, offset + _HEADER.size + 2)[0]
            position = offset + _HEADER.size + _NFGEN.size
            while position + 4 <= offset + length:
                size, attribute = struct.unpack_from("=HH", data, position)
                if attribute & 0x3FFF == NFQA_PACKET_HDR:
                    yield queue, struct.unpack_from(">I", data, position + 4)[0]
                    break
                position += max(4, size + (-size % 4))
        offset += length + (-length % 4)


def queue_sources(rules: Sequence[tuple[str, int]]) -> None:
    """In this thread's network namespace, an nftables table TABLE (family ip) whose input chain
    sends each packet from a source address to its queue (`rules`: (source, queue) pairs);
    QueueError if the kernel refuses."""
    from pyroute2.netlink.exceptions import NetlinkError  # the `network` extra, only where it runs
    from pyroute2.nftables.expressions import genex, ipv4addr
    from pyroute2.nftables.main import NFTables

    nft = NFTables(nfgen_family=socket.AF_INET)
    try:
        nft.table("add", name=TABLE)
        nft.chain("add", table=TABLE, name=CHAIN, hook="input", type="filter", priority=0)
        for source, queue in rules:
            info = struct.pack(
                "=HHH", queue, 1, NFQ_FLAG_BYPASS
            )  # xt_NFQ_info_v3: queue, queues in total, flags
            target = [genex("target", {"name": "NFQUEUE", "rev": 3, "info": info})]
            nft.rule("add", table=TABLE, chain=CHAIN, expressions=(ipv4addr(src=source), target))
    except NetlinkError as err:
        raise QueueError(f"nftables refused the queue rules: {err}") from None
    finally:
        nft.close()
