"""Covariate shift among nodes (task.partition = "covariate") and the authors' synthetic mixture
(task.dataset = "gmm-synthetic"): the partition is disjoint, covering and seeded, each node's
inputs come from its own mix of groups (one group each when shift_alpha is small), images are
rotated by 90 degrees per group, features moved by one shift per group; the mixture's labels
follow each component's linear rule; bad settings are refused naming the key."""

from __future__ import annotations

import numpy as np
import pytest

from fedgossip.tasks import TaskConfig, load_dataset, node_dataset
from fedgossip.tasks.covariate import covariate_partition, shifted
from fedgossip.tasks.gmm_synthetic import components, draw

SEED = 3


def _partition(shift_alpha: float, seed: int = SEED) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    labels, groups = rng.integers(4, size=4000), rng.integers(3, size=4000)
    parts = covariate_partition(labels, groups, 3, 6, alpha=1000.0, shift_alpha=shift_alpha, seed=seed)
    return groups, parts


@pytest.mark.timeout(30)
def test_the_partition_is_disjoint_covering_and_seeded():
    _, parts = _partition(0.5)
    everything = np.concatenate(parts)
    assert sorted(everything.tolist()) == list(range(4000))
    assert all(len(p) >= 10 for p in parts)
    for mine, again in zip(parts, _partition(0.5)[1], strict=True):
        np.testing.assert_array_equal(mine, again)
    assert any(len(a) != len(b) or (a != b).any() for a, b in zip(parts, _partition(0.5, 4)[1], strict=True))


@pytest.mark.timeout(30)
def test_a_small_shift_alpha_gives_each_node_one_group_and_a_large_one_all():
    groups, parts = _partition(0.01)
    for rows in parts:  # Dirichlet(0.01): nearly all of a node's rows in one group
        assert np.bincount(groups[rows], minlength=3).max() / len(rows) > 0.95
    groups, parts = _partition(1000.0)
    for rows in parts:  # Dirichlet(1000): every group about a third
        shares = np.bincount(groups[rows], minlength=3) / len(rows)
        assert np.all(np.abs(shares - 1 / 3) < 0.1)


@pytest.mark.timeout(30)
def test_images_are_rotated_by_90_degrees_per_group_and_features_moved_per_group():
    rng = np.random.default_rng(1)
    images = rng.normal(size=(8, 1 * 4 * 4)).astype(np.float32)
    groups = np.arange(8) % 4
    out = shifted(images, groups, (1, 4, 4), 4, SEED).reshape(8, 1, 4, 4)
    for i in range(8):
        np.testing.assert_array_equal(out[i, 0], np.rot90(images[i].reshape(4, 4), k=groups[i]))
    rows = rng.normal(size=(6, 5)).astype(np.float32)
    moved = shifted(rows, np.array([0, 1, 2, 0, 1, 2]), (5,), 3, SEED)
    delta = moved - rows
    np.testing.assert_array_equal(delta[[0, 3]], 0.0)
    np.testing.assert_allclose(delta[1], delta[4], atol=1e-6)
    np.testing.assert_allclose(delta[2], delta[5], atol=1e-6)
    assert np.abs(delta[1] - delta[2]).max() > 0.1


@pytest.mark.timeout(30)
def test_a_nodes_digits_are_rotations_of_the_originals_and_the_test_set_mixes_all():
    task = TaskConfig(partition="covariate", shift_alpha=0.01, alpha=1000.0)
    plain = load_dataset(TaskConfig(), SEED)
    data = node_dataset(task, 2, 4, SEED)

    def turns(rows: np.ndarray, originals: np.ndarray) -> list[int]:
        known = {row.tobytes() for row in originals}
        return [next(k for k in range(4) if np.rot90(r.reshape(8, 8), k=-k).tobytes() in known) for r in rows]

    assert len(turns(data.x_train, plain.x_train)) == len(data.x_train)  # each a rotated original
    assert sorted(set(turns(data.x_test, plain.x_test))) == [0, 1, 2, 3]


@pytest.mark.timeout(30)
def test_the_synthetic_mixture_follows_each_components_gaussian_and_linear_rule():
    means, covariance, theta = components(SEED, 3, 8)
    assert np.all((means >= -1) & (means <= 1))
    np.testing.assert_allclose(covariance, np.eye(8) / np.sqrt(8))
    x, y, component = draw(SEED, 1, 6000, 3, 8)
    assert np.bincount(component).tolist() == [2000, 2000, 2000]
    for m in range(3):
        mine = x[component == m]
        np.testing.assert_allclose(mine.mean(axis=0), means[m], atol=0.08)
        np.testing.assert_allclose(np.cov(mine.T), covariance, atol=0.08)
        logits = (mine - means[m]) @ theta[m]
        np.testing.assert_array_equal(y[component == m], (logits > 0).astype(int))
    data = node_dataset(
        TaskConfig(dataset="gmm-synthetic", partition="covariate", shift_groups=3, synthetic_features=8),
        0,
        3,
        SEED,
    )
    assert data.num_classes == 2 and data.x_train.shape[1] == 8


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"dataset": "mnist", "partition": "covariate"}, "task.partition 'covariate' needs a dataset"),
        ({"partition": "covariate", "shift_groups": 5}, "task.shift_groups must be at most 4"),
        ({"partition": "covariate", "shift_groups": 0}, "task.shift_groups"),
    ],
)
def test_bad_covariate_settings_are_refused_naming_the_key(values, message):
    with pytest.raises(ValueError, match=message):
        TaskConfig(**values)
