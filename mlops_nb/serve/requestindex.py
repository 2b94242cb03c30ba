"""Where each request of the serving log is, by its id: the index the labels of /feedback and
`mlops-nb feedback` are checked against (feedback.py).

Rule: the log is read as it grows (feedlog.Tail), and memory is an id and an offset per logged
request (the log itself is bounded); an id logged twice (a client that reused its
X-Request-Id) is ambiguous and matches nothing, and a record is handed out only when its line
reads back whole with that id and the fields of a served prediction.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from mlops_nb.serve import feedlog, shadow

_REQUEST = re.compile(rb'\{"ts":[-+0-9.eE]+,"request":"((?:[^"\\\n]|\\.)*)",')
_AMBIGUOUS = -1


class RequestIndex:
    """Where each request id of the serving log is: (file, offset), read as the log grows;
    memory is an id and an offset per logged request (the log itself is bounded)."""

    def __init__(self, folder: Path) -> None:
        from mlops_nb.serve.reqlog import PATTERN

        self.tail = feedlog.Tail(folder, PATTERN)
        self.by_file: dict[feedlog.FileKey, dict[str, int]] = {}
        self.shadows: dict[feedlog.FileKey, dict[str, int]] = {}  # serve --shadow lines

    def refresh(self) -> None:
        for key, offset, raw in self.tail.new_lines():
            match = _REQUEST.match(raw) if raw is not None else None
            if match is None:
                sid = shadow.request_of(raw) if raw is not None else None
                if sid is not None:
                    ids = self.shadows.setdefault(key, {})
                    ids[sid] = _AMBIGUOUS if sid in ids else offset
                continue
            try:
                rid = json.loads(b'"' + match.group(1) + b'"')
            except ValueError:
                continue
            ids = self.by_file.setdefault(key, {})
            ids[rid] = _AMBIGUOUS if rid in ids else offset
        for key in self.tail.gone:
            self.by_file.pop(key, None)
            self.shadows.pop(key, None)

    def find_shadow(self, rid: str) -> dict[str, Any] | None:
        """The shadow line of request `rid` (serve --shadow), if there is one usable."""
        hits = [(key, ids[rid]) for key, ids in self.shadows.items() if rid in ids]
        if len(hits) != 1 or hits[0][1] == _AMBIGUOUS:
            return None
        raw = self.tail.read_at(*hits[0])
        try:
            rec = json.loads(raw) if raw is not None else None
        except (ValueError, RecursionError):
            return None
        return rec if isinstance(rec, dict) and rec.get("request") == rid else None

    def find(self, rid: str) -> dict[str, Any] | str:
        """The logged request `rid` ({ts, model, version, prediction}), or why not."""
        hits = [(key, ids[rid]) for key, ids in self.by_file.items() if rid in ids]
        if not hits:
            return "unknown request id (not in the serving log: never served here, or" \
                   " rotated out of it; with several workers, one made a moment ago may" \
                   " not be written yet: send it again)"
        if len(hits) > 1 or hits[0][1] == _AMBIGUOUS:
            return "ambiguous request id: several served requests carry it (the client" \
                   " reused its X-Request-Id); labels need a unique id"
        raw = self.tail.read_at(*hits[0])
        try:
            rec = json.loads(raw) if raw is not None else None
        except (ValueError, RecursionError):
            rec = None
        if not isinstance(rec, dict) or rec.get("request") != rid or not _served(rec):
            return "its record in the serving log is unreadable or gone (rotated out)"
        return rec


def _served(rec: dict[str, Any]) -> bool:
    ts, version, pred = rec.get("ts"), rec.get("version"), rec.get("prediction")
    return (isinstance(ts, int | float) and not isinstance(ts, bool) and math.isfinite(ts)
            and isinstance(version, int) and not isinstance(version, bool) and version > 0
            and isinstance(pred, list) and len(pred) == rec.get("rows"))
