"""Streamed tasks: chunks disjoint and in order, the evaluation set is every node's clean next
chunk, the stream wraps around; power-law node sizes."""

from __future__ import annotations

import numpy as np
import pytest

from fedgossip.tasks import TaskConfig, node_dataset, partition_indices
from fedgossip.tasks.build import node_rows
from fedgossip.tasks.data import load_dataset
from fedgossip.tasks.stream import chunk_of, evaluation_chunk, node_chunk, stream_order, wrap_notice

NODES, CHUNKS, SEED = 3, 4, 5


def task(**options) -> TaskConfig:
    return TaskConfig(stream_chunks=CHUNKS, **options)


def test_a_nodes_chunks_are_disjoint_consecutive_pieces_of_its_partition_in_stream_order():
    whole = node_dataset(task(label_noise=0.6), 1, NODES, SEED)  # no round: the whole partition
    order = stream_order(SEED, 1, len(whole.y_train))
    seen = []
    for round_ in range(1, CHUNKS + 1):
        chunk = node_dataset(task(label_noise=0.6), 1, NODES, SEED, stream_round=round_)
        start = sum(len(c) for c in seen)
        expected = order[start : start + len(chunk.y_train)]
        np.testing.assert_array_equal(chunk.x_train, whole.x_train[expected])
        np.testing.assert_array_equal(chunk.y_train, whole.y_train[expected])  # the same noisy labels
        seen.append(expected)
    joined = np.concatenate(seen)
    assert sorted(joined) == list(range(len(whole.y_train)))  # disjoint and covering
    assert max(map(len, seen)) - min(map(len, seen)) <= 1


def test_the_evaluation_set_is_every_nodes_clean_next_chunk():
    noisy, clean = task(label_noise=0.9), task()
    for round_ in (1, 2):
        evaluation = node_dataset(noisy, 0, NODES, SEED, stream_round=round_)
        nexts = [node_dataset(clean, node, NODES, SEED, stream_round=round_ + 1) for node in range(NODES)]
        np.testing.assert_array_equal(evaluation.x_test, np.concatenate([d.x_train for d in nexts]))
        np.testing.assert_array_equal(evaluation.y_test, np.concatenate([d.y_train for d in nexts]))
        noisy_next = node_dataset(noisy, 2, NODES, SEED, stream_round=round_ + 1)
        assert not np.array_equal(noisy_next.y_train, nexts[2].y_train)  # node 2's copy is noisy
    other = node_dataset(noisy, 2, NODES, SEED, stream_round=1)  # every node sees the same set
    np.testing.assert_array_equal(other.y_test, node_dataset(noisy, 0, NODES, SEED, stream_round=1).y_test)


def test_the_stream_wraps_around():
    assert [chunk_of(t, CHUNKS) for t in (1, 4, 5)] == [(0, 1), (3, 0), (0, 1)]
    first = node_dataset(task(), 1, NODES, SEED, stream_round=1)
    again = node_dataset(task(), 1, NODES, SEED, stream_round=CHUNKS + 1)
    np.testing.assert_array_equal(first.x_train, again.x_train)
    last = node_dataset(task(), 1, NODES, SEED, stream_round=CHUNKS)
    firsts = [node_dataset(task(), n, NODES, SEED, stream_round=1).y_train for n in range(NODES)]
    np.testing.assert_array_equal(last.y_test, np.concatenate(firsts))
    assert wrap_notice(CHUNKS, CHUNKS - 1) is None and wrap_notice(0, 100) is None
    assert "wraps around: round 4 evaluates on chunk 0" in wrap_notice(CHUNKS, 10)


def test_rows_of_a_round_come_from_every_partition():
    labels = load_dataset(TaskConfig(), SEED).y_train
    parts = node_rows(TaskConfig(), labels, NODES, SEED)
    rows = evaluation_chunk(parts, CHUNKS, 2, SEED)
    expected = [node_chunk(part, CHUNKS, 2, SEED, node) for node, part in enumerate(parts)]
    np.testing.assert_array_equal(rows, np.concatenate(expected))
    assert all(np.isin(chunk, part).all() for chunk, part in zip(expected, parts, strict=True))


def test_bad_stream_settings_are_refused():
    with pytest.raises(ValueError, match=r"exceeds the \d+ training examples of node"):
        node_dataset(TaskConfig(stream_chunks=1000), 0, NODES, SEED, stream_round=1)
    with pytest.raises(ValueError, match=r"task\.stream_chunks must be an integer >= 0"):
        TaskConfig(stream_chunks=-1)
    with pytest.raises(ValueError, match=r"stream_round must be an integer >= 1"):
        node_dataset(task(), 0, NODES, SEED, stream_round=0)


def test_powerlaw_sizes_grow_with_the_node_id():
    labels = load_dataset(TaskConfig(), 0).y_train
    sizes = [len(p) for p in partition_indices(labels, 10, scheme="powerlaw", seed=0)]
    assert sum(sizes) == len(labels) and sizes == sorted(sizes)
    shares = np.linspace(0.3, 0.99, 10) ** (1 / 1.659)
    expected = 10 + (len(labels) - 100) * shares / shares.sum()
    assert np.abs(np.array(sizes) - expected).max() < 1
