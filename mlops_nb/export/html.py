"""An executed step notebook as one self-contained HTML page, without nbconvert.

Why not nbconvert: each KFP task is a fresh interpreter, and importing nbconvert and
nbformat cost it more than a second of CPU (a fifth of a small step's imports), for a page
that only has to show what ran. The page shows every cell: markdown as text, code with its
execution count, and outputs as Jupyter shows them (HTML outputs as they are, as nbconvert
includes them; images as data URIs; text and tracebacks escaped, ANSI colours removed).
"""

from __future__ import annotations

import base64
import binascii
import html
import re
from typing import Any

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
STYLE = """body{font-family:sans-serif;margin:2em;max-width:70em}
pre{background:#f7f7f7;padding:.5em;overflow-x:auto;white-space:pre-wrap}
.in{border-left:3px solid #4a90d9}.err{background:#fdd}.md{border-left:3px solid #ccc}
.count{color:#888;font-size:small}img{max-width:100%}"""
IMAGES = ("image/png", "image/jpeg", "image/gif", "image/svg+xml")


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value or "")


def _pre(text: str, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<pre{attr}>{html.escape(ANSI.sub('', text))}</pre>"


def _image(mime: str, data: str) -> str | None:
    if mime == "image/svg+xml":
        data = base64.b64encode(data.encode()).decode()
    data = re.sub(r"\s+", "", data)
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None
    return f'<img src="data:{mime};base64,{data}">'


def _output(out: dict[str, Any]) -> str:
    kind = out.get("output_type")
    if kind == "stream":
        return _pre(_text(out.get("text")), "err" if out.get("name") == "stderr" else "")
    if kind == "error":
        trace = "\n".join(_text(t) for t in out.get("traceback", []))
        return _pre(trace or f"{out.get('ename')}: {out.get('evalue')}", "err")
    data = out.get("data") or {}
    if "text/html" in data:
        return f"<div>{_text(data['text/html'])}</div>"
    for mime in IMAGES:
        if mime in data:
            img = _image(mime, _text(data[mime]))
            if img:
                return img
    return _pre(_text(data.get("text/plain"))) if "text/plain" in data else ""


def render(doc: dict[str, Any], title: str) -> str:
    """The page of the executed notebook `doc` (nbformat 4 JSON)."""
    parts = ["<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\">",
             f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for cell in doc.get("cells", []):
        source = _text(cell.get("source"))
        if cell.get("cell_type") == "markdown":
            parts.append(_pre(source, "md"))
            continue
        if cell.get("cell_type") != "code":
            continue
        count = cell.get("execution_count")
        parts.append(f'<div class="count">In [{html.escape(str(count or " "))}]:</div>')
        parts.append(_pre(source, "in"))
        parts += [_output(o) for o in cell.get("outputs", []) if isinstance(o, dict)]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
