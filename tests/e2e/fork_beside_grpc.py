"""Start N short children the way the launcher does (fork with a preexec function, then exec)
while two threads keep making gRPC calls, and print how many children died before their exec.

Run as `python tests/e2e/fork_beside_grpc.py N [--bare]`: the launcher package is imported
first (its gRPC setting applies) unless --bare, to show what the setting prevents.
"""

from __future__ import annotations

import sys

if "--bare" not in sys.argv:
    import fedgossip.launcher  # noqa: F401 - before grpc, as every fedgossip process does

import subprocess
import threading
from concurrent import futures

import grpc

from fedgossip.launcher.supervision.processes import die_with_parent
from fedgossip.proto import gossip_pb2, gossip_pb2_grpc


class Answers(gossip_pb2_grpc.GossipServicer):
    def Health(self, request, context):
        return gossip_pb2.HealthReply(node=0)


def main(count: int) -> int:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    gossip_pb2_grpc.add_GossipServicer_to_server(Answers(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    stop = threading.Event()
    called = threading.Barrier(3)

    def call_forever() -> None:
        stub = gossip_pb2_grpc.GossipStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        stub.Health(gossip_pb2.HealthRequest(), timeout=10)
        called.wait()
        while not stop.is_set():
            stub.Health(gossip_pb2.HealthRequest(), timeout=10)

    callers = [threading.Thread(target=call_forever, daemon=True) for _ in range(2)]
    for caller in callers:
        caller.start()
    called.wait()
    died = 0
    for _ in range(count):
        child = subprocess.run(["true"], capture_output=True, preexec_fn=die_with_parent)
        died += child.returncode != 0
    stop.set()
    for caller in callers:
        caller.join(10)
    server.stop(None)
    print(f"died before exec: {died} of {count}")
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
