"""The full MNIST (`task.dataset = "mnist"`) from the shared Keras-layout npz: shapes, class counts,
scaling, where the file is found, shards prepared once that never share an example, and a
streamed task on shards equal to the same stream loaded whole by every node."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil

import numpy as np
import pytest

from fedgossip.config import load_config
from fedgossip.launcher.experiments.prepare import prepare_shards
from fedgossip.tasks import TaskConfig, node_dataset
from fedgossip.tasks.data import load_dataset
from fedgossip.tasks.mnist import DATA_FOLDER_ENV, mnist_source
from tests.support import shared_file

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist_file():
    return shared_file("mnist.npz")


@pytest.fixture(scope="module")
def raw(mnist_file):
    with np.load(mnist_file) as arrays:
        return {key: arrays[key] for key in arrays.files}


@pytest.mark.timeout(60)
def test_mnist_has_its_shapes_class_counts_and_own_test_split(mnist_file, raw):
    data = load_dataset(TaskConfig(dataset="mnist", path=str(mnist_file)), seed=3)
    assert data.x_train.shape == (60000, 784) and data.x_test.shape == (10000, 784)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert np.bincount(data.y_train).tolist() == TRAIN_COUNTS
    assert np.bincount(data.y_test).tolist() == TEST_COUNTS
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    # the given test split in its order, pixels / 255 (not our test_fraction split)
    np.testing.assert_array_equal(data.x_test, raw["x_test"].reshape(10000, -1) / np.float32(255))
    np.testing.assert_array_equal(data.y_train, raw["y_train"])


@pytest.mark.timeout(60)
def test_the_file_is_task_path_else_mnist_npz_in_the_data_folder(tmp_path, monkeypatch, mnist_file):
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(mnist_file, folder / "mnist.npz")
    monkeypatch.setenv(DATA_FOLDER_ENV, str(folder))
    found = mnist_source(TaskConfig(dataset="mnist"), 0)
    assert found.x.shape == (60000, 784) and found.x_test.shape == (10000, 784)
    np.savez(tmp_path / "wrong.npz", x=np.zeros((4, 2), np.uint8), y=np.arange(4) % 2)
    with pytest.raises(ValueError, match=r"task.path .*wrong.npz.*unexpected arrays \['x', 'y'\]"):
        mnist_source(TaskConfig(dataset="mnist", path=str(tmp_path / "wrong.npz")), 0)  # path first


def _image_counts(x: np.ndarray) -> dict[bytes, int]:
    """How many times each image (its bytes' digest) occurs among the rows of x."""
    counts: dict[bytes, int] = {}
    for row in x:
        digest = hashlib.blake2b(row.tobytes(), digest_size=16).digest()
        counts[digest] = counts.get(digest, 0) + 1
    return counts


@pytest.mark.timeout(120)
@pytest.mark.parametrize("partition", ["iid", "dirichlet"])
def test_prepared_shards_split_the_60000_images_without_sharing_one(tmp_path, mnist_file, raw, partition):
    nodes = 5
    settings = [f'task.path="{mnist_file}"', f'task.partition="{partition}"', f"nodes.count={nodes}"]
    config = load_config(None, ['task.dataset="mnist"', *settings])
    prepared = prepare_shards(config, tmp_path / "run")
    assert prepared.task.dataset == "prepared"
    shards = [node_dataset(prepared.task, node, nodes, config.experiment.seed) for node in range(nodes)]
    sizes = [len(shard.y_train) for shard in shards]
    assert sum(sizes) == 60000
    if partition == "dirichlet":
        assert max(sizes) > 1.5 * min(sizes)
    # every image of the training set is in exactly as many shards as it occurs in MNIST (the
    # union of the shards is the training set and no example is in two shards)
    pixels = np.concatenate([np.rint(shard.x_train * 255).astype(np.uint8) for shard in shards])
    assert _image_counts(pixels) == _image_counts(raw["x_train"].reshape(60000, -1))
    for shard in shards:  # every node evaluates on the given 10,000 test images
        np.testing.assert_array_equal(shard.y_test, raw["y_test"])


@pytest.mark.timeout(180)
def test_a_stream_on_shards_equals_the_stream_every_node_loads_whole(tmp_path, mnist_file, raw):
    nodes, chunks = 30, 250  # the authors' stream: 8 images per node per round, 240 a round
    np.savez(
        tmp_path / "mnist-as-npz.npz",
        x=raw["x_train"],
        y=raw["y_train"],
        x_test=raw["x_test"],
        y_test=raw["y_test"],
    )
    common = [f"nodes.count={nodes}", f"task.stream_chunks={chunks}", "task.label_noise=0.5"]
    whole = load_config(None, ['task.dataset="npz"', f'task.path="{tmp_path / "mnist-as-npz.npz"}"', *common])
    config = load_config(None, ['task.dataset="mnist"', f'task.path="{mnist_file}"', *common])
    prepared = prepare_shards(config, tmp_path / "run")
    assert len(list((tmp_path / "run" / "data").glob("stream-*.npz"))) == chunks
    seed = config.experiment.seed
    for node, round_ in ((0, 1), (29, 2), (17, chunks), (17, chunks + 1)):
        direct = node_dataset(whole.task, node, nodes, seed, stream_round=round_)
        shard = node_dataset(prepared.task, node, nodes, seed, stream_round=round_)
        assert len(shard.y_train) == 8 and len(shard.y_test) == 240
        for field in ("x_train", "y_train", "x_test", "y_test"):
            np.testing.assert_array_equal(getattr(shard, field), getattr(direct, field), err_msg=field)
    with pytest.raises(ValueError, match=r"a stream of 250 chunks, the experiment has task.stream_chunks=20"):
        node_dataset(dataclasses.replace(prepared.task, stream_chunks=20), 0, nodes, seed, stream_round=1)


@pytest.mark.timeout(120)
def test_nodes_of_one_process_holding_the_whole_training_set_share_one_copy(tmp_path, mnist_file, raw):
    nodes = 4
    settings = [f'task.path="{mnist_file}"', 'task.partition="dirichlet-sampling"', f"nodes.count={nodes}"]
    config = load_config(None, ['task.dataset="mnist"', *settings])
    prepared = prepare_shards(config, tmp_path / "run")
    shards = [node_dataset(prepared.task, node, nodes, config.experiment.seed) for node in range(nodes)]
    assert all(np.shares_memory(shards[0].x_train, shard.x_train) for shard in shards[1:])
    np.testing.assert_array_equal(shards[2].x_train, raw["x_train"].reshape(60000, -1) / np.float32(255))
    # each node still samples by its own label probabilities
    assert not np.allclose(shards[0].train_weights, shards[1].train_weights)
    # nodes with shards of their own hold their own copies
    own = load_config(None, ['task.dataset="mnist"', *settings[:1], f"nodes.count={nodes}"])
    parts = prepare_shards(own, tmp_path / "own")
    first, second = (node_dataset(parts.task, node, nodes, own.experiment.seed) for node in (0, 1))
    assert not np.shares_memory(first.x_train, second.x_train)
