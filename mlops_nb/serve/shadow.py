"""Shadow comparison: a second version predicts what the served one answered, off the request
path, and its predictions go to the serving log beside the real ones.

`mlops-nb serve NAME@production --shadow NAME@staging` answers every /predict with the served
version as always; after the answer is computed, the request's records are handed to a
bounded queue (`put_nowait`) and one shadow thread predicts them (what has queued up meanwhile
in one call, up to MAX_BATCH requests) with the shadow version (a
second ModelHolder: it follows the staging stage as the served one follows production, or
stays on a pinned `NAME:VERSION`). Its predictions are written to the same serving log
(serve/reqlog.py: bounded, rotated) as one line per request marked shadow:

    {"shadow": true, "ts", "request", "model", "version", "served_version", "rows",
     "prediction"}

with the served request's id and time (its records are in the served line of that id).
Labels later given for that request id (POST /feedback, `mlops-nb feedback`) are joined to
the shadow prediction too (serve/feedback.py), so `mlops-nb monitor` shows the shadow
version's online quality before it is promoted.

Rules:
- the shadow never slows or fails a request: a full queue drops the records (counted in
  /metrics, `mlops_nb_shadow_records_total{outcome="queue_full"}`); a shadow version that is
  missing, fails to load or raises is counted and said in /health's `shadow` field, while
  /health's own status and every answer stay what they would be without it;
- the shadow is a version of the served model only (its labels are the served model's);
  while it is the very version that answered a request, that request is not shadowed (the
  same predictions would count twice);
- a missing shadow version (no staging version yet) is looked for again every poll.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
from typing import Any

from mlops_nb.errors import UsageError
from mlops_nb.guards.registry import Registry, parse_ref
from mlops_nb.serve.holder import ModelHolder, Served, public
from mlops_nb.serve.reqlog import RequestLog

log = logging.getLogger(__name__)

DEFAULT_QUEUE = 1000  # requests waiting for the shadow
MAX_BATCH = 64  # queued requests the shadow predicts in one call
PREFIX = b'{"shadow":true,'  # how every shadow line of the serving log starts
_LINE = re.compile(rb'\{"shadow":true,"ts":[-+0-9.eE]+,"request":"((?:[^"\\\n]|\\.)*)",')
OUTCOMES = ("predicted", "queue_full", "failed", "unavailable", "same_version", "log_full")
_Item = tuple[str, float, list[dict[str, Any]], int]


def check_ref(served: str, shadow: str) -> str:
    """The shadow ref to follow for `--shadow shadow` beside `served` (NAME alone means
    NAME@staging); UsageError saying what to give for anything else."""
    name, which = parse_ref(served)
    shown = repr(shadow[:80]) + ("..." if len(shadow) > 80 else "")
    usage = f"give {name}@staging (followed) or {name}:VERSION (pinned)"
    if not shadow.isprintable() or len(shadow) > 200:
        raise UsageError(f"--shadow {shown}: not a model reference; {usage}")
    sname, swhich = parse_ref(shadow)
    if sname != name:
        raise UsageError(f"--shadow {shown}: the shadow must be a version of the served model"
                         f" '{name}' (labels are joined to both by request id); {usage}")
    served_stage = None if which not in (None, "production", "staging") else \
        (which or "production")
    if swhich is None:
        swhich = "staging"
    if swhich in ("production", "staging"):
        if swhich == served_stage:
            raise UsageError(f"--shadow {shown}: that is the version being served; {usage}")
        return f"{name}@{swhich}"
    if not swhich.isdigit() or not 0 < int(swhich) < 2**63:
        raise UsageError(f"--shadow {shown}: {swhich[:40]!r} is neither a stage nor a version"
                         f" number; {usage}")
    if which is not None and which.isdigit() and int(which) == int(swhich):
        raise UsageError(f"--shadow {shown}: that is the version being served; {usage}")
    return f"{name}:{int(swhich)}"


def request_of(raw: bytes) -> str | None:
    """The request id of a shadow line of the serving log (None for any other line)."""
    import json

    match = _LINE.match(raw)
    if match is None:
        return None
    try:
        rid = json.loads(b'"' + match.group(1) + b'"')
    except ValueError:
        return None
    return rid if isinstance(rid, str) else None


def label_line(shadow: dict[str, Any], index: int, served_version: int) -> dict[str, Any] | None:
    """The feedback fields of a label's shadow twin ({version, served, prediction, shadow})
    from the request's shadow line, or None when it has no usable prediction for `index`."""
    import math

    version, ts, pred = shadow.get("version"), shadow.get("ts"), shadow.get("prediction")
    if (isinstance(version, bool) or not isinstance(version, int) or version <= 0
            or version == served_version or not isinstance(pred, list)
            or not 0 <= index < len(pred) or isinstance(ts, bool)
            or not isinstance(ts, int | float) or not math.isfinite(ts)):
        return None
    value = pred[index]
    ok = isinstance(value, str | bool) or (isinstance(value, int) and abs(value) < 2**63) or \
        (isinstance(value, float) and math.isfinite(value))
    return {"version": version, "served": ts, "prediction": value, "shadow": True} if ok \
        else None


def predict(served: Served, records: list[dict[str, Any]]) -> list[Any]:
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame.from_records(records, columns=served.request.columns)
    with np.errstate(all="ignore"):
        return list(served.model.predict(frame).tolist())


class Shadow:
    """The shadow version of a service and its thread."""

    def __init__(self, registry: Registry, ref: str, reqlog: RequestLog, *,
                 metrics_registry: Any = None, queue_size: int = DEFAULT_QUEUE,
                 max_rows: int = 1000, poll: float = 1.0) -> None:
        from prometheus_client import Counter

        self.registry = registry
        self.ref = ref
        self.name = parse_ref(ref)[0]
        self.reqlog = reqlog
        self.poll = poll
        self._max_rows = max_rows
        self.holder: ModelHolder | None = None
        self._load_problem: str | None = None
        self._predict_problem: str | None = None
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self._counter = Counter("mlops_nb_shadow_records", "records of served requests and"
                                " what became of their shadow prediction (predicted, or why"
                                " not)", ["outcome"], registry=metrics_registry)
        self._queue: queue.Queue[_Item | None] = queue.Queue(max(1, queue_size))
        self.busy = threading.Lock()  # held while the shadow predicts
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._settled = threading.Condition()
        self._submitted = self._done = 0
        self._load()

    def _load(self) -> None:
        try:
            holder = ModelHolder(self.registry, self.ref, max_rows=self._max_rows,
                                 poll=self.poll)
        except Exception as exc:  # noqa: BLE001 - a shadow that cannot load never stops serving
            why = public(f"shadow {self.ref} not loaded ({exc}); tried again every poll",
                         self.registry)
            if why != self._load_problem:
                log.error("%s", why)
            self._load_problem = why
            return
        self._load_problem = None
        self.holder = holder
        if self._thread is not None:
            holder.start()
        log.warning("shadowing with %s", holder.current.version.ref)

    def _count(self, outcome: str, n: int) -> None:
        self.counts[outcome] += n
        self._counter.labels(outcome).inc(n)

    @property
    def problem(self) -> str | None:
        """Why the shadow predicts nothing (or failed last time); None when it works."""
        if self.holder is None:
            return self._load_problem
        return self.holder.problem or self._predict_problem

    def describe(self) -> dict[str, Any]:
        """For /version and /health: the ref followed, the version shadowing, its problem."""
        h = self.holder
        version = h.current.version.version if h is not None and h.available else None
        return {"ref": self.ref, "version": version, "status": "failing" if self.problem
                else "ok", "problem": self.problem,
                "dropped": self.counts["queue_full"] + self.counts["log_full"]}

    def submit(self, rid: str, ts: Any, records: list[dict[str, Any]],
               served_version: int) -> bool:
        """Queue a served request for the shadow; never waits (a full queue drops it,
        counted)."""
        with self._settled:
            self._submitted += 1
        try:
            self._queue.put_nowait((rid, ts, records, served_version))
        except queue.Full:
            with self._settled:
                self._submitted -= 1
            self._count("queue_full", len(records))
            return False
        return True

    def wait_settled(self, timeout: float) -> bool:
        """Wait until every request queued before this call has its shadow prediction in the
        serving log's queue (or was given up); False after `timeout` seconds."""
        with self._settled:
            target = self._submitted
            if self._thread is None:
                return self._done >= target
            return self._settled.wait_for(lambda: self._done >= target, timeout)

    def start(self) -> None:
        if self.holder is not None:
            self.holder.start()
        self._thread = threading.Thread(target=self._run, name="mlops-nb-shadow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Predict what is queued (for at most 10 s), then stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self.holder is not None:
            self.holder.stop()

    def _run(self) -> None:
        import time

        tried = time.monotonic()
        while True:
            if self.holder is None and time.monotonic() - tried >= self.poll:
                self._load()
                tried = time.monotonic()
            try:
                first = self._queue.get(timeout=self.poll)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            batch = [first] if first is not None else []
            while len(batch) < MAX_BATCH:  # what waits is predicted in one call
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    batch.append(item)
            try:
                if batch:
                    self._shadow(batch)
            except Exception as exc:  # noqa: BLE001 - the shadow thread outlives every error
                log.error("shadow %s: %s", self.ref, exc)
            finally:
                with self._settled:
                    self._done += len(batch) + (first is None)
                    self._settled.notify_all()

    def _shadow(self, batch: list[_Item]) -> None:
        rows = sum(len(item[2]) for item in batch)
        with self.busy:
            h = self.holder
            if h is None or not h.available:
                self._count("unavailable", rows)
                return
            served = h.current
            mv = served.version
            same = [item for item in batch if item[3] == mv.version]
            if same:
                self._count("same_version", sum(len(item[2]) for item in same))
                batch = [item for item in batch if item[3] != mv.version]
                rows = sum(len(item[2]) for item in batch)
            if not batch:
                return
            try:
                predictions = predict(served, [r for item in batch for r in item[2]])
            except Exception as exc:  # noqa: BLE001 - a shadow that raises changes nothing
                text = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
                why = public(f"shadow {mv.ref} failed to predict ({text})", self.registry)
                if why != self._predict_problem:
                    log.error("%s", why)
                self._predict_problem = why
                self._count("failed", rows)
                return
            self._predict_problem = None
        at = 0
        for rid, ts, records, served_version in batch:
            entry = {"shadow": True, "ts": ts, "request": rid, "model": mv.name,
                     "version": mv.version, "served_version": served_version}
            mine = predictions[at:at + len(records)]
            at += len(records)
            if self.reqlog.submit(entry, records, mine):
                self._count("predicted", len(records))
            else:
                self._count("log_full", len(records))
