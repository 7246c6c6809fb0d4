"""The scenario's pieces in one process: the [scenario] section's checks, who plays which role,
what an attacker sends and trains on, and the trigger success rate of a collective."""

from __future__ import annotations

import re

import numpy as np
import pytest

from fedgossip.config import ScenarioSection, load_config
from fedgossip.scenario.attacks import ModelAttack, poison_data, trigger_success, with_trigger
from fedgossip.scenario.roles import CrashClock, chosen, roles
from fedgossip.tasks import build_learner
from fedgossip.tasks.data import Dataset


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("scenario.loss=1.5", "scenario.loss must be a finite number in [0, 1]; got 1.5"),
        ("scenario.attack=bribe", "scenario.attack must be one of"),
        ("scenario.attacker_fraction=0.2", "scenario.attack must name an attack"),
        (
            "scenario.stragglers=[1, 1]",
            "scenario.stragglers must be a list of distinct items, each an integer >= 0; got [1, 1]",
        ),
        ("scenario.jitter_ms=5", "scenario.jitter_ms must be <= scenario.delay_ms"),
        ("scenario.partition_groups=2", "scenario.partition_rounds must be [first, last]"),
        ("scenario.crash=[1]", "scenario.crash_round must be >= 1"),
        ("scenario.slowdown=0.5", "scenario.slowdown must be a finite number >= 1; got 0.5"),
        ("scenario.crash_rate=1", "scenario.crash_rate must be a finite number in [0, 1); got 1.0"),
    ],
)
def test_bad_scenario_values_are_refused_naming_the_key(setting, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(None, [setting])


def test_node_ids_beyond_the_nodes_and_gossip_faults_in_flower_mode_are_refused():
    with pytest.raises(ValueError, match=r"scenario\.attackers names a node >= nodes\.count"):
        load_config(None, ["scenario.attack=sign-flip", "scenario.attackers=[8]"])
    flower = ["experiment.mode=flower", "strategy.name=average"]
    with pytest.raises(ValueError, match=r"scenario\.loss applies in gossip mode only"):
        load_config(None, [*flower, "scenario.loss=0.1"])
    with pytest.raises(ValueError, match="'stale' applies in gossip mode only"):
        load_config(None, [*flower, "scenario.attack=stale", "scenario.attackers=[1]"])
    load_config(None, [*flower, "scenario.attack=sign-flip", "scenario.attackers=[1]"])


def test_roles_are_seeded_and_a_smaller_fraction_is_inside_a_larger():
    def attackers(fraction: float, seed: int = 3) -> frozenset[int]:
        return chosen(ScenarioSection(attack="sign-flip", attacker_fraction=fraction), "attackers", 20, seed)

    sets = [attackers(f) for f in (0.1, 0.2, 0.3)]
    assert [len(s) for s in sets] == [2, 4, 6]
    assert sets[0] < sets[1] < sets[2]
    assert attackers(0.3) == sets[2] and attackers(0.3, seed=4) != sets[2]
    given = ScenarioSection(attack="noise", attackers=(1, 5), stragglers=(2,), slowdown=3.0)
    assert [roles(given, n, 8, 0).attack for n in range(8)] == [
        None,
        "noise",
        None,
        None,
        None,
        "noise",
        None,
        None,
    ]
    assert roles(given, 2, 8, 0).slowdown == 3.0 and roles(given, 1, 8, 0).slowdown == 1.0


def test_a_crash_rate_crashes_about_that_often_and_the_same_every_run():
    scenario = ScenarioSection(crash_rate=0.2)

    def crashes(node: int) -> list[int]:
        clock = CrashClock(scenario, roles(scenario, node, 4, 0), node, 0)
        return [r for r in range(1, 501) if clock.crashes(r)]

    assert crashes(1) == crashes(1) != crashes(2)
    assert 100 - 4 * 9 <= len(crashes(1)) <= 100 + 4 * 9  # binomial(500, 0.2): 100 +- 4 sigma
    by_round = ScenarioSection(crash=(1,), crash_round=3)
    clock = CrashClock(by_round, roles(by_round, 1, 4, 0), 1, 0)
    assert [clock.crashes(r) for r in (1, 2, 3, 3, 4)] == [False, False, True, False, False]


def test_model_attacks_send_what_they_say():
    own = [np.array([1.0, -2.0], dtype=np.float32), np.array([3], dtype=np.int64)]
    initial = [np.zeros(2, dtype=np.float32), np.array([0], dtype=np.int64)]
    rng = np.random.default_rng(0)

    def forge(kind: str, **settings) -> list[np.ndarray]:
        return ModelAttack(kind, ScenarioSection(**settings), initial, rng).forge(own)

    flipped = forge("sign-flip", attack_scale=2.0)
    assert flipped[0].tolist() == [-2.0, 4.0] and flipped[0].dtype == np.float32
    assert flipped[1].tolist() == [3]  # integer tensors (counters) pass
    assert forge("scale", attack_scale=10.0)[0].tolist() == [10.0, -20.0]
    noisy = ModelAttack("noise", ScenarioSection(attack_scale=0.5), initial, rng).forge([np.zeros(20000)])[0]
    assert abs(noisy.std() - 0.5) < 0.02 and abs(noisy.mean()) < 0.02
    assert forge("free-rider")[0].tolist() == [0.0, 0.0]
    stale = ModelAttack("stale", ScenarioSection(stale_rounds=2), initial, rng)
    for value in (1.0, 2.0, 3.0):
        stale.remember([np.full(2, value), initial[1]])
    assert stale.forge(own)[0].tolist() == [2.0, 2.0]  # the model of 2 rounds before the last


def _tiny(n: int = 6) -> Dataset:
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3) / (n * 3)
    return Dataset(x, np.arange(n) % 3, x.copy(), np.arange(n) % 3, 3, (3,))


def test_data_attacks_flip_labels_or_plant_the_trigger():
    data = _tiny()
    flipped = poison_data("label-flip", ScenarioSection(), data)
    assert flipped.y_train.tolist() == [2, 1, 0, 2, 1, 0] and flipped.x_train is data.x_train
    planted = poison_data("collective", ScenarioSection(target_label=1, trigger_size=2), data)
    assert (planted.y_train == 1).all()
    assert (planted.x_train[:, -2:] == data.x_test.max()).all()
    assert (planted.x_train[:, 0] == data.x_train[:, 0]).all()
    assert (planted.y_test == data.y_test).all() and (planted.x_test == data.x_test).all()
    with pytest.raises(ValueError, match="trigger_size = 4 exceeds the 3 features"):
        with_trigger(data.x_train, 4, 1.0)
    with pytest.raises(ValueError, match="target_label = 3 but the data has 3 classes"):
        poison_data("collective", ScenarioSection(target_label=3), data)


@pytest.mark.timeout(60)
def test_the_trigger_success_rate_is_the_share_of_triggered_test_examples_sent_to_the_target():
    config = load_config(None, ["task.model=linear"])
    scenario = ScenarioSection(attack="collective", target_label=0, trigger_size=4)

    def learner(collective: bool):
        poison = (lambda data: poison_data("collective", scenario, data)) if collective else None
        return build_learner(config.task, 0, 2, 0, poison=poison)

    honest, collective = learner(False), learner(True)
    for _ in range(5):
        honest.train()
        collective.train()
    for trained in (honest, collective):  # the independent reference: count by hand
        data = trained.data
        others = data.y_test != 0
        x = data.x_test[others].copy()
        x[:, -4:] = data.x_test.max()
        expected = float(np.mean(trained.predict(x) == 0))
        assert trigger_success(trained, scenario) == pytest.approx(expected)
    assert trigger_success(honest, scenario) < 0.2  # the clean model ignores the corner pixels
    assert trigger_success(collective, scenario) > 0.9  # one that learned only the trigger's label
