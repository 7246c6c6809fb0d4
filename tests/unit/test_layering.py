"""The layering of ARCHITECTURE.md: no import cycle between folders (the subpackages of launcher/
and client/ counted as folders of their own), and the low layers import nothing above them. Every
`import` counts, those inside functions and under TYPE_CHECKING too."""

from __future__ import annotations

import ast

import networkx as nx

from tests.support import REPO

TOP = (
    "base",
    "schema",
    "strategies",
    "tasks",
    "config",
    "scenario",
    "proto",
    "client",
    "server",
    "reports",
    "launcher",
    "api",
)
SPLIT = ("launcher", "client")  # their subpackages are rooms of their own
# tasks sits above strategies (ARCHITECTURE's order): the DP regression learner releases and
# estimates with strategies.dp_regression's pure math
BELOW = {"base": set(), "strategies": {"base"}, "schema": {"base"}, "tasks": {"base", "schema", "strategies"}}


def folder(parts: list[str]) -> str:
    """The folder of a module given by its path parts below the repository (or below `fedgossip`)."""
    return ".".join(parts[:2]) if parts[0] in SPLIT and len(parts) > 2 else parts[0]


def imported_folders(tree: ast.AST) -> set[str]:
    """The folders of fedgossip a module imports."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    parts = [name.split(".")[1:] for name in names if name.startswith("fedgossip.")]
    # `from fedgossip.launcher import cli` names module cli, not a subpackage
    return {folder(p if len(p) > 2 or p[0] not in SPLIT else p[:1]) for p in parts if p}


def folder_graph() -> nx.DiGraph:
    graph = nx.DiGraph()
    for top in TOP:
        for path in (REPO / top).rglob("*.py"):
            if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                continue
            source = folder(list(path.relative_to(REPO).parts))
            graph.add_node(source)
            for target in imported_folders(ast.parse(path.read_text())) - {source}:
                graph.add_edge(source, target)
    return graph


def test_no_import_cycle_between_folders():
    graph = folder_graph()
    assert {"base", "client.gossip", "launcher.runs", "scenario"} <= set(graph)  # it read the tree
    assert list(nx.simple_cycles(graph)) == []


def test_the_low_layers_import_nothing_above_them():
    graph = folder_graph()
    for low, allowed in BELOW.items():
        assert set(graph.successors(low)) <= allowed, low
    assert "client" not in {t.split(".")[0] for t in graph.successors("server")}
    assert not {t.split(".")[0] for t in graph.successors("reports")} & {"client", "server", "launcher"}
