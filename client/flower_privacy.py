"""The ClientApp's side of Flower's differential privacy, chosen per run from `[privacy]`: the
clipping mods that Flower's client-side central-DP wrappers expect (`fixedclipping_mod`,
`adaptiveclipping_mod`, both reading the clipping norm the server sends), or local DP
(`LocalDpMod`: each reply's update clipped to max_grad_norm and noised for (local_epsilon, delta)).

The ClientApp is built once for every run, so its train handler carries this one mod, which looks
up the run's mechanism and hands the message to Flower's mod, or straight on when there is none.
Flower's mods draw their noise from numpy's global generator: seeded here per (node, round)
from the experiment seed, as the server's (`server/flower_privacy.py`).
"""

from __future__ import annotations

import numpy as np
from flwr.app import Context, Message
from flwr.clientapp.mod import LocalDpMod, adaptiveclipping_mod, fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable

from fedgossip.base import flower_protocol as p
from fedgossip.base.seeding import stream
from fedgossip.config import ExperimentConfig

CLIPPING_MODS = {"central-fixed-client": fixedclipping_mod, "central-adaptive-client": adaptiveclipping_mod}


def privacy_mod(config: ExperimentConfig, message: Message, context: Context, call_next: ClientAppCallable):
    """Run `call_next` on `message` inside the Flower mod of privacy.mechanism (if it has one)."""
    privacy = config.privacy
    mod = CLIPPING_MODS.get(privacy.mechanism)
    if privacy.mechanism == "local":
        mod = LocalDpMod(privacy.max_grad_norm, privacy.max_grad_norm, privacy.local_epsilon, privacy.delta)
    if mod is None:
        return call_next(message, context)
    record = message.content.config_records.get(p.CONFIG)
    round_ = int(record.get(p.SERVER_ROUND, 0)) if record is not None else 0
    partition = p.node_partition(context.node_config, config.nodes.count)
    state = np.random.get_state()
    np.random.seed(int(stream(config.experiment.seed, "local-dp", partition, round_).integers(2**32)))
    try:
        return mod(message, context, call_next)
    finally:
        np.random.set_state(state)
