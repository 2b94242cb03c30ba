"""Read the serving log (JSON lines written by serve.reqlog) back into a table.

A torn last line (a server killed mid-write) or a line that is not a served request is skipped
and counted, never fatal: the log is evidence, not state.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_nb.serve.reqlog import log_files

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedData:
    features: Any  # DataFrame: one row per served record, the request's columns
    predictions: Any  # Series, aligned with features
    versions: dict[int, int]  # model version -> records served by it (before filtering)
    files: tuple[Path, ...]
    skipped: int  # unreadable lines


def read(folder: Path, *, version: int | None = None, since: float | None = None) -> ServedData:
    """The records served (by `version`, if given; after `since`, a UNIX time, if given)."""
    import pandas as pd

    files = tuple(log_files(folder))
    frames: list[Any] = []
    preds: list[Any] = []
    versions: dict[int, int] = {}
    skipped = 0
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            for text in f:
                try:
                    rec = json.loads(text)
                    x, v, n = rec["x"], int(rec["version"]), int(rec["rows"])
                    pred = rec["prediction"]
                    if not isinstance(x, dict) or not isinstance(pred, list) or len(pred) != n \
                            or any(not isinstance(c, list) or len(c) != n for c in x.values()):
                        raise ValueError("not a served request")
                except (ValueError, KeyError, TypeError):
                    skipped += 1
                    continue
                versions[v] = versions.get(v, 0) + n
                if (version is not None and v != version) or (
                        since is not None and float(rec.get("ts", 0)) < since):
                    continue
                frames.append(pd.DataFrame(x))
                preds.extend(pred)
    if skipped:
        log.warning("%s: skipped %d unreadable line(s)", folder, skipped)
    features = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return ServedData(features, pd.Series(preds, name="prediction"),
                      versions, files, skipped)
