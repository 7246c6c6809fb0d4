"""The one declaration of a metrics record: each key's type, who writes it and what it means.

`Record` is a TypedDict whose every key is `Annotated[<type>, Doc(<written by>, <meaning>)]`, so
type checkers see the record's keys and types, and everything else is derived from the same lines:
`FIELDS` (one `Field` per key, in declaration order: the JSON types a reader accepts, whether the
key is required, its documentation) comes from `typing.get_type_hints(Record, include_extras=True)`,
the README's field table from `FIELDS` (`fields_markdown`), and the checks of a line read back
(`problem`) from `FIELDS`. A `float` key accepts JSON integers too (as for type checkers), a
`list[...]`/`dict[...]` key any list/dict. The required keys are those of the TypedDict base
without `total=False` (Python 3.10 has no `typing.Required`). The lines of a gossip run's
`consensus.jsonl` are declared the same way (`ConsensusLine`, `CONSENSUS_FIELDS`).
"""

import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

SERVER = "server"  # the `node` of a Flower server record


@dataclass(frozen=True)
class Doc:
    """What a record key means and who writes it ("every record", "gossip", "Flower", "server", a
    strategy's or mechanism's name, ...): the metadata of each key of `Record`."""

    source: str
    meaning: str


class _RecordCore(TypedDict):
    """The keys every metrics record has."""

    node: Annotated[int | str, Doc("every record", 'the node id, or `"server"` for the global model')]
    round: Annotated[
        int,
        Doc(
            "every record", "the round the record closes (1 = the first; async gossip: the node's local unit)"
        ),
    ]
    time_s: Annotated[float, Doc("every record", "seconds since the launch of the run")]


class Record(_RecordCore, total=False):
    """A metrics record: one node (or the Flower server) closing one round."""

    train_loss: Annotated[float | None, Doc("every record", "mean training loss of the round (null: undone)")]
    test_loss: Annotated[
        float | None,
        Doc("every record", "test loss of the model kept after the merge (null: round not evaluated)"),
    ]
    test_accuracy: Annotated[
        float | None, Doc("every record", "test accuracy of the model kept (null: round not evaluated)")
    ]
    num_examples: Annotated[
        int | None,
        Doc("every record", "training examples of the node (test examples: server; null: did not train)"),
    ]
    bytes_sent: Annotated[int, Doc("every record", "model bytes delivered to others in the round")]
    bytes_received: Annotated[int, Doc("every record", "model bytes received and merged in the round")]
    neighbours_heard: Annotated[list[int], Doc("gossip", "the neighbours whose models were merged")]
    merged: Annotated[int, Doc("gossip", "how many models were merged (0: none, or the merge was discarded)")]
    refused: Annotated[int, Doc("gossip", "pushes refused in the round (invalid, unauthenticated, too late)")]
    discarded: Annotated[
        str | None,
        Doc(
            "gossip",
            'why the merge was thrown away: `"merge failed"` (the rule raised or returned a bad model) or '
            '`"merged loss not finite"`',
        ),
    ]
    merge_trigger: Annotated[
        str | None,
        Doc(
            "async gossip",
            'why the unit merged: `"fresh"` (as many fresh models as neighbours) or `"timeout"` '
            "(gossip.async_merge_timeout since the last merge); null: no merge due (tick gossip: "
            '`"fresh"` when the node merged in the period)',
        ),
    ]
    merged_units: Annotated[
        list[int],
        Doc(
            "async gossip",
            "the local unit of each merged model (its sender's `round`), in `neighbours_heard` order",
        ),
    ]
    tick: Annotated[
        int,
        Doc(
            "tick gossip",
            "the tick the record closes (`round` k ends with tick k x gossip.eval_every_ticks)",
        ),
    ]
    caught_up_from: Annotated[int, Doc("gossip", "after a catch-up: the neighbour whose model was adopted")]
    jumped_from: Annotated[int, Doc("gossip", "after a catch-up: the round the node was in")]
    evaluated_by: Annotated[
        str | None,
        Doc("Flower", '`"node"`, `"server"` when the node could not evaluate, null: round not evaluated'),
    ]
    errors: Annotated[list[str], Doc("Flower", "what went wrong with the node's replies in the round")]
    phase: Annotated[
        str,
        Doc(
            "fair",
            '`"explore"` (every node trains) or `"exploit"` (selected nodes only); gossip: the peer\'s own',
        ),
    ]
    selected: Annotated[
        bool,
        Doc(
            "fair",
            "whether the node trained from the latest global model this round (gossip: whether a "
            "neighbour sent it its model)",
        ),
    ]
    staleness: Annotated[
        int,
        Doc(
            "fair",
            "rounds since the node last received the global model (gossip: a neighbour's model; 0: this one)",
        ),
    ]
    contribution: Annotated[
        float | None,
        Doc(
            "fair",
            "the node's Shapley value this round (explore rounds; gossip: in its own neighbourhood's game)",
        ),
    ]
    psi: Annotated[float | None, Doc("fair", "running mean of the node's contributions (frozen in exploit)")]
    selection_probability: Annotated[float | None, Doc("fair", "the node's chance to be selected (exploit)")]
    explore_p_value: Annotated[float | None, Doc("fair", "the Hotelling p-value (explore, after tau rounds)")]
    update_norm: Annotated[float | None, Doc("fair", "L2 norm of the node's update g_i (rounds it trained)")]
    update_alignment: Annotated[
        float | None,
        Doc("fair", "cosine of the node's update with the round's aggregate step (rounds it trained)"),
    ]
    sent_to: Annotated[list[int], Doc("fair gossip", "the neighbours the peer sent its model to this round")]
    neighbour_psi: Annotated[
        dict[str, float | None] | None, Doc("fair gossip", "the peer's psi of each neighbour (by id)")
    ]
    neighbour_probability: Annotated[
        dict[str, float | None] | None,
        Doc("fair gossip", "each neighbour's chance to get the peer's model (exploit rounds)"),
    ]
    layer_variance: Annotated[
        dict[str, float],
        Doc(
            "gossip, server",
            "population variance of each float tensor (name -> variance) of the model kept after the merge; "
            "server: of the global model",
        ),
    ]
    consensus_distance: Annotated[
        float | None,
        Doc(
            "server",
            "mean L2 distance of the round's client models to their unweighted average (gossip: "
            "`consensus.jsonl`)",
        ),
    ]
    consensus_models: Annotated[int, Doc("server", "how many client models the consensus distance is over")]
    attack: Annotated[
        str, Doc("scenario", "the attack the node carries out (only attackers' records have it)")
    ]
    trigger_success: Annotated[
        float | None,
        Doc(
            "scenario",
            "collective action: share of triggered test examples of other classes classified as the target",
        ),
    ]
    dropped: Annotated[
        int, Doc("scenario", "pushes of the round lost by the scenario's network (loss, partition)")
    ]
    delayed_s: Annotated[
        float, Doc("scenario", "seconds the scenario's network held the round's pushes back, summed")
    ]
    rounds_missed: Annotated[int, Doc("scenario", "after a crash: the rounds the node did not train")]
    rejoin_s: Annotated[
        float,
        Doc(
            "scenario",
            "after a crash: seconds to be back; gossip: from serving again to holding a model; Flower: "
            "from the start of the round it is back for (its SuperNode restarted) to its handshake answer",
        ),
    ]
    train_s: Annotated[float, Doc("server", "seconds the server waited for training replies in the round")]
    evaluate_s: Annotated[
        float, Doc("server", "seconds the server waited for evaluation replies in the round")
    ]
    # privacy ([privacy]; absent when privacy.mechanism is "none")
    privacy: Annotated[str, Doc("privacy", "the privacy mechanism that ran (privacy.mechanism)")]
    epsilon: Annotated[
        float,
        Doc("privacy", "the epsilon the node has spent so far at privacy.delta (DP-SGD: RDP accountant)"),
    ]
    # DP distributed Bayesian linear regression (strategy dp-bayesian-regression)
    dp_parties_known: Annotated[
        int,
        Doc("dp-bayesian-regression", "parties whose noisy statistics the node (Flower: the server) knows"),
    ]
    dp_estimator: Annotated[
        str, Doc("dp-bayesian-regression", "the estimator of theta (strategy.params.estimator)")
    ]
    dp_estimation_mse: Annotated[
        float | None,
        Doc(
            "dp-bayesian-regression",
            "mean((theta_hat - theta)^2) against the simulated theta or the pooled OLS",
        ),
    ]
    dp_prediction_mse: Annotated[
        float | None, Doc("dp-bayesian-regression", "mean squared error of x theta_hat on the test rows")
    ]
    dp_seconds_per_iteration: Annotated[
        float | None,
        Doc(
            "dp-bayesian-regression",
            "seconds per MCMC iteration of the estimate (the one-step estimate: its time)",
        ),
    ]
    # personalised learning (task.eval, FedGMM)
    local_accuracy: Annotated[
        float | None,
        Doc(
            "task.eval local/both",
            "accuracy of the model kept on the node's own test split (drawn from its own distribution)",
        ),
    ]


class _ConsensusCore(TypedDict):
    """The keys every line of consensus.jsonl has."""

    round: Annotated[int, Doc("launcher", "the round whose models were measured")]
    time_s: Annotated[float, Doc("launcher", "seconds since the launch of the run, when measured")]
    consensus_distance: Annotated[
        float | None,
        Doc(
            "launcher",
            "mean L2 distance of the peers' models of the round to their unweighted average "
            "(null: < 2 models)",
        ),
    ]
    consensus_models: Annotated[int, Doc("launcher", "how many peers' models of the round were measured")]


class ConsensusLine(_ConsensusCore, total=False):
    """A line of a gossip run's `consensus.jsonl` (the launcher's observer; Flower mode has the
    `consensus_*` fields of the server records instead)."""

    nodes_skipped: Annotated[
        list[int], Doc("launcher", "peers that did not serve their model (GetModel) in time")
    ]
    nodes_moved_on: Annotated[
        list[int], Doc("launcher", "peers that served a model of another round (not used)")
    ]
    nodes_missing: Annotated[
        list[int], Doc("launcher", "peers that never recorded the round (dead, too far behind)")
    ]


@dataclass(frozen=True)
class Field:
    """One key of a declared line, as readers check and the README documents it."""

    name: str
    types: tuple[type, ...]  # the Python types of the JSON values accepted
    source: str
    meaning: str
    required: bool


def fields_of(declaration: type) -> tuple[Field, ...]:
    """The fields of a TypedDict whose keys are all `Annotated[<type>, Doc(...)]`, in order."""
    hints = typing.get_type_hints(declaration, include_extras=True)
    fields = []
    for name, hint in hints.items():
        doc = next((m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Doc)), None)
        if doc is None:
            raise TypeError(f"{declaration.__name__}.{name} has no Doc(...) annotation")
        required = name in declaration.__required_keys__  # type: ignore[attr-defined]
        fields.append(Field(name, json_types(hint.__origin__), doc.source, doc.meaning, required))
    return tuple(fields)


def json_types(annotation: Any) -> tuple[type, ...]:
    """The Python types a JSON value of `annotation` may decode to: the arms of a union, the
    container of a generic (`list[int]` -> list), and int for a float."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    kinds: list[type] = []
    for arm in typing.get_args(annotation) if union else (annotation,):
        kind = typing.get_origin(arm) or arm
        kinds += [int, float] if kind is float else [kind]
    return tuple(dict.fromkeys(kinds))


FIELDS = fields_of(Record)
CONSENSUS_FIELDS = fields_of(ConsensusLine)
_NAMES = frozenset(field.name for field in FIELDS)


def unknown_fields(names: Iterable[str]) -> list[str]:
    """The names that are not fields of `Record`, sorted."""
    return sorted(set(names) - _NAMES)


def problem(candidate: Any) -> str | None:
    """Why `candidate` is not a valid record (a field missing or of the wrong JSON type), or None.

    Fields this schema does not know are allowed (a newer writer); bool is not a number."""
    reason = _typed_problem(candidate, FIELDS)
    if reason is None and isinstance(candidate["node"], str) and candidate["node"] != SERVER:
        return f"'node' is {candidate['node']!r}, not an int or {SERVER!r}"
    return reason


def consensus_problem(candidate: Any) -> str | None:
    """Why `candidate` is not a valid line of consensus.jsonl (see `ConsensusLine`), or None."""
    return _typed_problem(candidate, CONSENSUS_FIELDS)


def _typed_problem(candidate: Any, fields: Iterable[Field]) -> str | None:
    """A required field missing or a field of the wrong JSON type, or None."""
    if not isinstance(candidate, dict):
        return "not a JSON object"
    for field in fields:
        if field.name not in candidate:
            if field.required:
                return f"no {field.name!r}"
            continue
        value = candidate[field.name]
        if (isinstance(value, bool) and bool not in field.types) or not isinstance(value, field.types):
            return f"{field.name!r} is {type(value).__name__}, not {' or '.join(_names(field.types))}"
    return None


def _names(kinds: tuple[type, ...]) -> list[str]:
    return ["null" if kind is type(None) else kind.__name__ for kind in kinds]


def fields_markdown(fields: Iterable[Field] = FIELDS) -> str:
    """The table of record fields (or of `CONSENSUS_FIELDS`) for the README (checked against it)."""
    rows = ["| field | written by | meaning |", "|---|---|---|"]
    rows += [f"| `{f.name}` | {f.source} | {f.meaning} |" for f in fields]
    return "\n".join(rows)
