"""task.eval_examples: exactly k test examples of every class, the same for every node, drawn from
the experiment seed; a learner's evaluate() (what both runtimes record as test_accuracy) is its
model's accuracy on exactly that subset, and on the whole test set in the last round; bad values
are refused naming the key."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from rich.console import Console
from torch.nn import functional

from fedgossip.config import load_config
from fedgossip.launcher.experiments.prepare import prepare_shards
from fedgossip.launcher.experiments.run import run_experiment
from fedgossip.reports import read_records
from fedgossip.tasks import TaskConfig, build_learner, node_dataset
from fedgossip.tasks.eval_subset import balanced_rows

NODES, SEED = 4, 7


@pytest.mark.timeout(30)
def test_every_node_evaluates_on_the_same_k_examples_of_every_class():
    full = node_dataset(TaskConfig(partition="dirichlet"), 0, NODES, SEED)
    subsets = [
        node_dataset(TaskConfig(partition="dirichlet", eval_examples=50), n, NODES, SEED)
        for n in range(NODES)
    ]
    x_first, y_first = subsets[0].test_set()
    assert np.bincount(y_first).tolist() == [5] * 10
    for other in subsets[1:]:
        np.testing.assert_array_equal(other.test_set()[0], x_first)
        np.testing.assert_array_equal(other.test_set()[1], y_first)
    # test examples of the whole test set, each at most once
    whole = {row.tobytes(): label for row, label in zip(full.x_test, full.y_test, strict=True)}
    picked = [row.tobytes() for row in x_first]
    assert len(set(picked)) == 50 and all(whole[key] == y for key, y in zip(picked, y_first, strict=True))
    # the whole test set stays, for the last round
    for whole_x, whole_y in (subsets[1].test_set(whole=True), (subsets[1].x_test, subsets[1].y_test)):
        np.testing.assert_array_equal(whole_x, full.x_test)
        np.testing.assert_array_equal(whole_y, full.y_test)
    # the training data is untouched
    np.testing.assert_array_equal(
        subsets[2].x_train, node_dataset(TaskConfig(partition="dirichlet"), 2, NODES, SEED).x_train
    )


@pytest.mark.timeout(30)
def test_another_seed_draws_another_subset():
    labels = np.repeat(np.arange(10), 30)
    first, again, other = (balanced_rows(labels, 10, 100, seed) for seed in (SEED, SEED, SEED + 1))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert np.bincount(labels[other]).tolist() == [10] * 10


@pytest.mark.timeout(60)
def test_evaluate_is_the_models_accuracy_and_loss_on_exactly_that_subset():
    task = TaskConfig(model="cnn", eval_examples=100, local_epochs=5)
    learner = build_learner(task, 1, NODES, SEED)
    learner.train()
    whole = node_dataset(dataclasses.replace(task, eval_examples=0), 1, NODES, SEED)
    rows = balanced_rows(whole.y_test, 10, 100, SEED)
    loss, accuracy = learner.evaluate()
    predicted = learner.predict(whole.x_test[rows])
    assert accuracy == pytest.approx(np.mean(predicted == whole.y_test[rows]), abs=1e-12)
    assert 0.1 < accuracy < 1.0  # trained, not perfect: the comparison means something
    model = learner._model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(whole.x_test[rows]).view(-1, 1, 8, 8))
    expected = functional.cross_entropy(logits, torch.from_numpy(whole.y_test[rows])).item()
    assert loss == pytest.approx(expected, rel=1e-5)
    full_accuracy = np.mean(learner.predict(whole.x_test) == whole.y_test)
    assert accuracy != full_accuracy  # not the whole test set
    # the last round's evaluation: the whole test set
    assert learner.evaluate(whole=True)[1] == pytest.approx(full_accuracy, abs=1e-12)
    assert (learner.test_examples(), learner.test_examples(whole=True)) == (100, len(whole.y_test))


@pytest.mark.timeout(30)
def test_bad_eval_examples_are_refused_naming_the_key(tmp_path):
    with pytest.raises(
        ValueError, match=r"task.eval_examples = 55 must be a multiple of the dataset's 10 classes"
    ):
        node_dataset(TaskConfig(eval_examples=55), 0, NODES, SEED)
    with pytest.raises(
        ValueError, match=r"task.eval_examples = 400 asks 40 test examples of every class; class \d has 3\d"
    ):
        node_dataset(TaskConfig(eval_examples=400), 0, NODES, SEED)
    with pytest.raises(ValueError, match=r"task.eval_examples must be an integer >= 0"):
        TaskConfig(eval_examples=-10)
    # the launcher refuses it before any node starts (exit 2 from fedgossip run)
    with pytest.raises(ValueError, match=r"task.eval_examples = 55 must be a multiple"):
        prepare_shards(load_config(None, ["task.eval_examples=55"]), tmp_path)


@pytest.mark.timeout(120)
def test_records_are_on_the_subset_and_the_last_round_on_the_whole_test_set(tmp_path):
    config = load_config(
        None,
        [
            'experiment.mode="flower"',
            'flower.engine="inprocess"',
            'strategy.name="average"',
            "nodes.count=3",
            "experiment.rounds=2",
            "task.eval_examples=60",
            f"experiment.seed={SEED}",
        ],
    )
    summary, code = run_experiment(config, tmp_path / "run", Console(file=io.StringIO()))
    assert code == 0, summary["errors"]
    records = read_records(tmp_path / "run")
    with np.load(tmp_path / "run" / "flower" / "final-model.npz") as saved:
        final = dict(saved)
    learner = build_learner(config.task, 0, 3, SEED)  # any node: the subset is every node's
    learner.set_weights([final[name] for name in learner.names])
    whole = node_dataset(dataclasses.replace(config.task, eval_examples=0), 0, 3, SEED)
    rows = balanced_rows(whole.y_test, 10, 60, SEED)
    expected = np.mean(learner.predict(whole.x_test) == whole.y_test)
    last = [r for r in records if r["round"] == 2]
    assert {r["node"] for r in last} == {0, 1, 2, "server"}
    for record in last:  # every node evaluates the global model, the server too
        assert record["test_accuracy"] == pytest.approx(expected, abs=1e-12)
    assert expected != np.mean(learner.predict(whole.x_test[rows]) == whole.y_test[rows])
    server = {r["round"]: r for r in records if r["node"] == "server"}
    assert [server[r]["num_examples"] for r in (0, 1, 2)] == [60, 60, len(whole.y_test)]
    for record in records:  # before the last round: accuracies on 60 examples
        if record["round"] < 2:
            assert record["test_accuracy"] * 60 == pytest.approx(round(record["test_accuracy"] * 60))


def test_in_a_stream_the_nodes_evaluate_on_the_chunk_and_the_global_test_set_is_the_subset():
    task = TaskConfig(eval_examples=100, stream_chunks=4)
    streamed = node_dataset(task, 1, NODES, SEED, stream_round=2)
    whole = node_dataset(TaskConfig(stream_chunks=4), 1, NODES, SEED, stream_round=2)
    np.testing.assert_array_equal(streamed.y_test, whole.y_test)  # the round's chunk, untouched
    server = node_dataset(task, 0, NODES, SEED)  # the Flower server's evaluation set
    assert np.bincount(server.test_set()[1], minlength=10).tolist() == [10] * 10
