"""A gossip peer's compressed pushes (`gossip.codec`): the codec's state at both ends of its links.

Stateless codecs (fp16, int8) pack the pushed model as it is. Differential ones (`Codec.differential`:
"topk", "choco") push q = Q(x - x_hat), the compressed difference of the model to its public copy
x_hat, and both ends add q to their copy of it: the sender to its own (`chunks`), each receiver to
its copy of the sender's (`incoming`, at arrival, before the inbox: every valid push moves the copy,
even one of a closed round). The copies start at 0 (Koloskova et al. 2019), and q is computed from
the packed bytes, so sender and receivers add the very same values. What top-k leaves out stays in
x - x_hat and goes in a later push: the error feedback. Integer tensors travel as values.

"topk" merges the received copies with the configured rule as full models; "choco" is CHOCO-gossip's
consensus step (`mix`): x <- x + gamma * (rule(x_hat_own, x_hat_neighbours) - x_hat_own), which for
the average rule is x + gamma * sum_j w_ij (x_hat_j - x_hat_i). A lost push leaves a neighbour's
copy behind for good: config refuses these codecs where pushes may be lost or withheld.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence

import numpy as np

from fedgossip.client.gossip.transport.wire import ModelMessage, WireChunk, frame
from fedgossip.schema.codecs import FLOATS, Codec
from fedgossip.schema.tensors import TensorSpec
from fedgossip.strategies import Outcome


def _zeros(specs: Sequence[TensorSpec]) -> list[np.ndarray]:
    return [np.zeros(s.shape, dtype=s.dtype) for s in specs]


def advance(
    copy: Sequence[np.ndarray], received: Sequence[np.ndarray], specs: Sequence[TensorSpec]
) -> list[np.ndarray]:
    """A public copy after a differential push: float tensors plus the difference, the others its
    values (new arrays: a copy handed to the inbox before stays as it was)."""
    return [
        c + r if s.dtype in FLOATS else np.array(r) for c, r, s in zip(copy, received, specs, strict=True)
    ]


def mix(
    own: Sequence[np.ndarray], public: Sequence[np.ndarray], merged: Sequence[np.ndarray], gamma: float
) -> list[np.ndarray]:
    """CHOCO's consensus step: `own` moved by `gamma` from the own public copy towards the merge of
    the public copies, own + gamma * (merged - public) (float tensors; the others are `merged`'s)."""
    return [
        (o + gamma * (m - p)).astype(o.dtype) if np.issubdtype(o.dtype, np.floating) else m
        for o, p, m in zip(own, public, merged, strict=True)
    ]


class PushCompression:
    """One peer's codec state: its public copy (sent side) and its copies of its neighbours'."""

    def __init__(self, codec: Codec, specs: Sequence[TensorSpec], gamma: float) -> None:
        self.codec = codec
        self.specs = list(specs)
        self.gamma = gamma
        self.public = _zeros(self.specs) if codec.differential else None
        self._copies: dict[int, list[np.ndarray]] = {}
        self._lock = threading.Lock()  # pushes arrive on the event loop and (in process) from threads

    def chunks(
        self, sender: int, round_: int, num_examples: int, arrays: Sequence[np.ndarray]
    ) -> list[WireChunk]:
        """The chunks of this round's push of `arrays` (a differential codec's difference to the
        public copy, which then advances): packed once, sent to every neighbour."""
        codec, specs = self.codec, self.specs
        if self.public is None:
            return frame(sender, round_, num_examples, specs, codec.pack_model(arrays, specs), codec)
        differences = [
            np.asarray(a, s.dtype) - p if s.dtype in FLOATS else a
            for a, p, s in zip(arrays, self.public, specs, strict=True)
        ]
        payloads = codec.pack_model(differences, specs)
        sent = [codec.unpack(p, s) for p, s in zip(payloads, specs, strict=True)]
        self.public = advance(self.public, sent, specs)
        return frame(sender, round_, num_examples, specs, payloads, codec)

    def incoming(self, message: ModelMessage) -> ModelMessage:
        """A checked push as the model it stands for: the sender's public copy after it (a
        differential codec), else the message itself."""
        if self.public is None:
            return message
        with self._lock:
            copy = self._copies.get(message.sender) or _zeros(self.specs)
            copy = self._copies[message.sender] = advance(copy, message.arrays, self.specs)
        return dataclasses.replace(message, arrays=copy)

    def merge(
        self, merge: Callable[[list[np.ndarray]], Outcome], own: list[np.ndarray], shared: Sequence[int]
    ) -> Outcome:
        """The round's merge of the `shared` tensors: `merge(model)` merges `model` with the received
        ones (a differential codec's copies); CHOCO (`Codec.mixes`) merges the own public copy and
        takes its consensus step (`mix`) from `own`, the others merge `own`."""
        if not self.codec.mixes:
            return merge(own)
        assert self.public is not None
        outcome = merge(self.public)
        if outcome.model is None or outcome.error is not None:
            return outcome
        public = [self.public[i] for i in shared]
        return Outcome(mix([own[i] for i in shared], public, outcome.model, self.gamma), None)
