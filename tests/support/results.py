"""Results folders written by the launcher's own writer with records drawn from a seed: what
`fedgossip compare` reads, made in a moment without running anything."""

from __future__ import annotations

import json
import random

from fedgossip.config import load_config
from fedgossip.launcher.runs.results import ResultsFolder

TARGET = 0.6
"""The target accuracy of the runs make_run writes."""


def make_run(path, strategy: str, seed: int, status: str = "complete", rounds: int = 4, nodes: int = 3):
    """A results folder written by the launcher's own writer: records drawn from `seed`, some of
    them reaching the target, the last node stopping a round early (its last record counts)."""
    config = load_config(
        None,
        [
            f"strategy.name={strategy}",
            f"experiment.seed={seed}",
            f"nodes.count={nodes}",
            f"experiment.target_accuracy={TARGET}",
        ],
    )
    rng = random.Random(f"{strategy}-{seed}")
    folder = ResultsFolder(path, config)
    for round_ in range(1, rounds + 1):
        for node in range(nodes):
            if node == nodes - 1 and round_ == rounds:
                continue
            folder.append(
                {
                    "node": node,
                    "round": round_,
                    "time_s": round(2.0 * round_ + rng.random(), 3),
                    "train_loss": 1.0,
                    "test_loss": 1.0,
                    "test_accuracy": round(min(1.0, 0.12 * round_ + rng.uniform(0.0, 0.3)), 4),
                    "num_examples": 10,
                    "bytes_sent": rng.randrange(1000, 5000),
                    "bytes_received": 0,
                }
            )
    folder.append({"node": "server", "round": rounds, "time_s": 9.0, "test_accuracy": 0.99})
    folder.close()
    wall = round(10 + rng.random() * 5, 3)
    (folder.path / "summary.json").write_text(json.dumps({"status": status, "wall_time_s": wall}))
    return folder.path
