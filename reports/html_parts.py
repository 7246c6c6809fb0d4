"""The pieces of the HTML report (reports/html.py): figures inlined as PNG data, summary and
comparison tables whose cells carry the exact JSON value they show (`data-value`), the events
timeline as inline SVG (hover a mark: node, round, kind), links to the raw files. No script, no
font, no request: the page is one file that opens offline."""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1180px;padding:0 18px 40px;color:#222}
h1{font-size:22px;margin:18px 0 4px}h2{font-size:18px;border-bottom:1px solid #ddd;margin-top:28px}
h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f4f4f4;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.top{display:flex;gap:0 24px;align-items:flex-start}.top>section.figures{flex:1;min-width:0}
section.figures{display:flex;flex-wrap:wrap;gap:0 14px}section.figures h2,section.figures h3{flex:1 0 100%}
figure{margin:10px 0;flex:1 1 520px}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:12px}
pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px}.muted{color:#777}
.status-complete{color:#176f2c}.status-failed,.status-interrupted{color:#b00020}
.status-partial,.status-degraded{color:#9a6700}svg text{font-size:11px;fill:#444}
"""
KIND_COLOURS = {"crash": "#b00020", "rejoin": "#176f2c", "attack": "#7b1fa2", "loss": "#9a6700"}


def page(title: str, body: str) -> str:
    """A whole HTML document: `body` under an h1 `title`, the style inline."""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>\n{body}\n</body></html>\n"
    )


def figure(png: bytes, caption: str) -> str:
    """A PNG figure inlined as data (the page needs no file beside it)."""
    data = base64.b64encode(png).decode()
    return (
        f"<figure><img src='data:image/png;base64,{data}' alt='{escape(caption, quote=True)}'>"
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def shown(value: Any) -> str:
    """A value as the report shows it: floats to 4 decimals (thousands grouped), None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:,.1f}" if abs(value) >= 1000 else f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def cell(key: str, value: Any) -> str:
    """A table cell showing `value`, its exact JSON in data-value (what a reader can check)."""
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    data = escape(json.dumps(value), quote=True)
    status = f" status-{escape(str(value))}" if key == "status" else ""
    return (
        f"<td class='{'num' if numeric else 'text'}{status}' data-key='{escape(key, quote=True)}' "
        f"data-value='{data}'>{escape(shown(value))}</td>"
    )


def summary_table(summary: dict[str, Any], skip: Sequence[str] = ()) -> str:
    """One row per top-level value of a summary: plain values as cells, lists and tables folded
    (<details>) below the plain rows."""
    plain, folded = [], []
    for key, value in summary.items():
        if key in skip:
            continue
        if isinstance(value, dict | list):
            folded.append(_folded(key, value))
        else:
            plain.append(f"<tr><th>{escape(key)}</th>{cell(key, value)}</tr>")
    return f"<table class='summary'>{''.join(plain)}</table>{''.join(folded)}"


def _folded(key: str, value: dict | list) -> str:
    if isinstance(value, dict) and all(not isinstance(v, dict | list) for v in value.values()):
        inner = "".join(
            f"<tr><th>{escape(str(k))}</th>{cell(f'{key}.{k}', v)}</tr>" for k, v in value.items()
        )
        inner = f"<table>{inner}</table>" if value else "<p class='muted'>none</p>"
    elif isinstance(value, dict):
        inner = summary_table(value)
    else:
        inner = f"<pre>{escape(', '.join(shown(v) for v in value)) or 'none'}</pre>"
    return f"<details><summary>{escape(key)}</summary>{inner}</details>"


def comparison_table(rows: Sequence[dict[str, Any]]) -> str:
    """The comparison (compare.json's groups): plain columns, then each figure as mean ± std over
    seeds; cells carry the group's number (the mean) in data-value."""
    if not rows:
        return "<p class='muted'>no group</p>"
    stats = [key for key, value in rows[0].items() if isinstance(value, dict)]
    plain = [key for key, value in rows[0].items() if key != "runs" and not isinstance(value, dict)]
    stats = [key for key in stats if any(row[key]["mean"] is not None for row in rows)]
    head = "".join(f"<th>{escape(key)}</th>" for key in (*plain, *stats))
    lines = []
    for row in rows:
        cells = [cell(key, row[key]) for key in plain]
        for key in stats:
            stat = row[key]
            text = shown(stat["mean"]) + ("" if stat["std"] is None else f" ± {shown(stat['std'])}")
            data = escape(json.dumps(stat["mean"]), quote=True)
            cells.append(f"<td class='num' data-key='{key}' data-value='{data}'>{escape(text)}</td>")
        lines.append(f"<tr data-group='{escape(str(row['label']), quote=True)}'>{''.join(cells)}</tr>")
    return f"<table class='comparison'><tr>{head}</tr>{''.join(lines)}</table>"


def timeline(events: Sequence[dict[str, Any]], nodes: int) -> str:
    """The scenario's events against time, one line per node: an SVG mark per event (hover: its
    node, round, kind and details), then the events as a table."""
    if not events:
        return "<p class='muted'>no event</p>"
    end = max(float(e.get("time_s") or 0) for e in events) or 1.0
    ids = sorted({e["node"] for e in events if isinstance(e.get("node"), int)} | set(range(nodes)))
    width, left, row = 1000, 60, 16
    height = row * len(ids) + 30
    marks, labels = [], []
    for index, node in enumerate(ids):
        labels.append(f"<text x='4' y='{index * row + 16}'>node {node}</text>")
    for event in events:
        y = (ids.index(event["node"]) if event.get("node") in ids else 0) * row + 12
        x = left + (width - left - 10) * float(event.get("time_s") or 0) / end
        colour = KIND_COLOURS.get(str(event.get("kind")), "#1f5fbf")
        tip = f"node {event.get('node')}, round {event.get('round')}: {event.get('kind')} {_details(event)}"
        marks.append(
            f"<circle class='event' cx='{x:.1f}' cy='{y}' r='5' fill='{colour}'>"
            f"<title>{escape(tip)}</title></circle>"
        )
    axis = (
        f"<text x='{left}' y='{height - 4}'>0 s</text>"
        f"<text x='{width - 60}' y='{height - 4}'>{end:.1f} s</text>"
    )
    svg = (
        f"<svg class='timeline' viewBox='0 0 {width} {height}' width='100%' role='img' "
        f"aria-label='events against seconds since launch'>{''.join(labels)}{''.join(marks)}{axis}</svg>"
    )
    head = "<tr><th>seconds</th><th>round</th><th>node</th><th>kind</th><th>details</th></tr>"
    rows = "".join(
        f"<tr>{cell('time_s', e.get('time_s'))}{cell('round', e.get('round'))}{cell('node', e.get('node'))}"
        f"<td>{escape(str(e.get('kind')))}</td><td>{escape(_details(e))}</td></tr>"
        for e in sorted(events, key=lambda e: float(e.get("time_s") or 0))
    )
    return f"{svg}<details><summary>{len(events)} events</summary><table>{head}{rows}</table></details>"


def _details(event: dict[str, Any]) -> str:
    details = event.get("details")
    return json.dumps(details, sort_keys=True) if details else ""


def links(run_dir: Path, page_dir: Path) -> str:
    """Links, relative to the page, to the raw files of a run that exist."""
    names = ("metrics.jsonl", "summary.json", "config.toml", "events.jsonl", "consensus.jsonl", "logs")
    items = []
    for name in names:
        path = run_dir / name
        if path.exists():
            target = os.path.relpath(path, page_dir) + ("/" if path.is_dir() else "")
            items.append(f"<a href='{escape(target, quote=True)}'>{escape(name)}</a>")
    return "<p class='links'>raw files: " + " · ".join(items) + "</p>"


MAX_POINTS = 5000  # node-round points above which the interactive chart is left out (the PNG stays)


def accuracy_chart(records: Sequence[dict[str, Any]]) -> str:
    """Test accuracy per round as inline SVG: each node's line, the mean over nodes bold, a point
    per node and round to hover (node, round, accuracy). "" for runs too big to draw point by point."""
    points = [
        (r["node"], r["round"], r["test_accuracy"])
        for r in records
        if isinstance(r.get("node"), int) and r.get("test_accuracy") is not None
    ]
    if not points or len(points) > MAX_POINTS:
        return ""
    width, height, left, bottom = 720, 300, 44, 28
    last = max(round_ for _, round_, _ in points)
    first = min(round_ for _, round_, _ in points)

    def x(round_: int) -> float:
        return left + (width - left - 12) * ((round_ - first) / max(1, last - first))

    def y(accuracy: float) -> float:
        return 8 + (height - bottom - 8) * (1 - accuracy)

    by_node: dict[int, list[tuple[int, float]]] = {}
    by_round: dict[int, list[float]] = {}
    for node, round_, accuracy in sorted(points):
        by_node.setdefault(node, []).append((round_, accuracy))
        by_round.setdefault(round_, []).append(accuracy)
    lines = [
        "<polyline fill='none' stroke='#bbb' stroke-width='1' points='"
        + " ".join(f"{x(r):.1f},{y(a):.1f}" for r, a in line)
        + "'/>"
        for line in by_node.values()
    ]
    mean = " ".join(f"{x(r):.1f},{y(sum(a) / len(a)):.1f}" for r, a in sorted(by_round.items()))
    lines.append(f"<polyline class='mean' fill='none' stroke='#1f5fbf' stroke-width='2.5' points='{mean}'/>")
    dots = [
        f"<circle class='point' cx='{x(r):.1f}' cy='{y(a):.1f}' r='3' fill='#1f5fbf' fill-opacity='0.35'>"
        f"<title>node {node}, round {r}: accuracy {a:.4f}</title></circle>"
        for node, r, a in points
    ]
    ticks = "".join(
        f"<text x='4' y='{y(v) + 4:.1f}'>{v:.1f}</text>"
        f"<line x1='{left}' x2='{width - 12}' y1='{y(v):.1f}' y2='{y(v):.1f}' stroke='#eee'/>"
        for v in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    )
    axis = (
        f"<text x='{left}' y='{height - 6}'>round {first}</text>"
        f"<text x='{width - 80}' y='{height - 6}'>round {last}</text>"
    )
    return (
        f"<figure class='interactive'><svg class='accuracy' viewBox='0 0 {width} {height}' width='100%' "
        f"role='img' aria-label='test accuracy per round'>{ticks}{''.join(lines)}{''.join(dots)}{axis}</svg>"
        "<figcaption>test accuracy per round: every node (grey), the mean over nodes (blue); "
        "hover a point for its node, round and accuracy</figcaption></figure>"
    )
