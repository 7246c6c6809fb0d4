"""The ServerApp's side of compressed train replies (`flower.codec`, packed by
`fedgossip.client.flower_codec`): check the codec a reply names, unpack each tensor's payload to the
global model's spec (sizes fixed by the spec, malformed payloads refused), and for top-k add the
update to the global model the node was sent. The unpacked model then passes the reply checks of
every reply (`recording.check_train_reply`); strategies see plain models.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, RecordDict

from fedgossip.base import flower_protocol as p
from fedgossip.schema.codecs import FLOATS, Codec
from fedgossip.schema.tensors import TensorSpec
from fedgossip.server.arrays import array_view


def unpack_reply(
    content: RecordDict, packer: Codec, specs: list[TensorSpec], sent: ArrayRecord | None
) -> None:
    """Replace the packed model of a train reply by the model it stands for (in place; codec "none":
    nothing to unpack); ValueError (a rejected reply) if it names another codec or a payload is
    malformed. `sent`: the global
    model of the message it answers (top-k's updates are to it)."""
    node = content.config_records.get(p.NODE)
    named = node.get(p.CODEC, "none") if node is not None else "none"
    if named != packer.name:
        raise ValueError(f"codec {named!r}: this run takes {packer.name!r} (flower.codec)")
    if packer.name == "none":
        return
    if len(content.array_records) != 1:
        raise ValueError("a train reply must hold exactly one ArrayRecord")
    key, record = next(iter(content.array_records.items()))
    if list(record.keys()) != [s.name for s in specs]:
        raise ValueError(f"the reply's tensors {list(record.keys())} are not the model's")
    arrays = []
    for spec in specs:
        payload = array_view(record[spec.name])
        if payload.dtype != np.uint8 or payload.ndim != 1:
            raise ValueError(f"tensor {spec.name!r}: a packed payload is one uint8 vector")
        array = packer.unpack(payload.data, spec)
        if packer.differential and spec.dtype in FLOATS:
            if sent is None:
                raise ValueError("a top-k reply answers a message without a model")
            array = (array_view(sent[spec.name]) + array).astype(spec.dtype)
        arrays.append(array)
    content[key] = ArrayRecord({s.name: Array(a) for s, a in zip(specs, arrays, strict=True)})
