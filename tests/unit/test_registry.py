"""The strategy registry: registration, parameters, user rules, the result check, and the two
entry points over it (the gossip merge and the Flower adapter), in this process."""

from __future__ import annotations

import logging
import re
import textwrap
import uuid

import numpy as np
import pytest

from fedgossip.client.gossip.merge import merge_models
from fedgossip.config import config_from_dict, load_config
from fedgossip.server.flower_strategies import build_strategy, rule_strategy
from fedgossip.strategies import registry
from fedgossip.strategies.registry import RULES, integer, real, register, resolve, run_rule
from tests.support import NAMES, model, reply

SHAPES = [(3, 2), (4,)]


def models(count: int, seed: int = 0) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in range(count)]


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Write a module of rules into tmp_path (importable); returns its unique name."""
    name = f"user_rules_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            import numpy as np

            def first(own, received, weights, *, shift=0.0):
                return [t + np.float32(shift) for t in received[0]]

            def raising(own, received, weights):
                raise RuntimeError("boom")

            def short(own, received, weights):
                return list(received[0][:-1])

            def reshaped(own, received, weights):
                return [t.reshape(-1) for t in received[0]]

            def retyped(own, received, weights):
                return [t.astype(np.float64) for t in received[0]]

            def nan(own, received, weights):
                return [np.full_like(t, np.nan) for t in received[0]]

            def not_a_list(own, received, weights):
                return 3

            not_callable = 7
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


# --- the table --------------------------------------------------------------------------------


def test_names_per_mode_come_from_the_table():
    ours = ("average", "vca", "median", "trimmed-mean", "krum", "multi-krum")
    assert registry.names("gossip") == (*ours, "fair", "dp-bayesian-regression")  # mechanisms: both modes
    flower = registry.names("flower")
    assert flower[: len(ours)] == ours  # ours run in both runtimes
    assert {"fedavg", "fedmedian", "fedtrimmedavg", "flwr-krum", "bulyan"} <= set(flower)
    assert "krum" not in registry.FLOWER_BUILTINS  # the name is ours in both modes
    for name in ours:
        assert RULES[name].doc.strip(), name  # every rule documents its math


def test_params_take_their_defaults_from_the_signature_and_their_checks_from_register():
    assert registry.RULES["vca"].bind({}) == {"own_weight": 0.5, "eps": 1e-8, "ratio": 1.0}
    assert registry.RULES["multi-krum"].bind({"f": 1}) == {"f": 1, "m": 0}
    assert registry.RULES["trimmed-mean"].bind({"trim_fraction": 0}) == {"trim_fraction": 0.0}
    with pytest.raises(ValueError, match=r"unknown parameter p\.g of strategy 'krum'; known: f"):
        RULES["krum"].bind({"g": 1}, "p")
    with pytest.raises(ValueError, match="known: none"):
        RULES["median"].bind({"x": 1})
    with pytest.raises(ValueError, match=r"p\.f must be an integer >= 0; got 1\.5"):
        RULES["krum"].bind({"f": 1.5}, "p")


def test_register_refuses_mismatched_checks_and_duplicates():
    with pytest.raises(ValueError, match="keyword-only parameters"):

        @register("bad-rule", x=real(0.0))
        def bad(own, received, weights, *, y: float = 1.0):
            return received[0]

    with pytest.raises(ValueError, match="keyword-only parameters"):

        @register("no-default", x=integer(0))
        def no_default(own, received, weights, *, x):
            return received[0]

    with pytest.raises(ValueError, match="registered twice"):

        @register("average")
        def again(own, received, weights):
            return received[0]

    assert "bad-rule" not in RULES and "no-default" not in RULES


def test_a_new_rule_is_one_registration_and_runs_in_both_runtimes(monkeypatch):
    monkeypatch.setattr(registry, "RULES", dict(RULES))

    @register("scaled-first", factor=real(0.0))
    def scaled_first(own, received, weights, *, factor: float = 2.0):
        """result = factor * received[0]."""
        return [factor * t for t in received[0]]

    assert "scaled-first" in registry.names("gossip") and "scaled-first" in registry.names("flower")
    config = load_config(None, ["strategy.name=scaled-first", "strategy.params.factor=3"])
    own, received = models(1, 1)[0], models(2, 2)
    merged = merge_models(config.strategy, own, received, [1, 1]).model
    np.testing.assert_array_equal(merged[0], 3 * received[0][0])
    strategy = rule_strategy.__wrapped__("scaled-first")(factor=0.5)
    rng = np.random.default_rng(0)
    clients = [model(rng) for _ in range(2)]
    arrays, _ = strategy.aggregate_train(1, [reply(10 + i, m, 5) for i, m in enumerate(clients)])
    np.testing.assert_array_equal(arrays[NAMES[0]].numpy(), 0.5 * clients[0][0])


# --- gossip semantics -----------------------------------------------------------------------


def strategy(name: str, **params):
    return load_config(
        None, [f"strategy.name={name}", *(f"strategy.params.{k}={v}" for k, v in params.items())]
    )


def test_average_keeps_own_weight_and_shares_the_rest_by_example_count():
    own, received = models(1, 1)[0], models(2, 2)
    merged = merge_models(strategy("average", own_weight=0.25).strategy, own, received, [10, 30]).model
    for index, tensor in enumerate(merged):
        expected = 0.25 * own[index] + 0.75 * (0.25 * received[0][index] + 0.75 * received[1][index])
        np.testing.assert_allclose(tensor, expected, rtol=1e-6)


def test_robust_rules_count_the_own_model_as_one_vote():
    own, received = models(1, 1)[0], models(2, 2)
    stacked = [np.stack([own[i], received[0][i], received[1][i]]) for i in range(len(SHAPES))]
    median = merge_models(strategy("median").strategy, own, received, [1, 100]).model
    for tensor, stack in zip(median, stacked, strict=True):
        np.testing.assert_array_equal(tensor, np.median(stack, axis=0))
    chosen = merge_models(strategy("krum").strategy, own, received, [1, 1]).model  # n = 3 > 2
    assert any(all(np.array_equal(a, b) for a, b in zip(chosen, m, strict=True)) for m in [own, *received])


def test_a_failing_rule_keeps_the_own_model_and_names_rule_and_round(caplog):
    own, received = models(1, 1)[0], models(4, 2)  # 5 models; krum with f = 2 needs more than 6
    config = strategy("krum", f=2).strategy
    with caplog.at_level(logging.WARNING, logger="fedgossip.merge"):
        outcome = merge_models(config, own, received, [1, 1, 1, 1], round_=3)
    assert outcome.model is own
    assert "strategy 'krum' failed in round 3" in outcome.error and "more than 2f + 2 = 6" in outcome.error
    assert "strategy 'krum' failed in round 3" in caplog.text and "keeping the own model" in caplog.text
    assert merge_models(config, own, [], [], round_=4) == (own, None)  # nothing heard: nothing to do


# --- user rules and the result check ----------------------------------------------------------


def test_user_rule_is_resolved_from_its_module_with_unchecked_params(user_module):
    rule = resolve(f"{user_module}:first")
    assert rule.params is None and rule.bind({"shift": 1, "anything": [1, 2]}) == {
        "shift": 1,
        "anything": [1, 2],
    }
    received = models(2)
    result = rule.apply(None, received, [1.0, 2.0], {"shift": 1.0})
    np.testing.assert_array_equal(result[1], received[0][1] + 1)


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("raising", r"RuntimeError: boom \(at .*user_rules_\w+\.py:\d+ in raising\)"),
        ("short", "the result has 1 tensors but the input has 2"),
        ("reshaped", r"tensor 0: the result has shape \(6,\) but the input has shape \(3, 2\)"),
        ("retyped", "tensor 0: the result has dtype float64 but the input has dtype float32"),
        ("nan", "tensor 0: the result contains NaN or Inf"),
        ("not_a_list", "the result must be a sequence of numpy arrays"),
    ],
)
def test_a_failing_or_invalid_user_rule_is_reported_never_raised(user_module, function, message):
    rule = resolve(f"{user_module}:{function}")
    outcome = run_rule(rule, None, models(3), [1, 1, 1], {}, round_=7)
    assert outcome.model is None
    assert outcome.error.startswith(f"strategy '{user_module}:{function}' failed in round 7: ")
    assert re.search(message, outcome.error), outcome.error


def test_our_rules_results_pass_the_same_check(monkeypatch):
    monkeypatch.setattr(registry, "check_result", lambda result, reference: ["checked"])
    assert RULES["median"].apply(None, models(3), [1, 1, 1], {}) == ["checked"]


def test_user_rule_reference_errors(user_module):
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_x'"):
        resolve("no_such_module_x:f")
    with pytest.raises(ValueError, match=f"module '{user_module}' has no attribute 'missing'"):
        resolve(f"{user_module}:missing")
    with pytest.raises(ValueError, match="'not_callable' is not callable"):
        resolve(f"{user_module}:not_callable")


# --- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"strategy": {"name": "avrage"}}, "strategy.name must be one of average, vca"),
        ({"strategy": {"name": "mod-ule:f"}}, "or a function of yours as package.module:function"),
        (
            {"strategy": {"name": "vca", "params": {"epsilon": 1}}},
            "unknown parameter strategy.params.epsilon",
        ),
        (
            {"strategy": {"name": "vca", "params": {"eps": -1}}},
            "strategy.params.eps must be a finite number >= 0.0; got -1",
        ),
        (
            {"strategy": {"name": "krum", "params": {"f": "1"}}},
            "strategy.params.f must be an integer >= 0; got '1'",
        ),
        ({"strategy": {"name": "vca", "own_weight": 0.5}}, "unknown key strategy.own_weight"),
        ({"strategy": {"name": "vca", "params": 3}}, "strategy.params must be a table"),
        ({"strategy": {"name": "no_such_module_y:f"}}, "strategy.name cannot import module"),
        ({"strategy": {"name": "flwr-krum"}}, "strategy.name (mode gossip) must be one of"),
        (
            {
                "experiment": {"mode": "flower"},
                "strategy": {"name": "fedtrimmedavg", "params": {"beta": 0.5}},
            },
            "strategy.params.beta must be a finite number in [0.0, 0.5); got 0.5",
        ),
    ],
)
def test_bad_strategy_config_names_the_key(data, message):
    with pytest.raises(ValueError) as err:
        config_from_dict(data)
    assert message in str(err.value)


def test_params_overrides_reach_nested_tables_and_round_trip(tmp_path):
    from fedgossip.config import dump_toml

    config = load_config(None, ["strategy.name=multi-krum", "strategy.params.f=1", "strategy.params.m=2"])
    assert config.strategy.params == {"f": 1, "m": 2}
    path = tmp_path / "resolved.toml"
    path.write_text(dump_toml(config))
    assert "[strategy.params]" in path.read_text() and load_config(path) == config
    flower = load_config(None, ['experiment.mode="flower"', "strategy.name=no_such_module_z:f"])
    assert flower.strategy.params == {}  # a Flower server imports it itself (clients never need it)


# --- the Flower adapter ---------------------------------------------------------------------


def test_flower_rule_failure_keeps_the_previous_global_model(user_module, caplog):
    config = load_config(
        None, ['experiment.mode="flower"', f"strategy.name={user_module}:raising", "nodes.count=3"]
    )
    built = build_strategy(config)
    rng = np.random.default_rng(0)
    messages = [reply(10 + i, model(rng), 5) for i in range(3)]
    with caplog.at_level(logging.WARNING, logger="flwr"):
        arrays, metrics = built.aggregate_train(4, messages)
    assert arrays is None and metrics is not None  # Strategy.start keeps the previous arrays
    assert f"strategy '{user_module}:raising' failed in round 4: RuntimeError: boom" in caplog.text
    assert "keeping the previous global model" in caplog.text


def test_flower_checks_that_enough_nodes_are_sampled_for_krum():
    overrides = ['experiment.mode="flower"', "strategy.name=krum", "strategy.params.f=1"]
    with pytest.raises(ValueError, match=r"needs 5 models per round; nodes.count = 4 .* give 4"):
        build_strategy(load_config(None, [*overrides, "nodes.count=4"]))
    built = build_strategy(load_config(None, [*overrides, "nodes.count=5"]))
    assert built.params == {"f": 1}


def test_flower_builtin_params_come_from_strategy_params():
    config = load_config(
        None, ['experiment.mode="flower"', "strategy.name=fedtrimmedavg", "strategy.params.beta=0.1"]
    )
    assert build_strategy(config).beta == 0.1
