"""The data-validation report: one plain dict, written as JSON for machines and HTML for people.

Status is `pass` (nothing found, every column compared), `warn` (something found but not
blocking, or columns that could not be compared) or `fail` (a blocking anomaly or data-set
drift). The raw statistic of every column is always in the report, drifted or not. It holds
no time stamp: the same data gives the same bytes (when it ran is in the lineage store).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from mlops_nb.artifacts import atomic
from mlops_nb.guards.validation.drift import DriftResult
from mlops_nb.guards.validation.schema import Anomaly


def build(name: str, rows: int, anomalies: list[Anomaly], drift: DriftResult | None, *,
          schema_path: str | None, warn_only: bool,
          reference_anomalies: list[Anomaly] | None = None) -> dict[str, Any]:
    problems = [a.message for a in anomalies]
    problems += [f"reference data: {a.message}" for a in reference_anomalies or []]
    if drift is not None and drift.dataset_drift:
        problems.append(f"data set drift: {len(drift.drifted_columns)} of"
                        f" {len(drift.columns) - len(drift.unchecked)} column(s) drifted"
                        f" ({', '.join(drift.drifted_columns)}), share"
                        f" {drift.share_drifted:.2f} >= {drift.dataset_share}")
    notes = []
    if drift is not None:
        notes += [f"column '{c}' drifted but the data set is under its drift share"
                  for c in drift.drifted_columns if not drift.dataset_drift]
        notes += [f"column '{c.column}' {c.note}" for c in drift.columns if c.drifted is None]
    else:
        notes.append("drift not checked: no reference data given")
    if problems:
        status = "warn" if warn_only else "fail"
    else:
        status = "warn" if any(not n.startswith("drift not checked") for n in notes) else "pass"
    return {
        "name": name,
        "status": status,
        "blocking": bool(problems) and not warn_only,
        "warn_only": warn_only,
        "rows": rows,
        "schema": schema_path,
        "problems": problems,
        "notes": notes,
        "anomalies": [a.to_dict() for a in anomalies],
        "reference_anomalies": [a.to_dict() for a in reference_anomalies or []],
        "drift": drift.to_dict() if drift is not None else None,
    }


def _atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, text)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def to_html(report: dict[str, Any]) -> str:
    e = html.escape
    colour = {"pass": "#1a7f37", "warn": "#9a6700", "fail": "#cf222e"}[report["status"]]
    parts = [
        "<!doctype html><meta charset='utf-8'>",
        f"<title>Data validation: {e(report['name'])}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}"
        ".drift{background:#ffebe9}</style>",
        f"<h1>Data validation: {e(report['name'])}</h1>",
        f"<p><b style='color:{colour}'>{e(report['status'].upper())}</b>"
        f" &middot; {report['rows']} rows &middot; schema {e(str(report['schema']))}</p>",
    ]
    for title, items in (("Problems", report["problems"]), ("Notes", report["notes"])):
        if items:
            parts.append(f"<h2>{title}</h2><ul>")
            parts += [f"<li>{e(p)}</li>" for p in items]
            parts.append("</ul>")
    anomalies = report["anomalies"] + report["reference_anomalies"]
    if anomalies:
        parts.append("<h2>Anomalies</h2><table><tr><th>kind</th><th>column</th><th>count</th>"
                     "<th>examples</th><th>message</th></tr>")
        for a in anomalies:
            parts.append(f"<tr><td>{e(a['kind'])}</td><td>{e(str(a['column']))}</td>"
                         f"<td>{a['count']}</td><td>{e(json.dumps(a['examples']))}</td>"
                         f"<td>{e(a['message'])}</td></tr>")
        parts.append("</table>")
    drift = report.get("drift")
    if drift:
        parts.append(f"<h2>Drift</h2><p>share of drifted columns {drift['share_drifted']:.2f}"
                     f" (data set drifts at {drift['dataset_share']})</p>")
        parts.append("<table><tr><th>column</th><th>kind</th><th>method</th><th>statistic</th>"
                     "<th>threshold</th><th>drifted</th><th>distance</th><th>PSI</th>"
                     "<th>rows ref/cur</th>"
                     "<th>note</th></tr>")
        for c in drift["columns"]:
            cls = " class='drift'" if c["drifted"] else ""
            parts.append(
                f"<tr{cls}><td>{e(c['column'])}</td><td>{c['kind']}</td><td>{c['method']}</td>"
                f"<td>{_fmt(c['statistic'])}</td><td>{_fmt(c['threshold'])}</td>"
                f"<td>{'not checked' if c['drifted'] is None else c['drifted']}</td>"
                f"<td>{_fmt(c['distance'])} {c['distance_method'] or ''}</td>"
                f"<td>{_fmt(c['psi'])}</td>"
                f"<td>{c['reference_rows']}/{c['current_rows']}</td><td>{e(c['note'])}</td></tr>")
        parts.append("</table>")
    return "\n".join(parts) + "\n"


def write(report: dict[str, Any], folder: Path, stem: str) -> tuple[Path, Path]:
    """Write STEM.json and STEM.html under folder; returns both paths."""
    js, ht = folder / f"{stem}.json", folder / f"{stem}.html"
    _atomic(js, json.dumps(report, indent=1, sort_keys=False, default=str) + "\n")
    _atomic(ht, to_html(report))
    return js, ht
