"""The ClientApp's compressed train replies (`flower.codec`): a mod around training (and around the
privacy mod, so what is packed is what would have been sent).

fp16 and int8 pack the reply's model; "topk" packs the update to the round's global model (the one
the message brought) plus the residual that earlier replies left out (error feedback, kept in
`context.state`), and keeps the new residual. Each tensor travels as one uint8 Array of its payload
(`fedgossip.schema.codecs`), the codec's name in the reply's `node` ConfigRecord; the ServerApp
unpacks and checks it (`fedgossip.server.reply_codec`). CHOCO-gossip does not apply: its public
copies are kept between peers that gossip with each other every round, and a Flower node only
ever talks to the server, which already sends and receives the global model it would copy.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, RecordDict

from fedgossip.base import flower_protocol as p
from fedgossip.config import FlowerSection
from fedgossip.schema.codecs import FLOATS, codec
from fedgossip.schema.tensors import specs_of


def pack_reply(flower: FlowerSection, received: ArrayRecord, content: RecordDict, state: RecordDict) -> None:
    """Pack the model of a train reply's `content` with flower.codec, in place (codec "none":
    nothing to do); `received` is the global model the message brought, `state` the node's
    `context.state` (top-k's residual)."""
    packer = codec(flower.codec, flower.codec_ratio)
    if packer.name == "none":
        return
    record = content.array_records[p.ARRAYS]
    names = list(record.keys())
    weights = [a.numpy() for a in record.values()]
    specs = specs_of(names, weights)
    if packer.differential:
        kept = state.array_records.get(p.RESIDUAL)
        updates = [
            w - received[n].numpy() + (kept[n].numpy() if kept is not None else 0) if s.dtype in FLOATS else w
            for n, w, s in zip(names, weights, specs, strict=True)
        ]
        payloads = packer.pack_model(updates, specs)
        state[p.RESIDUAL] = ArrayRecord(
            {
                n: Array(np.asarray(u - packer.unpack(b, s), dtype=s.dtype))
                for n, u, b, s in zip(names, updates, payloads, specs, strict=True)
                if s.dtype in FLOATS
            }
        )
    else:
        payloads = packer.pack_model(weights, specs)
    content[p.ARRAYS] = ArrayRecord(
        {n: Array(np.frombuffer(b, dtype=np.uint8)) for n, b in zip(names, payloads, strict=True)}
    )
    content.config_records[p.NODE][p.CODEC] = packer.name
