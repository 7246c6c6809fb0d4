"""Mechanisms: strategies that decide which nodes train on which model each round rather than how
models merge (fair incentives, :mod:`.fair`). Their names share the registry's
(:data:`fedgossip.strategies.registry.MECHANISMS`) with the rules and Flower's built-ins.

A mechanism's entry names every part the rest needs, as ``package.module:attribute`` strings
loaded when first asked for (:meth:`Mechanism.part`, with the one loader
:func:`fedgossip.base.loading.load_callable`), so this package imports no runtime and nothing
outside the entry compares its name: the gossip peer, the Flower server, the config and the
reports ask :func:`mechanism` for the entry of a strategy name and use its parts.

To add a mechanism, write its parts and one entry, next to its pure code (as ``.fair`` does)::

    register_mechanism(
        "name", PARAMS, doc=DOC, check_nodes=check_nodes,       # PARAMS: its Param list
        gossip_plan="fedgossip.client.gossip.NAME:NameGossip",  # a RoundPlan subclass
        flower_strategy="fedgossip.server.NAME:name_strategy",  # (config, labels, node_wait) -> Strategy
        report="fedgossip.reports.NAME:NameReport",             # a reports.mechanisms.MechanismReport
        schedules=("sync",),                                    # the gossip schedules it runs with
    )

and import its module in ``fedgossip/strategies/__init__.py`` (which registers it). It runs in the
modes whose part it names (gossip, Flower or both); its ``report`` gives summary.json its object
under the mechanism's name, the run's plot ``NAME.png`` and its rows and columns in the tables.
tests/unit/test_mechanisms.py registers a toy one this way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedgossip.base.loading import is_reference, load_callable

from . import registry
from .registry import Entry, Param


@dataclass(frozen=True)
class Mechanism(Entry):
    """A round protocol (which nodes train on which model), not a merge rule: its ``params`` are
    checked by the registry; ``check_nodes(params, num_nodes)`` checks them against the node count
    (raises ValueError); ``doc`` documents it. Its parts (``package.module:attribute``, see
    :meth:`part`): ``gossip_plan``, the gossip peer's round plan class, called ``(config, node,
    neighbours)``; ``flower_strategy``, called ``(config, labels, node_wait)`` for the ServerApp's
    Strategy; ``report``, the reports' class of its runs. ``schedules``: the gossip schedules it
    runs with. ``task_model``: the task.model it needs (None: any)."""

    doc: str
    check_nodes: Callable[[Mapping[str, Any], int], None]
    gossip_plan: str | None
    flower_strategy: str | None
    report: str
    schedules: tuple[str, ...]
    task_model: str | None = None

    def part(self, role: str) -> Callable[..., Any]:
        """The part named by the field ``role`` ("gossip_plan", "flower_strategy" or "report"),
        imported on first use.

        Raises
        ------
        ValueError
            When the mechanism has no such part (it does not run in that mode), or it cannot be
            loaded (the message names the mechanism and the part).
        """
        reference = getattr(self, role)
        if reference is None:
            raise ValueError(f"strategy {self.name!r} has no {role}")
        try:
            return load_callable(reference)
        except ValueError as err:
            raise ValueError(f"strategy {self.name!r}, {role} {reference!r}: {err}") from None


def register_mechanism(
    name: str,
    params: Sequence[Param],
    *,
    doc: str,
    check_nodes: Callable[[Mapping[str, Any], int], None],
    gossip_plan: str | None = None,
    flower_strategy: str | None = None,
    report: str,
    schedules: tuple[str, ...] = ("sync", "async"),
    task_model: str | None = None,
) -> Mechanism:
    """Register the mechanism ``name`` (see :class:`Mechanism`) and return its entry. It runs in
    gossip mode if it names a ``gossip_plan``, in Flower mode if it names a ``flower_strategy``.

    Raises
    ------
    ValueError
        When ``name`` is taken, a part is not of the form ``package.module:attribute``, or it
        names no runtime's part.
    """
    registry.check_new(name)
    parts = {"gossip_plan": gossip_plan, "flower_strategy": flower_strategy, "report": report}
    for role, reference in parts.items():
        if reference is not None and not is_reference(reference):
            raise ValueError(
                f"mechanism {name!r}: {role} must be package.module:attribute; got {reference!r}"
            )
    modes = tuple(mode for mode, part in (("gossip", gossip_plan), ("flower", flower_strategy)) if part)
    if not modes:
        raise ValueError(f"mechanism {name!r} names neither a gossip_plan nor a flower_strategy")
    entry = registry.MECHANISMS[name] = Mechanism(
        name,
        tuple(params),
        modes,
        doc,
        check_nodes,
        gossip_plan,
        flower_strategy,
        report,
        schedules,
        task_model,
    )
    return entry


def mechanism(name: object) -> Mechanism | None:
    """The mechanism registered as strategy ``name``; None for any other strategy (a rule, a
    Flower built-in, a user's function) or no name at all."""
    return registry.MECHANISMS.get(name) if isinstance(name, str) else None


def mechanisms() -> list[Mechanism]:
    """Every registered mechanism, in the order registered."""
    return list(registry.MECHANISMS.values())


def runs_with(name: str, schedule: str) -> bool:
    """Whether strategy ``name`` runs with ``gossip.schedule = schedule``: a mechanism with its
    own ``schedules`` only, every other strategy with all."""
    entry = mechanism(name)
    return entry is None or schedule in entry.schedules
