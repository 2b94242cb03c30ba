"""Online quality in the monitoring report: a table of each version's metrics against their
thresholds, a plot of each metric over time per version (a PNG inside the HTML), and the
lines `mlops-nb monitor` prints. Everything shown is escaped; the plot is drawn from numbers.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any


def _num(v: Any) -> str:
    return "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def _shadow(v: dict[str, Any]) -> str:
    """How a version's shadow predictions are marked (serve --shadow)."""
    n = v.get("shadow") or 0
    return "" if not n else ", shadow" if n == v["labelled"] else f", {n} of them shadow"


def lines(q: dict[str, Any]) -> list[str]:
    """What `mlops-nb monitor` prints about online quality."""
    th = q["thresholds"]
    out = [f"online quality: {q['status'].upper()} ({q['labels']} label(s); at least"
           f" {th['min_labelled']} per version for a verdict)"]
    for version, v in q["versions"].items():
        head = f"  version {version} ({v['stage']}, {v['kind']}{_shadow(v)}):" \
               f" {v['labelled']} labelled"
        if not v["enough"]:
            head += f", fewer than {th['min_labelled']}: no verdict"
        out.append(head)
        for m in v["metrics"].values():
            limits = [f"floor {_num(m['floor'])}" if m["floor"] is not None else "",
                      f"offline {_num(m['offline'])} (allowed {_num(m['allowed'])})"
                      if m["offline"] is not None else ""]
            shown = "; ".join(x for x in limits if x) or "no threshold"
            out.append(f"    {m['name']:<12} {_num(m['value']):>8} [{_num(m['low'])},"
                       f" {_num(m['high'])}] {shown}: {m['status'].upper()}")
    skipped = q.get("skipped") or {}
    if skipped.get("count"):
        out.append(f"  feedback log: {skipped['count']} bad line(s) skipped")
    out += [f"  note: {n}" for n in q.get("notes", [])]
    return out


def plot(q: dict[str, Any]) -> bytes | None:
    """One panel per metric: its value per window, a line per version, the interval as
    error bars, the floor dashed, each version's allowed drop from offline dotted. None
    when there is nothing to draw."""
    names = list(dict.fromkeys(n for v in q["versions"].values() for n in v["metrics"]))
    if not names:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from datetime import datetime

    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(names), 1, figsize=(7, 2.4 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        for version, v in q["versions"].items():
            pts = [(datetime.fromisoformat(w["start"]), w["metrics"][name])
                   for w in v["windows"] if w["metrics"].get(name, {}).get("value") is not None]
            if not pts:
                continue
            xs = [t for t, _ in pts]
            ys = [m["value"] for _, m in pts]
            err = [[max(0.0, m["value"] - (m["low"] if m["low"] is not None else m["value"]))
                    for _, m in pts],
                   [max(0.0, (m["high"] if m["high"] is not None else m["value"]) - m["value"])
                    for _, m in pts]]
            drawn = ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3,
                                label=f"version {version}{_shadow(v)}")
            allowed = v["metrics"].get(name, {}).get("allowed")
            if allowed is not None:  # the worst value the version's offline one allows
                ax.axhline(allowed, linestyle=":", color=drawn.lines[0].get_color())
        floor = q["thresholds"]["floors"].get(name)
        if floor is not None:
            ax.axhline(floor, linestyle="--", color="#cf222e", label="floor")
        ax.set_title(name)
        ax.legend(loc="best", fontsize="small")
    fig.autofmt_xdate()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def to_html(q: dict[str, Any]) -> str:
    e = html.escape
    colour = {"held": "#1a7f37", "breached": "#cf222e"}.get(q["status"], "#9a6700")
    th = q["thresholds"]
    parts = [f"<h2>Online quality</h2><p><b style='color:{colour}'>"
             f"{e(q['status'].upper())}</b> &middot; {q['labels']} label(s) &middot; a verdict"
             f" needs {th['min_labelled']} labelled records; allowed drop from offline"
             f" {th['max_drop']:.1%}; {th['confidence']:.0%} intervals</p>"]
    parts += [f"<p>{e(n)}</p>" for n in q.get("notes", [])]
    if q["versions"]:
        parts.append("<table><tr><th>version</th><th>metric</th><th>online</th>"
                     "<th>interval</th><th>labelled</th><th>offline</th><th>allowed</th>"
                     "<th>floor</th><th>verdict</th></tr>")
        for version, v in q["versions"].items():
            for m in v["metrics"].values():
                parts.append(
                    f"<tr><td>{e(str(version))} ({e(str(v['stage']))}{e(_shadow(v))})</td>"
                    f"<td>{e(m['name'])}</td><td>{_num(m['value'])}</td>"
                    f"<td>{_num(m['low'])} to {_num(m['high'])} ({e(m['interval'])})</td>"
                    f"<td>{m['labelled']}</td><td>{_num(m['offline'])}</td>"
                    f"<td>{_num(m['allowed'])}</td><td>{_num(m['floor'])}</td>"
                    f"<td>{e(m['status'])}</td></tr>")
        parts.append("</table>")
        png = plot(q)
        if png:
            parts.append("<p><img alt='online metrics over time, per version' src='data:"
                         f"image/png;base64,{base64.b64encode(png).decode()}'></p>")
    return "\n".join(parts)
