"""The ServerApp's checks of a node's reply, as untrusted input: its tensors against the global
model's specs, its example count and metric values, the partition id it claims.

Each check raises ValueError naming what is wrong; `RecordingGrid` (server/recording.py) turns that
into an error reply the strategies skip.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import RecordDict
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS as SECAGG_RECORD
from flwr.common.secure_aggregation.secaggplus_constants import Key as SecAggKey

from fedgossip.base import flower_protocol as p
from fedgossip.schema.tensors import TensorSpec, check_arrays, check_declared
from fedgossip.server.arrays import array_view


def _number(value: Any, key: str, *, low: float = -math.inf, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"metric {key!r} must be a finite number; got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"metric {key!r} must be in [{low}, {high}]; got {value!r}")
    return float(value)


def _example_count(metrics: Mapping[str, Any]) -> int:
    """Check a reply's metrics: a positive example count, every other value a finite number."""
    examples = metrics.get(p.NUM_EXAMPLES)
    if isinstance(examples, bool) or not isinstance(examples, int) or not 0 < examples <= p.MAX_NUM_EXAMPLES:
        raise ValueError(f"metric {p.NUM_EXAMPLES!r} must be a positive integer; got {examples!r}")
    for key, value in metrics.items():
        if key != p.NUM_EXAMPLES:
            _number(value, key)
    return examples


def check_train_reply(content: RecordDict, specs: list[TensorSpec]) -> tuple[float, int]:
    """Validate a train reply against the global model; return (train loss, example count)."""
    if len(content.array_records) != 1 or len(content.metric_records) != 1:
        raise ValueError("a train reply must hold exactly one ArrayRecord and one MetricRecord")
    record = next(iter(content.array_records.values()))
    check_declared([TensorSpec(name, tuple(a.shape), a.dtype) for name, a in record.items()], specs)
    check_arrays([array_view(array) for array in record.values()], specs)  # the payloads, in place
    return check_train_metrics(next(iter(content.metric_records.values())))


def check_masked_reply(content: RecordDict, specs: list[TensorSpec]) -> tuple[float, int] | None:
    """Validate a SecAgg+ stage reply: the masked-vector stage's holds the train metrics and one
    masked integer vector per tensor of the global model, after the weight (returned: train loss,
    example count); the other stages' hold only the protocol's values (None)."""
    masked = content.config_records[SECAGG_RECORD].get(SecAggKey.MASKED_PARAMETERS)
    if masked is None:
        return None
    from flwr.common import bytes_to_ndarray

    shapes = [(1,), *(spec.shape for spec in specs)]
    if isinstance(masked, list) and len(masked) == len(specs) + 2:  # strategy vca: the variances
        shapes.append((len(specs),))
    if not isinstance(masked, list) or len(masked) != len(shapes):
        raise ValueError(
            f"a masked vector must be {len(specs) + 1} arrays (the weight, then the tensors; "
            "and the tensors' variances under vca)"
        )
    for value, shape in zip(masked, shapes, strict=True):
        array = bytes_to_ndarray(value) if isinstance(value, bytes) else None
        if array is None or array.shape != shape or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"a masked array must be integers of shape {shape}")
    if p.METRICS not in content.metric_records:
        raise ValueError(f"a masked-vector reply must hold the {p.METRICS!r} MetricRecord")
    return check_train_metrics(content.metric_records[p.METRICS])


def check_train_metrics(metrics: Mapping[str, Any]) -> tuple[float, int]:
    """Validate a train reply's metrics; return (train loss, example count)."""
    examples = _example_count(metrics)
    return _number(metrics.get(p.TRAIN_LOSS), p.TRAIN_LOSS), examples


def check_evaluate_reply(content: RecordDict) -> tuple[float, float, float | None]:
    """Validate an evaluate reply; return (test loss, test accuracy, local accuracy: task.eval
    local or both, else None)."""
    if len(content.metric_records) != 1:
        raise ValueError("an evaluate reply must hold exactly one MetricRecord")
    metrics = next(iter(content.metric_records.values()))
    _example_count(metrics)
    loss = _number(metrics.get(p.TEST_LOSS), p.TEST_LOSS, low=0.0)
    accuracy = _number(metrics.get(p.TEST_ACCURACY), p.TEST_ACCURACY, low=0.0, high=1.0)
    local = metrics.get(p.LOCAL_ACCURACY)
    return loss, accuracy, None if local is None else _number(local, p.LOCAL_ACCURACY, low=0.0, high=1.0)


def reply_partition(content: RecordDict) -> int | None:
    """The partition id a reply says it comes from (its `node` ConfigRecord), if well formed."""
    record = content.config_records.get(p.NODE)
    value = record.get(p.PARTITION_ID) if record is not None else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
