"""The CI report: what `mlops-nb ci run` found, as Markdown for a pull-request comment and as
JSON, with a plot of each metric against the base commit.

Figures come from DVC itself (`dvc metrics diff`, `dvc params diff` against the base), the
gate's decisions from the run's lineage store, data validation from the reports the
pipeline's `validate_data` calls wrote. Text from the project (metric names, reasons) is
escaped for Markdown tables; nothing is pasted into code.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from mlops_nb.artifacts import atomic
from mlops_nb.ci import celltests
from mlops_nb.ci.result import CiResult
from mlops_nb.ci.workspace import Workspace

REPORT_DIR = "ci-report"


def _dvc_out(dvc: str, args: list[str], ws: Workspace) -> str:
    res = subprocess.run([dvc, *args], cwd=ws.path, capture_output=True, text=True,
                         env={**os.environ, **ws.env})
    return res.stdout if res.returncode == 0 else ""


def collect(result: CiResult, ws: Workspace, dvc: str) -> None:
    """Fill the figures of `result` from the worktree after the run."""
    from mlops_nb.guards.lineage import LineageStore

    base = [result.base] if result.base else []
    if result.base:
        result.metrics_md = _dvc_out(dvc, ["metrics", "diff", *base, "--md"], ws)
        result.params_md = _dvc_out(dvc, ["params", "diff", *base, "--md"], ws)
        raw = _dvc_out(dvc, ["metrics", "diff", *base, "--json"], ws)
        try:
            result.metrics_diff = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError:
            result.metrics_diff = {}
    runs = LineageStore(Path(ws.env["MLOPS_NB_LINEAGE"])).runs(limit=1) \
        if "MLOPS_NB_LINEAGE" in ws.env else []
    result.models = runs[0]["models"] if runs else []
    for path in sorted(ws.path.glob("outputs/*/*_validation.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(doc, dict):
            doc["file"] = path.relative_to(ws.path).as_posix()
            result.validation.append(doc)


def cell(text: Any) -> str:
    """Text made safe for one Markdown table cell."""
    s = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    for ch in "<>`*_[]":
        s = s.replace(ch, "\\" + ch)
    return s[:300]


def markdown(result: CiResult, plots: list[str]) -> str:
    verdict = "passed" if not result.failed else \
        "failed at: " + ", ".join(c.name for c in result.failed)
    base = f"`{result.base_ref}` ({result.base[:7]})" if result.base else \
        f"`{result.base_ref}` (not found: no comparison)"
    lines = ["# mlops-nb CI report", "",
             f"Commit `{result.commit[:7]}` against {cell(base) if not result.base else base}:"
             f" **{verdict}**", ""]
    if result.dirty:
        lines += ["Uncommitted changes were left out: CI tests the commit.", ""]
    lines += ["| check | result | time | detail |", "|---|---|---|---|"]
    for c in result.checks:
        lines.append(f"| {c.name} | {c.outcome} | {c.seconds:.1f} s | {cell(c.detail)} |")
    if result.metrics_md.strip():
        lines += ["", f"## Metrics against {result.base_ref}", "", result.metrics_md.strip()]
    elif result.base:
        lines += ["", "## Metrics", "", "No metric changed."]
    if result.params_md.strip():
        lines += ["", f"## Parameters against {result.base_ref}", "", result.params_md.strip()]
    lines += _models(result) + _validation(result) + _cells(result)
    for plot in plots:
        lines += ["", f"![{cell(Path(plot).stem)}]({plot})"]
    for c in result.failed:
        if c.output:
            lines += ["", f"## {c.name}: output", "", "```text", c.output.replace("```", "'''"),
                      "```"]
    return "\n".join(lines) + "\n"


def _models(result: CiResult) -> list[str]:
    if not result.models:
        return []
    out = ["", "## Model gate", "", "| model | decision | version | reasons |",
           "|---|---|---|---|"]
    for m in result.models:
        reasons = "; ".join(m.get("reasons") or []) or "-"
        out.append(f"| {cell(m.get('name'))} | {cell(m.get('decision'))} |"
                   f" {cell(m.get('version') or '-')} | {cell(reasons)} |")
    return out


def _validation(result: CiResult) -> list[str]:
    if not result.validation:
        return []
    out = ["", "## Data validation", ""]
    for doc in result.validation:
        out.append(f"- `{doc['file']}`: **{cell(doc.get('status', '?'))}**")
        for p in (doc.get("problems") or [])[:20]:
            out.append(f"  - {cell(p)}")
        drift = doc.get("drift") or {}
        drifted = drift.get("drifted_columns") if isinstance(drift, dict) else None
        if drifted:
            out.append(f"  - drifted columns: {cell(', '.join(map(str, drifted)))}")
    return out


def _cells(result: CiResult) -> list[str]:
    if not result.cells:
        return []
    out = ["", "## Notebook tests", ""]
    for r in result.cells:
        mark = "pass" if r.outcome == celltests.PASSED else r.outcome
        where = f"{r.notebook} cell {r.cell} [test:{r.step}]"
        tail = f": line {r.line}: {r.text} ({r.message})" if r.outcome != celltests.PASSED \
            and r.line else (f": {r.message}" if r.outcome != celltests.PASSED else "")
        out.append(f"- {mark}: {cell(where)}{cell(tail)}")
    return out


def plot_metrics(result: CiResult, folder: Path, root: Path) -> list[str]:
    """One bar chart of every numeric metric, base against this commit (PNG)."""
    rows = [(f"{Path(f).parent.name}: {m}", v.get("old"), v.get("new"))
            for f, ms in sorted(result.metrics_diff.items()) if isinstance(ms, dict)
            for m, v in sorted(ms.items()) if isinstance(v, dict)]
    rows = [(n, o, w) for n, o, w in rows
            if isinstance(w, (int, float)) and not isinstance(w, bool)]
    if not rows:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(rows)))
    ys = range(len(rows))
    old = [o if isinstance(o, (int, float)) else 0 for _, o, _ in rows]
    ax.barh([y + 0.2 for y in ys], old, height=0.4, label=result.base_ref, color="#9aa")
    new = [float(w) for _, _, w in rows if w is not None]
    ax.barh([y - 0.2 for y in ys], new, height=0.4, label="this commit",
            color="#2a7")
    ax.set_yticks(list(ys), [n[:40] for n, _, _ in rows])
    ax.legend(loc="lower right")
    ax.set_title("metrics: base against this commit")
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic.write_bytes(folder / "metrics.png", buf.getvalue(), root=root)
    return ["metrics.png"]


def check_writable(root: Path) -> None:
    """Refuse a symlinked ci-report/ (or report file) before the run, not after it."""
    for name in ("report.md", "report.json", "metrics.png"):
        atomic.refuse_symlinks(root / REPORT_DIR / name, root=root)


def write(result: CiResult, root: Path) -> Path:
    """ci-report/report.md (+ report.json and plots) in the project; returns report.md."""
    folder = root / REPORT_DIR
    atomic.make_folder(folder, root=root)
    plots = plot_metrics(result, folder, root)
    md = folder / "report.md"
    atomic.write_text(md, markdown(result, plots), root=root)
    doc = {"commit": result.commit, "base": result.base, "base_ref": result.base_ref,
           "passed": not result.failed,
           "checks": [c.__dict__ for c in result.checks],
           "cells": [c.as_json() for c in result.cells], "metrics": result.metrics_diff,
           "models": result.models, "validation": [
               {k: d.get(k) for k in ("file", "status", "problems")} for d in result.validation]}
    atomic.write_text(folder / "report.json", json.dumps(doc, indent=1, default=str) + "\n",
                      root=root)
    return md
