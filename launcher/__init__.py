"""The launcher: one command starts an experiment's processes, watches them and collects results.

Importing it turns gRPC's fork handlers off in this process and in every process it starts, unless
the user set `GRPC_ENABLE_FORK_SUPPORT` (gRPC reads it when it is imported, hence here, before any
module of the launcher imports grpc). We fork only to exec, or in the fork server before gRPC
exists; with the handlers on, a child forked while another thread is in a gRPC call can abort
before its exec (grpc/grpc#43055: 16-21 of 1000 children here, with Ray's raylet, node processes
and Flower's processes among those forked so).
"""

import os
import time

STARTED = time.time()
"""When this process imported the launcher: for the `fedgossip` command, its start (only the
interpreter's own start comes before), where its run's clock starts (`execute`)."""

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
