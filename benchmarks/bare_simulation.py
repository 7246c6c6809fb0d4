"""The bare Flower app bench_flower.py measures our simulation engine against: Flower's stock FedAvg
on `flwr.simulation.run_simulation`, ClientApps that send the received model back untrained (no
data, no learner), the size of our synthetic MLP. It writes the epoch time at which each round
ended (after aggregation, where our ServerApp writes its server record) to a JSON file.

    python benchmarks/bare_simulation.py OUT.json CLIENTS ROUNDS
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

PARAMS = 9_162  # our synthetic MLP's parameters (36,648 bytes as float32)

client = ClientApp()
server = ServerApp()


@client.train()
def train(message: Message, context: Context) -> Message:
    """Reply the received model untrained, with one example."""
    content = RecordDict({"arrays": message.content["arrays"], "metrics": MetricRecord({"num-examples": 1})})
    return Message(content, reply_to=message)


def run(out: Path, clients: int, rounds: int) -> None:
    """Run the bare app and write {"rounds": [[round, epoch seconds], ...]} to `out`."""
    ended: list[tuple[int, float]] = []

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=clients)
        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord({"w": Array(np.zeros(PARAMS, dtype=np.float32))}),
            num_rounds=rounds,
            evaluate_fn=lambda round_, arrays: ended.append((round_, time.time())) or MetricRecord(),
        )

    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}}
    run_simulation(server, client, num_supernodes=clients, backend_config=backend)  # type: ignore[arg-type]
    out.write_text(json.dumps({"rounds": ended}))


if __name__ == "__main__":
    run(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
