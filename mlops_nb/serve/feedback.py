"""Ground truth for served predictions: checked against the serving log, stored all or nothing.

A submission is a list of labels, each `{"request": id, "index": record (default 0),
"label": value}`: the request id /predict answered with, the record's place in that request
(0 for a single record), and the true value. It is stored only when every entry is good
(`FeedbackInvalid` names each bad one, and nothing of the submission is stored):
- the request id is in the serving log (once: an id a client reused for several requests
  is ambiguous), and the index is one of its records;
- the label has the type of the served version's target: one of a classifier's classes
  (strictly: 1 is no "1", true is no 1), a finite number for a regressor;
- no label is already stored for that request and record, nor given twice in the
  submission: a stored label is never overwritten.
Checking and appending happen while holding the feedback folder's lock (feedlog.locked), so
concurrent writers (server processes, `mlops-nb feedback`) never store the same label twice.

The service runs this on one thread of its own (never the pool /predict uses), after waiting
(briefly) until the requests it served before are in the serving log, so a label sent right
after its prediction finds it.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_nb.serve import feedlog, shadow
from mlops_nb.serve.reqlog import RequestLog
from mlops_nb.serve.requestindex import RequestIndex

log = logging.getLogger(__name__)

MAX_LABELS = 10_000  # labels per request to /feedback (a file has no limit)
MAX_ERRORS = 50


@dataclass(frozen=True)
class FeedbackError:
    """One bad entry (None: the body itself): which entry, which field, what is wrong."""

    entry: int | None
    field: str | None
    message: str
    kind: str

    def to_dict(self, where: Callable[[int], str] | None = None) -> dict[str, Any]:
        return {"entry": self.entry, "field": self.field, "message": self.text(where),
                "type": self.kind}

    def text(self, where: Callable[[int], str] | None = None) -> str:
        if self.entry is None:
            return self.message
        return f"{(where or (lambda i: f'entry {i}'))(self.entry)}: {self.message}"


class FeedbackInvalid(Exception):
    """A submission had bad entries (`errors`); nothing of it was stored."""

    def __init__(self, errors: list[FeedbackError]) -> None:
        self.errors = errors
        super().__init__("; ".join(e.text() for e in errors[:5]))


@dataclass(frozen=True)
class Target:
    """What a version's labels must be: one of `classes` (a classifier) or a number."""

    classes: tuple[Any, ...] | None

    def problem(self, label: Any) -> str | None:
        """Why `label` is not a label of this target (None: it is)."""
        if self.classes is None:
            if isinstance(label, bool) or not isinstance(label, int | float):
                return f"label {_shown(label)} is not a number (the model is a regressor)"
            try:
                ok = math.isfinite(float(label)) and abs(float(label)) <= 1e300
            except OverflowError:
                ok = False
            return None if ok else f"label {_shown(label)} is not a finite number of a" \
                                   " sensible size"
        for c in self.classes:
            if type(label) is type(c) and label == c:
                return None
            if isinstance(c, float) and type(label) is int and label == c:
                return None
        return (f"label {_shown(label)} is not one of the model's classes"
                f" ({', '.join(_shown(c) for c in self.classes[:20])})")


    def from_text(self, text: str) -> Any:
        """A label read as text (a CSV cell) as the value it stands for: the class whose
        text it is, or a number for a regressor; the text itself when it is neither."""
        text = text.strip()
        if self.classes is None:
            try:
                return int(text)
            except ValueError:
                pass
            try:
                return float(text)
            except ValueError:
                return text
        for c in self.classes:
            if isinstance(c, bool) or isinstance(c, str):
                if (text.lower() == str(c).lower()) if isinstance(c, bool) else text == c:
                    return c
                continue
            try:
                if float(text) == c:
                    return c
            except (TypeError, ValueError):
                continue
        return text


def target_of(model: Any) -> Target:
    classes = getattr(model, "classes_", None)
    if classes is None:
        return Target(None)
    return Target(tuple(c.item() if hasattr(c, "item") else c for c in classes))


def _shown(value: Any, limit: int = 60) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_body(body: bytes) -> list[Any]:
    """The entries of a /feedback body `{"labels": [...]}`, or FeedbackInvalid."""
    def bad(message: str, kind: str = "body_invalid") -> FeedbackInvalid:
        return FeedbackInvalid([FeedbackError(None, None, message, kind)])

    try:
        data = json.loads(body, parse_constant=_no_constants)
    except RecursionError:
        raise bad("body: nested too deeply", "json_invalid") from None
    except ValueError as exc:
        raise bad(f"body: not valid JSON ({str(exc)[:120]})", "json_invalid") from None
    if not isinstance(data, dict) or "labels" not in data:
        raise bad('body: send {"labels": [{"request": ID, "index": N, "label": VALUE},'
                  ' ...]}')
    extra = [k for k in data if k != "labels"]
    if extra:
        raise bad(f"body: unknown field {_shown(extra[0])} (only 'labels')", "extra_forbidden")
    labels = data["labels"]
    if not isinstance(labels, list) or not labels:
        raise bad("body: 'labels' must be a list of at least one label")
    if len(labels) > MAX_LABELS:
        raise bad(f"body: {len(labels)} labels, at most {MAX_LABELS} per request (send more"
                  " in several requests, or use `mlops-nb feedback FILE`)", "too_long")
    return labels


def check_entry(i: int, entry: Any) -> tuple[tuple[str, int, Any] | None, list[FeedbackError]]:
    """(request, index, label) of one entry, or the errors of its shape."""
    if not isinstance(entry, dict):
        return None, [FeedbackError(i, None, "not an object with request, index and label",
                                    "entry_invalid")]
    errors = [FeedbackError(i, _short(str(k)), f"unknown field {_shown(str(k))}",
                            "extra_forbidden")
              for k in list(entry)[:5] if k not in ("request", "index", "label")]
    rid, index, label = entry.get("request"), entry.get("index", 0), entry.get("label")
    if not feedlog.valid_id(rid):
        errors.append(FeedbackError(i, "request", f"request id {_shown(rid)} is not one the"
                                    f" service gives (1 to {feedlog.MAX_ID} printable"
                                    " characters)", "request_invalid"))
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 2**31:
        errors.append(FeedbackError(i, "index", f"index {_shown(index)} is not a record"
                                    " index (0, 1, ...)", "index_invalid"))
    if "label" not in entry or label is None:
        errors.append(FeedbackError(i, "label", "no label", "label_missing"))
    elif not feedlog.scalar(label):
        errors.append(FeedbackError(i, "label", f"label {_shown(label)} is not a single"
                                    " finite value", "label_type"))
    return (None if errors else (str(rid), int(index), label)), errors


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


class FeedbackStore:
    """The feedback of one model's serving log folder."""

    def __init__(self, folder: Path, name: str, target: Callable[[int], Target], *,
                 max_bytes: int = 64 * 2**20, max_files: int = 20,
                 reqlog: RequestLog | None = None,
                 settle: Callable[[float], bool] | None = None) -> None:
        self.folder = folder
        self.settle = settle  # waits for the shadow's predictions (serve --shadow)
        self.name = name
        self._target = target
        self._targets: dict[int, Target] = {}
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.reqlog = reqlog
        self._requests = RequestIndex(folder)
        self._stored = feedlog.Tail(folder, feedlog.PATTERN)
        self._keys: dict[feedlog.FileKey, set[tuple[str, int]]] = {}
        self._lock = threading.Lock()

    def submit_body(self, body: bytes) -> int:
        return self.submit(parse_body(body), source="api")

    def _target_of(self, version: int) -> Target | str:
        """The version's target (kept), or why it cannot be known (tried again next time)."""
        if version not in self._targets:
            try:
                self._targets[version] = self._target(version)
            except Exception as exc:  # noqa: BLE001 - a version that cannot load: say so
                return f"version {version} cannot be loaded to check the label" \
                       f" ({str(exc)[:200]})"
        return self._targets[version]

    def _refresh_stored(self) -> None:
        for key, _, raw in self._stored.new_lines():
            if raw is None or not raw.strip():
                continue
            try:
                rec = feedlog.parse(raw)
            except feedlog.BadLine:
                continue
            self._keys.setdefault(key, set()).add((rec["request"], rec["index"]))
        for key in self._stored.gone:
            self._keys.pop(key, None)

    def _stored_already(self, key: tuple[str, int]) -> bool:
        return any(key in keys for keys in self._keys.values())

    def submit(self, entries: list[Any], *, source: str, text_labels: bool = False) -> int:
        """Store every entry, or none (FeedbackInvalid naming each bad one). Returns how
        many labels were stored. `text_labels`: labels are text read from a file (a CSV
        cell), taken as the class or number they spell for the version."""
        checked: list[tuple[int, str, int, Any]] = []
        errors: list[FeedbackError] = []
        for i, entry in enumerate(entries):
            ok, bad = check_entry(i, entry)
            errors += bad
            if ok is not None:
                checked.append((i, *ok))
        if self.settle is not None:
            self.settle(5.0)
        if self.reqlog is not None:
            self.reqlog.wait_written(timeout=5.0)
        with self._lock, feedlog.locked(self.folder):
            self._requests.refresh()
            self._refresh_stored()
            twins: list[str] = []
            lines = self._join(checked, errors, source, text_labels, twins)
            if errors:
                raise FeedbackInvalid(_cap(sorted(errors, key=_order)))
            feedlog.append(self.folder, "".join(lines + twins), max_bytes=self.max_bytes,
                           max_files=self.max_files)
            self._refresh_stored()
        log.info("%s: stored %d label(s) (%s)", self.name, len(lines), source)
        return len(lines)

    def _join(self, checked: list[tuple[int, str, int, Any]], errors: list[FeedbackError],
              source: str, text_labels: bool, twins: list[str]) -> list[str]:
        """The lines of the good entries; `twins` gets each label's line for the shadow
        version's prediction of the same record (serve --shadow), when there is one."""
        now = time.time()
        seen: dict[tuple[str, int], int] = {}
        found: dict[str, dict[str, Any] | str] = {}
        lines = []
        for i, rid, index, label in checked:
            if rid not in found:
                found[rid] = self._requests.find(rid)
            rec = found[rid]
            if isinstance(rec, str):
                errors.append(FeedbackError(i, "request", f"request {_shown(rid)}: {rec}",
                                            "unknown_request"))
                continue
            if index >= len(rec["prediction"]) or not (
                    rec["prediction"][index] is None or feedlog.scalar(rec["prediction"][index])):
                errors.append(FeedbackError(i, "index", f"request {_shown(rid)} had"
                                            f" {len(rec['prediction'])} record(s): no index"
                                            f" {index}", "index_invalid"))
                continue
            target = self._target_of(rec["version"])
            if text_labels and isinstance(label, str) and not isinstance(target, str):
                label = target.from_text(label)
            problem = target if isinstance(target, str) else target.problem(label)
            if problem:
                errors.append(FeedbackError(i, "label", f"request {_shown(rid)}: {problem}",
                                            "label_type"))
                continue
            key = (rid, index)
            if self._stored_already(key):
                errors.append(FeedbackError(i, None, f"request {_shown(rid)} record {index}"
                                            " has a label stored already (labels are never"
                                            " overwritten)", "duplicate"))
                continue
            if key in seen:
                errors.append(FeedbackError(i, None, f"request {_shown(rid)} record {index}"
                                            f" is labelled twice (also entry {seen[key]})",
                                            "duplicate"))
                continue
            seen[key] = i
            entry = {"ts": now, "request": rid, "index": index, "model": rec.get("model"),
                     "version": rec["version"], "served": rec["ts"],
                     "prediction": rec["prediction"][index], "label": label, "source": source}
            lines.append(feedlog.line(entry))
            twin = self._requests.find_shadow(rid)
            fields = shadow.label_line(twin, index, rec["version"]) if twin else None
            if fields is not None:
                twins.append(feedlog.line({**entry, **fields}))
        return lines


def _order(e: FeedbackError) -> tuple[int, str]:
    return (-1 if e.entry is None else e.entry, e.field or "")


def _cap(errors: list[FeedbackError]) -> list[FeedbackError]:
    if len(errors) <= MAX_ERRORS:
        return errors
    more = len(errors) - MAX_ERRORS
    return [*errors[:MAX_ERRORS], FeedbackError(None, None, f"and {more} more errors",
                                                "more_errors")]


def registry_target(registry: Any, name: str, current: Callable[[], Any] | None = None
                    ) -> Callable[[int], Target]:
    """The target of version V of `name`: the served model's when it is V (`current`
    gives the service's Served), else the registry's model (hash-checked, loaded once)."""
    def target(version: int) -> Target:
        served = current() if current is not None else None
        if served is not None and served.version.version == version:
            return target_of(served.model)
        return target_of(registry.load_model(name, version))

    return target
