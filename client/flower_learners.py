"""The Flower ClientApp's learners, kept in its process between messages.

A ClientApp lives for one message, and building a node's learner (its data, its network) was most
of a small model's message. This keeps each node's learner, keyed by what it is built from (the
run, the node, the experiment config, the partition), one per key: a learner built for another
`stage` (a streamed task's round, whose data it holds) is replaced, never asked for again. The
least recently used ones go past `KEPT_BYTES` of data. A learner is lent out for one message at a time
(`lent`), put back only when that message succeeded.

Nothing a learner carries between messages is trusted to this cache: a lent learner starts with its
generators where its build left them and no kept momentum buffers, like a freshly built one, and
the ClientApp then restores the node's `context.state` and installs the message's model (every
tensor) exactly as it does for a fresh learner. So a process that saw an older message of the node,
or none (a Ray actor), gives the same figures.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from fedgossip.tasks.learner import Learner

KEPT_BYTES = 512 * 2**20  # the data (train and test arrays) and weights of the learners kept per process


@dataclass
class _Kept:
    learner: Learner
    stage: Hashable  # what else it was built for (a streamed task's round)
    built_rng: dict  # its generators' state as built
    size: int  # bytes of its data and weights


_KEPT: OrderedDict[Hashable, _Kept] = OrderedDict()
_LOCK = threading.Lock()


def size_of(learner: Learner) -> int:
    """Bytes of the learner's data arrays and weights (what keeping it costs, roughly)."""
    data = learner.data
    arrays = (data.x_train, data.y_train, data.x_test, data.y_test, *learner.get_weights())
    return sum(array.nbytes for array in arrays)


@contextmanager
def lent(key: Hashable, build: Callable[[], Learner], stage: Hashable = None) -> Iterator[Learner]:
    """The learner of `key` (and `stage`) as built: the kept one, its generators put back to their
    built state and its momentum buffers cleared, or a new one from `build`. Kept again when the
    block ends without an exception; while lent, no one else gets it (a second message builds its
    own)."""
    with _LOCK:
        kept = _KEPT.pop(key, None)
    if kept is None or kept.stage != stage:
        learner = build()
        kept = _Kept(learner, stage, learner.rng_state, size_of(learner))
    else:
        kept.learner.rng_state = kept.built_rng
        kept.learner.momentum_state = {}
    yield kept.learner
    if kept.size > KEPT_BYTES:
        return
    with _LOCK:
        _KEPT[key] = kept
        total = sum(entry.size for entry in _KEPT.values())
        while total > KEPT_BYTES:
            _, dropped = _KEPT.popitem(last=False)
            total -= dropped.size


def forget() -> None:
    """Drop every kept learner (tests, and a benchmark timing the build)."""
    with _LOCK:
        _KEPT.clear()
