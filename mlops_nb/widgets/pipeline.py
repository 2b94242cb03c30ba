"""The pipeline's steps as a graph with their state, as plain data (the pipeline widget's model).

States: "up to date"; "changed" (the step's code, parameters, inputs or outputs changed since
it last succeeded, or its notebook changed since the last compile); "stale" (up to date
itself, but a step it needs is not, so a run would redo it); "never run"; "failed" (its last
run raised: its kept executed notebook holds the error); and while a run goes on "running"
and "done". Layout: a step's column is the length of the longest path to it from a step with
no upstream, so branches sit side by side and joins come after both branches.
"""

from __future__ import annotations

import html
import json
import os
import re
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from mlops_nb import compile as compile_mod
from mlops_nb.execute.run import CHANGED, NEVER_RUN, UP_TO_DATE, statuses
from mlops_nb.pipeline.spec import PipelineSpec
from mlops_nb.project import STEPS, Layout, rel_executed
from mlops_nb.widgets.render import html_table, text_table

RUNNING, DONE, FAILED, STALE = "running", "done", "failed", "stale"
COLORS = {UP_TO_DATE: "#c8e6c9", DONE: "#a5d6a7", CHANGED: "#ffe0b2", STALE: "#fff59d",
          NEVER_RUN: "#e0e0e0", RUNNING: "#90caf9", FAILED: "#ef9a9a"}


@dataclass(frozen=True)
class Node:
    step: str
    upstream: tuple[str, ...]
    state: str
    reason: str = ""
    executed: str = ""  # project-relative path of the kept executed notebook, if any
    column: int = 0
    row: int = 0


def _failed(path: Path) -> bool:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    status = (doc.get("metadata") or {}).get("mlops_nb", {}).get("status")
    if status:
        return True
    return any(out.get("output_type") == "error" for cell in doc.get("cells", [])
               for out in cell.get("outputs", []))


def layout(nodes: list[Node]) -> list[Node]:
    """Columns by longest path from a root; rows in pipeline order within a column."""
    column: dict[str, int] = {}
    for n in nodes:  # pipeline order is topological
        column[n.step] = 1 + max((column[u] for u in n.upstream if u in column), default=-1)
    rows: dict[int, int] = {}
    out = []
    for n in nodes:
        c = column[n.step]
        out.append(replace(n, column=c, row=rows.get(c, 0)))
        rows[c] = rows.get(c, 0) + 1
    return out


def nodes_of(spec: PipelineSpec, states: dict[str, tuple[str, str]],
             executed: dict[str, str]) -> list[Node]:
    """Nodes from a spec and each step's (state, reason); marks "stale" downstream."""
    out: list[Node] = []
    not_fresh: set[str] = set()
    for s in spec.steps:
        state, reason = states.get(s.name, (NEVER_RUN, ""))
        if state == UP_TO_DATE and not_fresh.intersection(s.upstream):
            late = sorted(not_fresh.intersection(s.upstream))
            state, reason = STALE, f"{', '.join(late)} must run first"
        if state != UP_TO_DATE:
            not_fresh.add(s.name)
        out.append(Node(s.name, s.upstream, state, reason, executed.get(s.name, "")))
    return layout(out)


def load(root: Path) -> list[Node]:
    """The project's steps with their state, from the notebooks as they are now."""
    return load_with_spec(root)[0]


def load_with_spec(root: Path) -> tuple[list[Node], PipelineSpec]:
    """load(), and the spec it was built from."""
    spec, files = compile_mod.render(root)
    lay = Layout(root)
    states: dict[str, tuple[str, str]] = {}
    executed: dict[str, str] = {}
    for st in statuses(root, spec):
        states[st.step] = (st.status, st.reason)
        path = lay.executed(st.step)
        if path.exists():
            executed[st.step] = rel_executed(st.step)
            if st.status != UP_TO_DATE and _failed(path):
                states[st.step] = (FAILED, "its last run raised: open its executed notebook")
        step_file = root / STEPS / f"{st.step}.ipynb"
        rendered = files.get(f"{STEPS}/{st.step}.ipynb")
        if st.status == UP_TO_DATE and (not step_file.exists()
                                        or step_file.read_text(encoding="utf-8") != rendered):
            states[st.step] = (CHANGED, "the notebook changed since the last compile")
    return nodes_of(spec, states, executed), spec


_PROGRESS = re.compile(r"^([a-z_][a-z0-9_]*): (running|done|failed|up to date)$")


def progress(line: str) -> tuple[str, str] | None:
    """(step, state) from a line of `mlops-nb run`'s output (`train: running`), or None."""
    m = _PROGRESS.match(line.strip())
    return (m.group(1), m.group(2)) if m else None


def advance(nodes: list[Node], step: str, state: str) -> list[Node]:
    return [replace(n, state=state, reason="") if n.step == step else n for n in nodes]


def link(executed: str, root: Path, cwd: Path | None = None) -> str:
    """The executed notebook's path relative to the kernel's folder (JupyterLab opens a
    relative link of an output in a new tab)."""
    return os.path.relpath(root / executed, cwd or Path.cwd()).replace(os.sep, "/")


def rows(nodes: list[Node]) -> tuple[list[str], list[list[str]]]:
    header = ["step", "state", "after", "executed notebook"]
    return header, [[n.step, n.state + (f" ({n.reason})" if n.reason else ""),
                     ", ".join(n.upstream), n.executed] for n in nodes]


def text(nodes: list[Node]) -> str:
    return text_table(*rows(nodes))


def table_html(nodes: list[Node], root: Path) -> str:
    header, body = rows(nodes)
    out = html_table(header, body, css="mlops-pipeline", left=4)
    for n in nodes:  # the executed-notebook cell becomes a link
        if n.executed:
            href = html.escape(link(n.executed, root))
            cell = f"<td class=\"l\">{html.escape(n.executed)}</td>"
            # no target: JupyterLab opens a relative link of an output as a tab of its own
            # (target="_blank" made a new browser window)
            out = out.replace(cell, f'<td class="l"><a href="{href}">'
                                    f"{html.escape(n.executed)}</a></td>", 1)
    return out


def svg(nodes: list[Node], *, box: tuple[int, int] = (120, 34), gap: tuple[int, int] = (50, 16)
        ) -> str:
    """The DAG as an SVG: a box per step coloured by state, an arrow per edge."""
    w, h = box
    gx, gy = gap
    span = {(c.step, n.step): n.column - c.column for n in nodes for c in nodes
            if c.step in n.upstream}
    lift = 12 * max((s - 1 for s in span.values()), default=0)  # room for arcs over boxes
    top = 10 + lift
    pos = {n.step: (10 + n.column * (w + gx), top + n.row * (h + gy)) for n in nodes}
    width = 20 + (max((n.column for n in nodes), default=0) + 1) * (w + gx) - gx
    height = top + 10 + (max((n.row for n in nodes), default=0) + 1) * (h + gy) - gy
    # ids are global to the page: two DAGs with one marker id lose their arrowheads when
    # the first is redrawn or removed, so each drawing has its own
    marker = f"mlops-arrow-{uuid.uuid4().hex[:12]}"
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="mlops-dag" width="{width}"'
             f' height="{height}" font-family="sans-serif" font-size="12">',
             f'<defs><marker id="{marker}" markerWidth="8" markerHeight="8" refX="8" refY="4"'
             ' orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#555"/></marker></defs>']
    for (u, v), s in span.items():
        x1, y1 = pos[u][0] + w, pos[u][1] + h // 2
        x2, y2 = pos[v][0], pos[v][1] + h // 2
        if s > 1 and y1 == y2:  # an edge over other boxes of its row: an arc above them
            x1, y1, x2, y2 = x1 - w // 2, pos[u][1], x2 + w // 2, pos[v][1]
            peak = min(y1, y2) - 12 * (s - 1)
            d = f"M{x1},{y1} C{x1},{peak} {x2},{peak} {x2},{y2}"
        else:
            d = f"M{x1},{y1} L{x2},{y2}"
        parts.append(f'<path d="{d}" fill="none" stroke="#555"'
                     f' marker-end="url(#{marker})"/>')
    for n in nodes:
        x, y = pos[n.step]
        title = html.escape(f"{n.step}: {n.state}" + (f" ({n.reason})" if n.reason else ""))
        parts.append(f'<g data-step="{html.escape(n.step)}"><title>{title}</title>'
                     f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6"'
                     f' fill="{COLORS.get(n.state, "#fff")}" stroke="#333"/>'
                     f'<text x="{x + 6}" y="{y + 14}" font-weight="bold">'
                     f"{html.escape(n.step)}</text>"
                     f'<text x="{x + 6}" y="{y + 28}">{html.escape(n.state)}</text></g>')
    parts.append("</svg>")
    return "".join(parts)
