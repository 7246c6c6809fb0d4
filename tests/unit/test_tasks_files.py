"""File datasets in one process: .npz files, Hugging Face datasets (local, offline), and the
preparation of shards (light datasets left alone, broken shard folders a clear error)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from fedgossip.config import load_config
from fedgossip.launcher.experiments.prepare import prepare_shards
from fedgossip.tasks import TaskConfig, build_learner, load_dataset, node_dataset
from fedgossip.tasks.hf import hf_source
from tests.support import digit_images, save_hf_digits

pytestmark = pytest.mark.usefixtures("offline")


def npz(tmp_path, name="data.npz", **arrays) -> str:
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


def test_npz_images_with_their_own_test_set(tmp_path):
    x, y = digit_images(500)
    path = npz(tmp_path, x=x[:400], y=y[:400], x_test=x[400:], y_test=y[400:])
    data = load_dataset(TaskConfig(dataset="npz", path=path), seed=0)
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    np.testing.assert_array_equal(data.x_train, x[:400].reshape(400, 64).astype(np.float32) / 255)
    np.testing.assert_array_equal(data.y_test, y[400:])
    learner = build_learner(
        TaskConfig(dataset="npz", path=path, model="cnn", momentum=0.9, local_epochs=10), 0, 1, 0
    )
    learner.train()
    assert learner.evaluate()[1] > 0.8


def test_npz_without_test_arrays_is_split_stratified_and_seeded(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3, 4, 4)).astype(np.float32)
    y = np.arange(200) % 4
    path = npz(tmp_path, x=x, y=y)
    data = load_dataset(TaskConfig(dataset="npz", path=path, test_fraction=0.25), seed=1)
    assert data.input_shape == (3, 4, 4)
    assert np.bincount(data.y_test).tolist() == [12] * 4  # round(0.25 * 50) of each class
    rows = {tuple(r) for r in x.reshape(200, -1)}
    assert all(tuple(r) in rows for r in data.x_test)  # float features are used as stored
    again = load_dataset(TaskConfig(dataset="npz", path=path, test_fraction=0.25), seed=1)
    np.testing.assert_array_equal(again.x_test, data.x_test)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((4, 2))}, r"arrays \['y'\] are missing"),
        ({"x": np.zeros((4, 2)), "y": np.zeros(3, int)}, "y has 3 labels for 4 examples"),
        ({"x": np.zeros((4, 2)), "y": np.array([0, 1, 0.5, 1])}, "y must be a 1-d array of integers"),
        ({"x": np.zeros((4, 2)), "y": np.array([0, 1, -1, 1])}, "negative labels"),
        ({"x": np.zeros((4, 2)), "y": np.zeros(4, int)}, "at least 2 classes"),
        ({"x": np.array([[0.0], [np.nan]]), "y": np.array([0, 1])}, "x holds NaN or infinite values"),
        ({"x": np.zeros((4,)), "y": np.array([0, 1, 0, 1])}, r"features must have shape \(N, features\)"),
        ({"x": np.array(["a", "b"]), "y": np.array([0, 1])}, "x must be a non-empty array of numbers"),
        (
            {"x": np.zeros((2, 2)), "y": np.array([0, 1]), "x_test": np.zeros((2, 2))},
            "x_test and y_test go together",
        ),
        (
            {
                "x": np.zeros((2, 2)),
                "y": np.array([0, 1]),
                "x_test": np.zeros((2, 3)),
                "y_test": np.array([0, 1]),
            },
            r"x_test examples are float64 \(3,\), x examples are float64 \(2,\)",
        ),
        (
            {"x": np.zeros((2, 2)), "y": np.array([0, 1]), "extra": np.zeros(1)},
            r"unexpected arrays \['extra'\]",
        ),
    ],
)
def test_bad_npz_files_are_clear_errors(tmp_path, arrays, message):
    path = npz(tmp_path, **arrays)
    with pytest.raises(ValueError, match=rf"task\.path '.*data\.npz': .*{message}"):
        load_dataset(TaskConfig(dataset="npz", path=path), seed=0)


def test_unreadable_npz_files_are_clear_errors(tmp_path):
    (tmp_path / "text.npz").write_text("not a zip")
    np.save(tmp_path / "one.npy", np.zeros(3))
    np.savez(tmp_path / "pickled.npz", x=np.array([object(), 1], dtype=object), y=np.array([0, 1]))
    for name, message in [
        ("missing.npz", "cannot read it as an .npz file of arrays: .*No such file"),
        ("text.npz", "cannot read it as an .npz file of arrays"),
        ("one.npy", "an .npy file of one array"),
        ("pickled.npz", "cannot read it as an .npz file of arrays: Object arrays cannot be loaded"),
    ]:
        with pytest.raises(ValueError, match=message):
            load_dataset(TaskConfig(dataset="npz", path=str(tmp_path / name)), seed=0)


def test_partition_none_gives_every_node_the_whole_training_set(tmp_path):
    x, y = digit_images(300)
    task = TaskConfig(dataset="npz", path=npz(tmp_path, x=x, y=y), partition="none")
    whole = load_dataset(task, seed=0)
    for node in (0, 4):
        mine = node_dataset(task, node, 5, seed=0)
        np.testing.assert_array_equal(mine.x_train, whole.x_train)
        np.testing.assert_array_equal(mine.y_train, whole.y_train)


def hf_task(path, **fields) -> TaskConfig:
    return TaskConfig(dataset="hf", path=str(path), **fields)


@pytest.mark.parametrize("layout", ["saved-dict", "parquet"])
def test_a_hugging_face_dataset_becomes_arrays(tmp_path, layout):
    """A DatasetDict from save_to_disk (datasets.load_from_disk) and a folder of parquet files
    (flwr-datasets' FederatedDataset) give the images and labels they were made from."""
    folder = save_hf_digits(tmp_path / layout, 300, test=60, parquet=layout == "parquet")
    source = hf_source(hf_task(folder), 0)
    x, y = digit_images(300)
    assert source.input_shape == (1, 8, 8) and source.num_classes == 10 and source.scale == 255.0
    np.testing.assert_array_equal(source.x, x[:240].reshape(240, 64))
    np.testing.assert_array_equal(source.y, y[:240])
    np.testing.assert_array_equal(source.x_test, x[240:].reshape(60, 64))


def test_a_saved_dataset_without_test_split_is_split_by_us(tmp_path):
    folder = save_hf_digits(tmp_path / "bare", 300)
    data = load_dataset(hf_task(folder, test_fraction=0.2), seed=0)
    assert len(data.y_train) + len(data.y_test) == 300 and abs(len(data.y_test) - 60) <= 5


def test_hugging_face_columns_and_splits_are_checked(tmp_path):
    folder = save_hf_digits(tmp_path / "d", 100, test=20)
    source = hf_source(hf_task(folder, image_column="image", label_column="label"), 0)
    assert source.x.shape == (80, 64)
    with pytest.raises(
        ValueError, match=r"task\.image_column 'pixels' is not a column; columns: \['image', 'label'\]"
    ):
        hf_source(hf_task(folder, image_column="pixels"), 0)
    with pytest.raises(
        ValueError, match=r"no split 'training' \(task\.hf_train_split\); splits: \['train', 'test'\]"
    ):
        hf_source(hf_task(folder, hf_train_split="training"), 0)
    with pytest.raises(ValueError, match=r"task\.path '.*nowhere'"):
        hf_source(hf_task(tmp_path / "nowhere"), 0)


def test_prepare_leaves_light_datasets_and_makes_paths_absolute(tmp_path, monkeypatch):
    config = load_config(None, [])
    assert prepare_shards(config, tmp_path) is config
    x, y = digit_images(100)
    npz(tmp_path, x=x, y=y)
    monkeypatch.chdir(tmp_path)
    relative = config.replace(task=dataclasses.replace(config.task, dataset="npz", path="data.npz"))
    assert prepare_shards(relative, tmp_path).task.path == str(tmp_path.resolve() / "data.npz")


def test_a_broken_shard_folder_is_a_clear_error(tmp_path):
    task = TaskConfig(dataset="prepared", path=str(tmp_path))
    with pytest.raises(ValueError, match=r"no shard manifest shards\.json"):
        node_dataset(task, 0, 2, 0)
    (tmp_path / "shards.json").write_text(json.dumps({"format": "fedgossip-shards/1", "num_nodes": 2}))
    with pytest.raises(ValueError, match=r"shards\.json has missing or malformed entries"):
        node_dataset(task, 0, 2, 0)


def test_hugging_face_columns_are_detected_or_asked_for(tmp_path):
    import datasets

    rng = np.random.default_rng(0)
    rows = {"features": rng.normal(size=(40, 5)).tolist(), "label": (np.arange(40) % 2).tolist()}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "tabular"))
    source = hf_source(hf_task(tmp_path / "tabular"), 0)  # no Image, no ClassLabel: by name and elimination
    assert source.input_shape == (5,) and source.num_classes == 2 and source.scale == 1.0
    np.testing.assert_allclose(source.x, np.array(rows["features"]))
    datasets.Dataset.from_dict({**rows, "other": list(range(40))}).save_to_disk(str(tmp_path / "two"))
    with pytest.raises(ValueError, match=r"cannot tell the input column: set task\.image_column"):
        hf_source(hf_task(tmp_path / "two"), 0)
    assert hf_source(hf_task(tmp_path / "two", image_column="features"), 0).x.shape == (40, 5)
