"""Plain text and HTML forms of a table: what every widget shows where no widget can render.

A notebook executed headless (papermill, nbclient) or opened where ipywidgets is not
installed keeps these forms, so it shows a readable table instead of a bare model id.
Pure functions: rows in, strings out; values are escaped in the HTML form.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

STYLE = (
    "<style>.mlops-nb table{border-collapse:collapse;font-size:12px}"
    ".mlops-nb th,.mlops-nb td{border:1px solid #ccc;padding:2px 6px;text-align:right}"
    ".mlops-nb th{background:#f3f3f3}.mlops-nb td.l,.mlops-nb th.l{text-align:left}"
    ".mlops-nb tr.base td{font-weight:bold}.mlops-nb tr.failed td{color:#b00}"
    ".mlops-nb .err{color:#b00}</style>"
)


def cell_text(value: Any) -> str:
    """A value as a table cell shows it: floats shortened, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def text_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell, a rule under the header."""
    cells = [[cell_text(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(out)


def html_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, css: str = "",
               left: int = 1, row_classes: Sequence[str] | None = None) -> str:
    """An HTML table; the first `left` columns are left-aligned (names), the rest right."""
    def align(i: int) -> str:
        return ' class="l"' if i < left else ""

    head = "".join(f"<th{align(i)}>{html.escape(c)}</th>" for i, c in enumerate(columns))
    body = []
    for n, row in enumerate(rows):
        cls = f' class="{row_classes[n]}"' if row_classes and row_classes[n] else ""
        tds = "".join(f"<td{align(i)}>{html.escape(cell_text(v))}</td>"
                      for i, v in enumerate(row))
        body.append(f"<tr{cls}>{tds}</tr>")
    return (f'<div class="mlops-nb" style="overflow-x:auto">{STYLE}'
            f'<table class="{html.escape(css)}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def html_message(text: str, *, error: bool = False) -> str:
    cls = "err" if error else ""
    return f'<div class="mlops-nb"><span class="{cls}">{html.escape(text)}</span></div>'


def scatter_svg(points: Sequence[tuple[float, float, str]], xlabel: str, ylabel: str,
                *, size: tuple[int, int] = (420, 260)) -> str:
    """An SVG scatter plot with a line through the points in x order, each labelled on hover.

    Drawn here rather than with matplotlib so it renders the same in the widget, in the
    HTML fallback and in a browser without a kernel.
    """
    w, h = size
    pad = 64
    if not points:
        return html_message(f"no experiment has both {xlabel} and {ylabel} as numbers")
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    sx = (w - 2 * pad) / ((x1 - x0) or 1)
    sy = (h - 2 * pad) / ((y1 - y0) or 1)

    def at(x: float, y: float) -> tuple[float, float]:
        return pad + (x - x0) * sx, h - pad - (y - y0) * sy

    coords = [at(x, y) for x, y, _ in points]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="#1976d2"><title>'
        f"{html.escape(name)}: {html.escape(cell_text(px))}, {html.escape(cell_text(py))}"
        f"</title></circle>" for (x, y), (px, py, name) in zip(coords, points, strict=True))
    ticks = (f'<text x="{pad}" y="{h - pad + 16}">{html.escape(cell_text(x0))}</text>'
             f'<text x="{w - pad}" y="{h - pad + 16}" text-anchor="end">'
             f"{html.escape(cell_text(x1))}</text>"
             f'<text x="{pad - 4}" y="{h - pad}" text-anchor="end">'
             f"{html.escape(cell_text(y0))}</text>"
             f'<text x="{pad - 4}" y="{pad}" text-anchor="end">{html.escape(cell_text(y1))}'
             "</text>")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="mlops-plot" width="{w}"'
            f' height="{h}" font-family="sans-serif" font-size="11">'
            f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#333"/>'
            f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#333"/>'
            f'<polyline points="{path}" fill="none" stroke="#90caf9"/>{dots}{ticks}'
            f'<text x="{w / 2}" y="{h - 6}" text-anchor="middle">{html.escape(xlabel)}</text>'
            f'<text x="12" y="{h / 2}" text-anchor="middle" transform="rotate(-90 12 {h / 2})">'
            f"{html.escape(ylabel)}</text></svg>")
