"""Metrics records made and read back: one record per node per round (and, in Flower mode, one
"server" record per round: the server's evaluation of the global model) in a run's metrics.jsonl.

Gossip peers and the Flower ServerApp make records with `record`, the launcher appends them, the
reports read them back with `read_records`. What a record holds is declared once, in
`fedgossip.schema.fields`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from fedgossip.schema.fields import Record, problem, unknown_fields
from fedgossip.schema.lines import read_lines


def metric(value: float | None) -> float | None:
    """A metric as JSON can carry it: non-finite values become null."""
    return float(value) if value is not None and math.isfinite(value) else None


def record(
    node: int | str,
    round_: int,
    run_start: float,
    *,
    train_loss: float | None,
    test_loss: float | None,
    test_accuracy: float | None,
    num_examples: int | None,
    bytes_sent: int,
    bytes_received: int,
    **extra: Any,
) -> Record:
    """The record of `node` closing `round_` now: the fields every record has, then `extra`
    (fields of `Record` only; losses and accuracies that are not finite become null)."""
    unknown = unknown_fields(extra)
    if unknown:
        raise ValueError(f"not record fields: {unknown}")
    return {
        "node": node,
        "round": round_,
        "time_s": round(time.time() - run_start, 4),
        "train_loss": metric(train_loss),
        "test_loss": metric(test_loss),
        "test_accuracy": metric(test_accuracy),
        "num_examples": num_examples,
        "bytes_sent": bytes_sent,
        "bytes_received": bytes_received,
        **extra,
    }


def read_records(path: str | Path) -> list[Record]:
    """The valid metrics records of a metrics.jsonl file, in file order (others skipped)."""
    return [obj for obj in read_lines(path) if problem(obj) is None]  # type: ignore[misc]
