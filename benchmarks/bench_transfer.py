"""Moving a 100 MB model between two peer processes, against raw gRPC (issue #21: >= 0.8x).

    python benchmarks/bench_transfer.py                          # ours and raw gRPC, 3 rounds
    python benchmarks/bench_transfer.py --before HEAD~1          # and ours on another revision

Each measurement is a fresh pair of processes on loopback, a receiver and a sender; the sender
pushes the model `--repeats` times and keeps the best time:
- ours: a real peer server (grpc.aio, link-key authentication) that checks and assembles the
  model, and a NeighbourSender pushing `encode`'s chunks (the peers' push path), timed from the
  encoding to the reply;
- raw: a bare grpc.aio stream of the same 1 MiB slices as bytes (no protobuf), the receiver
  copying them into one buffer (where a model must end up), timed from the first slice to the reply;
- with `--before REV`: ours on git revision REV's code (`bench_floor.code_root`, first on PYTHONPATH).
The variants take turns, `--rounds` times, under one load; printed: every best, the medians, MB/s
and the ratios ours / raw (target >= 0.8) and, with --before, this tree / REV.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fedgossip.base.ports import free_ports
from fedgossip.launcher.supervision.processes import child_env

TARGET_RATIO = 0.8  # ours / raw gRPC, MB/s
TRANSFER_TARGET_MBPS = 500
RAW_METHOD = "/bench.Raw/Push"
SLICE = 1 << 20  # the raw stream's message size: our CHUNK_BYTES


def transfer_model(megabytes: int) -> tuple[list[str], list[np.ndarray]]:
    """A model of about `megabytes` MB of float32 in four tensors."""
    n = megabytes * 2**20 // 4
    sizes = [n // 2, n // 4, n // 4 - 1000, 1000]
    rng = np.random.default_rng(0)
    return [f"t{i}" for i in range(4)], [rng.standard_normal(s, dtype=np.float32) for s in sizes]


def serve_ours(port: int, megabytes: int, links: str) -> None:
    """A real peer server (grpc.aio, link-key authentication on) with the model's spec, until killed."""
    import threading

    from fedgossip.client.gossip.inbox import Inbox
    from fedgossip.client.gossip.transport.grpc_server import LoopServer
    from fedgossip.client.gossip.transport.identity import LinkKeys
    from fedgossip.client.gossip.transport.service import Authenticator, GossipService
    from fedgossip.client.gossip.transport.wire import CHANNEL_OPTIONS
    from fedgossip.schema.tensors import specs_of

    names, arrays = transfer_model(megabytes)
    service = GossipService(
        0,
        specs_of(names, arrays),
        Inbox(),
        neighbours=[1],
        rounds=1000,
        max_bytes=2 * megabytes * 2**20,
        auth=Authenticator(links=LinkKeys.load(Path(links) / "node-0.links", 0)),
        max_pushes=4,
        idle_timeout=30,
    )
    server = LoopServer(service, f"127.0.0.1:{port}", None, CHANNEL_OPTIONS)
    threading.Event().wait()  # until killed
    server.stop()


def serve_raw(port: int, megabytes: int) -> None:
    """A bare grpc.aio server whose one method copies a stream of bytes into one buffer, until killed."""
    import grpc

    total = sum(a.nbytes for a in transfer_model(megabytes)[1])

    async def push(requests, _context) -> bytes:
        buffer, filled = bytearray(total), 0
        async for data in requests:
            buffer[filled : filled + len(data)] = data
            filled += len(data)
        return filled.to_bytes(8, "big")

    async def main() -> None:
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 4 << 20)])
        handler = grpc.stream_unary_rpc_method_handler(push)
        service, method = RAW_METHOD.strip("/").split("/")
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {method: handler}),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


def measure_ours(port: int, megabytes: int, links: Path, repeats: int) -> list[float]:
    """Seconds of each push of the model through a NeighbourSender, encoding included."""
    import grpc

    from fedgossip.client.gossip.transport import wire
    from fedgossip.client.gossip.transport.identity import LinkKeys
    from fedgossip.client.gossip.transport.sender import NeighbourSender, close_channels, open_channels
    from fedgossip.proto import gossip_pb2, gossip_pb2_grpc

    make_stub = getattr(wire, "push_stub", gossip_pb2_grpc.GossipStub)  # before it: the generated stub
    metadata = LinkKeys.load(links / "node-1.links", 1).metadata(0)
    address = f"127.0.0.1:{port}"
    channels = open_channels({0: address}, None, wire.CHANNEL_OPTIONS)
    sender = NeighbourSender(0, make_stub(channels[0]), metadata, lambda *_: None)
    try:
        health = gossip_pb2_grpc.GossipStub(grpc.insecure_channel(address, wire.CHANNEL_OPTIONS))
        health.Health(gossip_pb2.HealthRequest(), timeout=60, wait_for_ready=True)
        names, arrays = transfer_model(megabytes)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            chunks = wire.encode(1, 1, 100, names, arrays)  # round 1 each time: it replaces the last one
            assert sender.send(chunks, time.monotonic() + 120, wait=True).result(130) > 0  # accepted
            times.append(time.perf_counter() - started)
        return times
    finally:
        sender.close()
        close_channels(list(channels.values()))


def measure_raw(port: int, megabytes: int, repeats: int) -> list[float]:
    """Seconds of each stream of the model's bytes in SLICE messages, the slices made beforehand."""
    import grpc

    data = b"".join(a.tobytes() for a in transfer_model(megabytes)[1])
    slices = [data[start : start + SLICE] for start in range(0, len(data), SLICE)]

    async def main() -> list[float]:
        options = [("grpc.max_send_message_length", 4 << 20)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options) as channel:
            push = channel.stream_unary(RAW_METHOD)
            await channel.channel_ready()
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                reply = await push(iter(slices), timeout=120)
                assert int.from_bytes(reply, "big") == len(data)
                times.append(time.perf_counter() - started)
            return times

    return asyncio.run(main())


def measure(variant: str, megabytes: int, repeats: int) -> list[float]:
    """One pair of processes: this one sends, a child receives; the push times."""
    from fedgossip.client.gossip.transport.identity import write_link_keys

    (port,) = free_ports(1)
    links = Path(tempfile.mkdtemp())
    write_link_keys([(0, 1)], [0, 1], links)
    argv = [sys.executable, __file__, "--serve", variant, "--port", str(port), "--megabytes", str(megabytes)]
    receiver = subprocess.Popen([*argv, "--links", str(links)], env=dict(os.environ))
    try:
        if variant == "raw":
            return measure_raw(port, megabytes, repeats)
        return measure_ours(port, megabytes, links, repeats)
    finally:
        receiver.kill()
        receiver.wait()


def run_variant(variant: str, code: Path | None, megabytes: int, repeats: int) -> float:
    """The best push time of a fresh measurement process (on the code of import root `code`)."""
    env = child_env(1)
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(code), env["PYTHONPATH"]])
    argv = [sys.executable, __file__, "--measure", variant, "--megabytes", str(megabytes)]
    result = subprocess.run(
        [*argv, "--repeats", str(repeats)], env=env, capture_output=True, text=True, timeout=600
    )
    if result.returncode != 0:
        raise SystemExit(f"{variant} failed: {result.stderr[-2000:]}")
    return min(json.loads(result.stdout.splitlines()[-1]))


def bench_transfer(
    megabytes: int = 100, repeats: int = 5, rounds: int = 3, before: str | None = None
) -> None:
    """Ours, raw gRPC and (with `before`) ours on revision `before`, taking turns `rounds` times."""
    from bench_floor import code_root  # a sibling script

    size = sum(a.nbytes for a in transfer_model(megabytes)[1]) / 1e6
    print(f"== moving a {size:.0f} MB model between two processes on loopback: ours against raw gRPC ==")
    print(f"load average: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as scratch:
        variants: dict[str, Path | None] = {"raw": None, "ours": None}
        if before:
            variants[f"ours@{before}"] = code_root(before, Path(scratch))
        bests: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(rounds):
            for name, code in variants.items():
                bests[name].append(run_variant(name.split("@")[0], code, megabytes, repeats))
                print(f"  {name}: {bests[name][-1]:.3f} s ({size / bests[name][-1]:.0f} MB/s)", flush=True)
    medians = {name: statistics.median(times) for name, times in bests.items()}
    for name, seconds in medians.items():
        print(f"{name:>16}: median of bests {seconds:.3f} s = {size / seconds:.0f} MB/s")
    ratio = medians["raw"] / medians["ours"]
    verdict = "PASS" if ratio >= TARGET_RATIO else "MISS"
    print(f"ours / raw gRPC: {ratio:.2f}x [{verdict} target >= {TARGET_RATIO}x]")
    mbps = size / medians["ours"]
    print(f"ours: {mbps:.0f} MB/s [{'PASS' if mbps >= TRANSFER_TARGET_MBPS else 'FAIL'} target >= 500]")
    if before:
        print(f"this tree / {before}: {medians[f'ours@{before}'] / medians['ours']:.2f}x the speed")
    print(f"load average: {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5, help="pushes per measurement (the best counts)")
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each variant, taking turns")
    parser.add_argument("--before", metavar="REV", help="also measure ours on git revision REV's code")
    parser.add_argument("--measure", choices=["ours", "raw"], help=argparse.SUPPRESS)
    parser.add_argument("--serve", choices=["ours", "raw"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--links", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "ours":
        serve_ours(args.port, args.megabytes, args.links)
    elif args.serve == "raw":
        serve_raw(args.port, args.megabytes)
    elif args.measure:
        print(json.dumps(measure(args.measure, args.megabytes, args.repeats)))
    else:
        bench_transfer(args.megabytes, args.repeats, args.rounds, args.before)


if __name__ == "__main__":
    main()
