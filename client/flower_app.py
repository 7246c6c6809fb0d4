"""The fedgossip Flower ClientApp: one node's partition, trained and evaluated with the task code of
the gossip peer (`fedgossip.tasks.build_learner`).

The experiment comes from the run config (see `fedgossip.base.flower_protocol`), the node's partition
from its node config (`partition-id`, `num-partitions`). A ClientApp lives for one message, so
what must survive rounds (the node's minibatch-order generator, and its own values of the local
tensors: BatchNorm running statistics) is kept in `context.state`. The process keeps each node's
learner between messages (`flower_learners`: building it was most of a small model's message), and
every message starts it from that state as it would start a freshly built one.

Messages:
- query: the node's partition (the ServerApp's handshake; builds nothing).
- train: install the global model, train `task.local_epochs` (with FedProx's proximal term when
  the config carries `proximal-mu`), reply the weights, train loss and example count. Non-finite
  weights (a diverged run) are refused here, never sent. A scenario's attacker trains on its
  poisoned data (label-flip, collective) or replies a forged model (sign-flip, scale, noise;
  a free-rider replies the global model it received).
- evaluate: install the global model and reply its loss and accuracy on the global test set
  (task.eval: on its own test split, or both; `local_accuracy`).
  Strategy fair: a model flagged `keep-model` is kept in `context.state` as the node's own model,
  and a message without a model evaluates that kept one.
Under flower.secure_aggregation "secagg+", train messages go through Flower's SecAgg+ mod first
(`flower_secure`): only a masked vector of the trained model leaves the node.
With a streamed task (task.stream_chunks), train and evaluate use the data of the message's
`server-round` (the node's chunk; the round's evaluation set as test set).

Installing the global model keeps the node's own local tensors once it has trained (as a gossip
peer's merge does, and as VCA's paper keeps running statistics local); the first time, the global
ones are taken. Replies still carry them; nodes never use the server's aggregate of them after that.

Any failure is answered with an error reply whose reason names the node and the cause.

Run with a SuperNode: `flower-supernode --superlink HOST:PORT --node-config
"partition-id=0 num-partitions=8" ...` (see docs/flower.md); the component is
`fedgossip.client.flower_app:app`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import contextmanager
from importlib import metadata

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

from fedgossip.base import flower_protocol as p
from fedgossip.client import flower_learners
from fedgossip.client.flower_codec import pack_reply
from fedgossip.client.flower_privacy import privacy_mod
from fedgossip.client.flower_secure import secure_mod
from fedgossip.config import ExperimentConfig
from fedgossip.config.flower_run import experiment_from_run_config
from fedgossip.schema.tensors import is_finite

log = logging.getLogger("fedgossip.clientapp")

CLIENT_APP_RAISED_EXCEPTION = 2  # flwr ErrorCode.CLIENT_APP_RAISED_EXCEPTION
PROXIMAL_MU = "proximal-mu"  # the train-config key of flwr.serverapp.strategy.FedProx
PRIVACY_STEPS = "privacy-steps"  # context.state: the DP-SGD steps the node took (its accountant's)

app = ClientApp()

_CONFIGS: dict[str, ExperimentConfig] = {}

EVALUATIONS_KEPT = 64  # recent (model, test set) evaluations a process remembers
_EVALUATED: OrderedDict[bytes, tuple[float, float]] = OrderedDict()
_EVALUATED_LOCK = threading.Lock()


@functools.cache
def _version() -> str:
    """The installed fedgossip's version, read once per process (~4 ms a read: every reply has it)."""
    try:
        return metadata.version("fedgossip")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _config_key(context: Context) -> str:
    """What the run's experiment config is made of (its TOML and overrides), as one string."""
    return json.dumps({k: context.run_config.get(k, "") for k in (p.CONFIG_TOML, p.OVERRIDES)})


def node_setup(context: Context) -> tuple[ExperimentConfig, int]:
    """The run's experiment config (parsed once per process) and this node's partition id."""
    key = _config_key(context)
    config = _CONFIGS.get(key)
    if config is None:
        config = _CONFIGS[key] = experiment_from_run_config(context.run_config)
    return config, p.node_partition(context.node_config, config.nodes.count)


def _stream_round(config: ExperimentConfig, message: Message) -> int | None:
    """The round whose data a streamed task uses (the message's `server-round`); None unstreamed."""
    if not config.task.stream_chunks:
        return None
    record = message.content.config_records.get(p.CONFIG)
    round_ = record.get(p.SERVER_ROUND) if record is not None else None
    if isinstance(round_, bool) or not isinstance(round_, int) or round_ < 1:
        raise ValueError(f"a streamed task needs the message's {p.SERVER_ROUND} (>= 1); got {round_!r}")
    return round_


def _build(config: ExperimentConfig, partition: int, stream_round: int | None):
    """Node `partition`'s learner as the task builds it (a data attacker's on its poisoned data)."""
    from fedgossip.scenario.attacks import poisoner
    from fedgossip.scenario.roles import roles
    from fedgossip.tasks import build_learner

    attack = roles(config.scenario, partition, config.nodes.count, config.experiment.seed).attack
    return build_learner(
        config.task,
        partition,
        config.nodes.count,
        config.experiment.seed,
        stream_round,
        poison=poisoner(attack, config.scenario),
        dp_sgd=config.privacy.dp_sgd(config.experiment.rounds),
    )


@contextmanager
def _learner(config: ExperimentConfig, partition: int, context: Context, message: Message):
    """This node's learner (on the message's round of a streamed task; kept in this process
    between messages: `flower_learners`), its minibatch-order generator, DP-SGD's step count and
    kept momentum buffers (task.keep_momentum) restored from `context.state`; its other training
    generators (torch's: dropout) too, so each round draws new masks as one kept learner would."""
    stream_round = _stream_round(config, message)
    key = (context.run_id, context.node_id, _config_key(context), partition)
    with flower_learners.lent(key, lambda: _build(config, partition, stream_round), stream_round) as learner:
        state = context.state.config_records.get(p.STATE)
        if state is not None and p.SHUFFLE_STATE in state:
            generators = context.state.array_records.get(p.GENERATORS, {})
            learner.rng_state = {
                **learner.rng_state,
                "shuffle": json.loads(str(state[p.SHUFFLE_STATE])),
                **{name: array.numpy() for name, array in generators.items()},
            }
        learner.privacy_steps = (
            int(state[PRIVACY_STEPS]) if state is not None and PRIVACY_STEPS in state else 0
        )
        momentum = context.state.array_records.get(p.MOMENTUM)
        if momentum is not None:
            learner.momentum_state = {index: array.numpy() for index, array in momentum.items()}
        yield learner


def _save_state(learner, context: Context, weights: list[np.ndarray]) -> None:
    """Keep the training generators (minibatch order, dropout's), the kept momentum buffers and the
    node's own local tensors (of `weights`, the trained model) in `context.state` for the next
    message."""
    steps = {PRIVACY_STEPS: learner.privacy_steps} if learner.privacy_steps else {}
    generators = learner.rng_state
    context.state[p.STATE] = ConfigRecord({p.SHUFFLE_STATE: json.dumps(generators.pop("shuffle")), **steps})
    if generators:
        context.state[p.GENERATORS] = ArrayRecord({name: Array(g) for name, g in generators.items()})
    momentum = learner.momentum_state
    if momentum:
        context.state[p.MOMENTUM] = ArrayRecord({index: Array(b) for index, b in momentum.items()})
    local = learner.local_names
    if local:
        context.state[p.LOCAL_TENSORS] = ArrayRecord(
            {n: Array(np.asarray(w)) for n, w in zip(learner.names, weights, strict=True) if n in local}
        )


def _install(learner, message: Message, context: Context, *, evaluating: bool = False) -> None:
    """Put the model of `message` into the learner, checking names (the learner checks shapes,
    dtypes and finiteness), with the local tensors this node saved, if any, instead of the
    message's. When `evaluating`: a message without a model means the node's own kept model, and
    one flagged `keep-model` becomes it (strategy fair)."""
    record = message.content.array_records.get(p.ARRAYS)
    config = message.content.config_records.get(p.CONFIG)
    if evaluating and record is None:
        record = context.state.array_records.get(p.KEPT_MODEL)
        if record is None:
            raise ValueError("the message carries no model and this node keeps none")
    elif evaluating and config is not None and config.get(p.KEEP_MODEL):
        context.state[p.KEPT_MODEL] = record
    if record is None:
        raise ValueError(f"the message carries no {p.ARRAYS!r} ArrayRecord")
    names = list(record.keys())
    if names != list(learner.names):
        raise ValueError(f"the model's tensors {names} are not this task's {list(learner.names)}")
    own = context.state.array_records.get(p.LOCAL_TENSORS)
    local = learner.local_names if own is not None else frozenset()
    learner.set_weights([(own[n] if n in local and n in own else a).numpy() for n, a in record.items()])


def _forged(
    config: ExperimentConfig, partition: int, message: Message, received: list, weights: list
) -> list:
    """The weights a model attacker replies instead of `weights` (`received`: the global model,
    what a free-rider sends back); an honest node's own. Noise is drawn per node and round."""
    from fedgossip.base.seeding import stream
    from fedgossip.scenario.attacks import model_attacker
    from fedgossip.scenario.roles import roles

    seed = config.experiment.seed
    attack = roles(config.scenario, partition, config.nodes.count, seed).attack
    attacker = model_attacker(
        attack, config.scenario, received, stream(seed, "attack", partition, _message_round(message))
    )
    return weights if attacker is None else attacker.forge(weights)


def _message_round(message: Message) -> int:
    """The message's `server-round` (0 when it carries none)."""
    record = message.content.config_records.get(p.CONFIG)
    return int(record.get(p.SERVER_ROUND, 0)) if record is not None else 0


def _proximal_mu(message: Message) -> float:
    """FedProx's proximal weight from the train config (`proximal-mu`, sent by Flower's FedProx);
    0 without it. The learner checks the value."""
    config = message.content.config_records.get(p.CONFIG)
    return config.get(PROXIMAL_MU, 0.0) if config is not None else 0.0


def _node_record(config: ExperimentConfig, partition: int) -> ConfigRecord:
    return ConfigRecord(
        {
            p.PARTITION_ID: partition,
            p.NUM_PARTITIONS: config.nodes.count,
            "version": _version(),
        }
    )


def _answer(message: Message, context: Context, work: Callable[[], RecordDict]) -> Message:
    """Run `work` and reply its content, or an error reply naming the node and the cause."""
    try:
        return Message(work(), reply_to=message)
    except Exception as err:  # every failure becomes a reply: the ServerApp decides what to do
        partition = context.node_config.get(p.PARTITION_ID, "?")
        reason = f"node {partition}: {type(err).__name__}: {err}"
        log.exception("%s failed", message.metadata.message_type)
        return Message(Error(CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=message)


@app.query()
def query(message: Message, context: Context) -> Message:
    """Handshake: which partition this node holds (nothing is built)."""

    def work() -> RecordDict:
        config, partition = node_setup(context)
        return RecordDict({p.NODE: _node_record(config, partition)})

    return _answer(message, context, work)


def _privacy(message: Message, context: Context, call_next) -> Message:
    """Training inside the Flower DP mod `[privacy]` asks for, if any (`client.flower_privacy`)."""
    try:
        config, _ = node_setup(context)
    except Exception:  # the handler answers it with the node and the cause
        return call_next(message, context)
    return privacy_mod(config, message, context, call_next)


def _codec(message: Message, context: Context, call_next) -> Message:
    """The train reply packed by flower.codec (`client.flower_codec`), around the privacy mod."""
    reply = call_next(message, context)
    if reply.has_error():  # the handler answered with the node and the cause
        return reply
    config, _ = node_setup(context)
    pack_reply(config.flower, message.content.array_records[p.ARRAYS], reply.content, context.state)
    return reply


def _secure(message: Message, context: Context, call_next) -> Message:
    """Training through SecAgg+ if flower.secure_aggregation asks (`client.flower_secure`); the
    config never asks for it with flower.codec."""
    try:
        config, _ = node_setup(context)
    except Exception:  # the handler answers it with the node and the cause
        return call_next(message, context)
    return secure_mod(config, message, context, call_next)


@app.train(mods=[_secure, _codec, _privacy])
def train(message: Message, context: Context) -> Message:
    """Train the global model on this node's partition for task.local_epochs epochs."""

    def work() -> RecordDict:
        config, partition = node_setup(context)
        with _learner(config, partition, context, message) as learner:
            _install(learner, message, context)
            received = learner.get_weights()
            started = time.perf_counter()
            loss = float(learner.train(mu=_proximal_mu(message)))
            seconds = time.perf_counter() - started
            weights = learner.get_weights()
            bad = sum(not is_finite(w) for w in weights)
            if bad or not np.isfinite(loss):
                raise FloatingPointError(
                    f"training diverged (train loss {loss:.4g}, non-finite values in {bad} of "
                    f"{len(weights)} tensors); lower task.learning_rate"
                )
            _save_state(learner, context, weights)
            names, examples = learner.names, int(learner.num_examples)
            epsilon = learner.epsilon
        weights = _forged(config, partition, message, received, weights)
        arrays = ArrayRecord({n: Array(np.asarray(w)) for n, w in zip(names, weights, strict=True)})
        metrics = MetricRecord(
            {
                p.TRAIN_LOSS: loss,
                p.NUM_EXAMPLES: examples,
                "train_seconds": seconds,
                **({p.EPSILON: epsilon} if epsilon is not None else {}),
            }
        )
        return RecordDict({p.ARRAYS: arrays, p.METRICS: metrics, p.NODE: _node_record(config, partition)})

    return _answer(message, context, work)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    """Loss and accuracy of the message's (or the kept) model on the test set: the global held-out
    one, or the round's evaluation set of a streamed task."""

    def work() -> RecordDict:
        config, partition = node_setup(context)
        whole = config.experiment.whole_test_set(_message_round(message))
        with _learner(config, partition, context, message) as learner:
            _install(learner, message, context, evaluating=True)
            loss, accuracy = evaluate_once(learner, whole)
            examples = learner.test_examples(whole)
            local = learner.local_accuracy(accuracy)
        metrics = MetricRecord(
            {
                p.TEST_LOSS: float(loss),
                p.TEST_ACCURACY: float(accuracy),
                p.NUM_EXAMPLES: examples,
                **({} if local is None else {p.LOCAL_ACCURACY: float(local)}),
            }
        )
        return RecordDict({p.METRICS: metrics, p.NODE: _node_record(config, partition)})

    return _answer(message, context, work)


def evaluate_once(learner, whole: bool = False) -> tuple[float, float]:
    """The learner's test loss and accuracy (`evaluate(whole)`), computed once per model and test
    set in this process: the in-process engine runs every client in one process, and many hold
    the same model (the global one; with strategy fair, every node while exploring). Same
    inputs, same figures."""
    digest = hashlib.blake2b(digest_size=20)
    for array in (*learner.get_weights(), *learner.data.test_set(whole)):
        digest.update(str((array.dtype, array.shape)).encode())
        digest.update(np.ascontiguousarray(array).data)
    key = digest.digest()
    with _EVALUATED_LOCK:
        if key in _EVALUATED:
            _EVALUATED.move_to_end(key)
            return _EVALUATED[key]
    figures = learner.evaluate(whole)
    with _EVALUATED_LOCK:
        _EVALUATED[key] = figures
        while len(_EVALUATED) > EVALUATIONS_KEPT:
            _EVALUATED.popitem(last=False)
    return figures
