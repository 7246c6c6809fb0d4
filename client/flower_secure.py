"""The ClientApp's side of SecAgg+ (`flower.secure_aggregation = "secagg+"`): Flower's
`secaggplus_mod` around the train handler.

The mod answers the protocol's key stages itself and, in its masked-vector stage, runs the train
handler and masks [q, q * w] (q: the example count over flower.secagg_max_weight, quantized) from
the reply in Flower's legacy FitRes form. `legacy_reply` gives it that form: the model moves from
our `arrays` record into `fitres.parameters` (which the mod empties after masking, so the model
never leaves the node), the metrics stay (the ServerApp records them) and are copied into
`fitres.metrics`. Under strategy `vca` one more vector travels masked: each tensor's variance (0
for an integer tensor), whose weighted mean is VCA's target (`server/secure_aggregation.py`).
A model SecAgg+ would corrupt is refused here, naming the key: a weight beyond
flower.secagg_clipping_range (clipped by the quantization) or more examples than
flower.secagg_max_weight (the masked sum could overflow).
Flower's stochastic rounding draws from numpy's global generator: seeded per (node, round) from
the experiment seed, as `client/flower_privacy.py` does for Flower's DP mods.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Context, Error, Message
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.compat.common import recorddict_compat as compat

from fedgossip.base import flower_protocol as p
from fedgossip.base.seeding import stream
from fedgossip.config import ExperimentConfig

CLIENT_APP_RAISED_EXCEPTION = 2  # flwr ErrorCode.CLIENT_APP_RAISED_EXCEPTION


class _Refused(Exception):
    """The train handler answered with an error: SecAgg+ passes it on as the node's error reply."""


def legacy_reply(config: ExperimentConfig, reply: Message) -> Message:
    """The train handler's `reply` in the FitRes form `secaggplus_mod` masks (checked for it)."""
    if reply.has_error():
        raise _Refused(reply.error.reason)
    content = reply.content
    record = content.array_records.pop(p.ARRAYS)
    metrics = content.metric_records[p.METRICS]
    weights = [array.numpy() for array in record.values()]
    flower, examples = config.flower, int(metrics[p.NUM_EXAMPLES])
    if examples > flower.secagg_max_weight:
        raise ValueError(
            f"this node trains on {examples} examples, more than flower.secagg_max_weight = "
            f"{flower.secagg_max_weight:g}: raise it"
        )
    for name, weight in zip(record.keys(), weights, strict=True):
        largest = float(np.max(np.abs(weight))) if weight.size else 0.0
        if largest > flower.secagg_clipping_range:
            raise ValueError(
                f"tensor {name!r} holds {largest:.4g}, beyond flower.secagg_clipping_range = "
                f"{flower.secagg_clipping_range:g}: raise it"
            )
    if config.strategy.name == "vca":
        weights.append(tensor_variances(weights))
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(weights), examples, dict(metrics))
    legacy = compat.fitres_to_recorddict(fitres, keep_input=False)
    for name, array_record in legacy.array_records.items():
        content.array_records[name] = array_record
    for name, metric_record in legacy.metric_records.items():
        content.metric_records[name] = metric_record
    for name, config_record in legacy.config_records.items():
        content.config_records[name] = config_record
    return reply


def tensor_variances(weights: list[np.ndarray]) -> np.ndarray:
    """Each tensor's population variance (float64; 0 for an integer tensor): VCA's statistics."""
    return np.array(
        [float(np.var(w, dtype=np.float64)) if np.issubdtype(w.dtype, np.floating) else 0.0 for w in weights]
    )


def secure_mod(config: ExperimentConfig, message: Message, context: Context, call_next: ClientAppCallable):
    """Run `call_next` on `message` through SecAgg+ if flower.secure_aggregation asks for it."""
    if config.flower.secure_aggregation == "none":
        return call_next(message, context)
    record = message.content.config_records.get(p.CONFIG)
    round_ = int(record.get(p.SERVER_ROUND, 0)) if record is not None else 0
    partition = p.node_partition(context.node_config, config.nodes.count)
    state = np.random.get_state()
    np.random.seed(int(stream(config.experiment.seed, "secagg", partition, round_).integers(2**32)))
    try:
        return secaggplus_mod(message, context, lambda m, c: legacy_reply(config, call_next(m, c)))
    except Exception as err:  # the protocol's or the check's: the node's error reply
        reason = str(err) if isinstance(err, _Refused) else f"node {partition}: {type(err).__name__}: {err}"
        return Message(Error(CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=message)
    finally:
        np.random.set_state(state)
