"""Alerts: one notification when an incident opens, one when it is resolved, none in between.

An incident is keyed by (model, check) ("drift", "skew", "quality", ...). `update` is told
which checks a run judged and which of them breached: a breach with no open incident opens
one (a notification), a breach of an open incident only counts the run, and an open incident
of a judged check that no longer breaches is resolved (a notification). A check the run did
not judge (too few records) leaves its incident as it is. `notify` sends a one-off notice (a
rollback) through the same path.

State: the open incidents and the notifications not yet delivered (the outbox) are in
`.mlops_nb/alerts/state.json` (mode 0600, written atomically, never through a symlink), under
an flock of `.mlops_nb/alerts/.lock` held while a run decides and delivers, so two monitor
runs at once never send one incident twice. Each opened, resolved or rollback notice is also
an `alert` event in the lineage store. A notification the webhook did not take stays in the
outbox and the next call retries it (oldest first; after one failure the others wait for the
next call, so a webhook that stays down costs one retry budget per run). Without a webhook
nothing is queued: incidents are still recorded. The webhook URL is never written anywhere.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops_nb.artifacts import atomic
from mlops_nb.errors import ConfigError
from mlops_nb.monitor.webhook import DEFAULT_RETRY, Retry, Webhook
from mlops_nb.project import STATE

log = logging.getLogger(__name__)

FOLDER = "alerts"
MAX_OUTBOX = 200  # notifications kept for a webhook that stays down; the oldest go first
MAX_TEXT = 1500  # what the chat shows
MAX_SUMMARY = 2000  # kept and sent in the fields


@dataclass(frozen=True)
class Breach:
    """One check of one model that failed in this run."""

    model: str
    check: str  # "drift", "skew", "quality", ...: one incident per (model, check)
    summary: str  # one line: what broke, with its figures
    version: int | None = None
    figures: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """What a call did: incidents opened, still open, resolved; deliveries."""

    opened: list[dict[str, Any]] = field(default_factory=list)
    ongoing: list[dict[str, Any]] = field(default_factory=list)
    resolved: list[dict[str, Any]] = field(default_factory=list)
    webhook: bool = False  # one is configured
    sent: int = 0
    unsent: int = 0  # still in the outbox, retried by the next call
    error: str = ""  # the last delivery error (redacted)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def folder(root: Path) -> Path:
    return root / STATE / FOLDER


def update(root: Path, model: str, checked: Collection[str], breaches: Sequence[Breach], *,
           webhook: Webhook | None, retry: Retry = DEFAULT_RETRY) -> Outcome:
    """Open, keep or resolve the incidents of `model`'s `checked` checks; deliver what is due.

    `breaches` are the failed checks of this run (each of `model`, its check in `checked`)."""
    for b in breaches:
        if b.model != model or b.check not in checked:
            raise ValueError(f"breach {b.model}/{b.check} is not one of {model}'s checked"
                             f" checks {sorted(checked)}")
    out = Outcome(webhook=webhook is not None)
    with _held(root):
        state = _load(root)
        events: list[tuple[str, dict[str, Any]]] = []
        now = _now()
        by_check = {b.check: b for b in breaches}
        still_open = []
        for inc in state["open"]:
            if inc["model"] != model or inc["check"] not in checked:
                still_open.append(inc)
            elif inc["check"] in by_check:
                b = by_check.pop(inc["check"])
                inc.update(last_seen=now, runs=inc["runs"] + 1, summary=b.summary[:MAX_SUMMARY],
                           version=b.version, figures=_plain(b.figures))
                still_open.append(inc)
                out.ongoing.append(inc)
            else:
                inc.update(resolved=now)
                out.resolved.append(inc)
                events.append(("resolved", inc))
        for b in breaches:
            if by_check.pop(b.check, None) is not None:
                inc = {"id": uuid.uuid4().hex[:12], "model": model, "check": b.check,
                       "version": b.version, "opened": now, "last_seen": now, "runs": 1,
                       "summary": b.summary[:MAX_SUMMARY], "figures": _plain(b.figures)}
                still_open.append(inc)
                out.opened.append(inc)
                events.append(("opened", inc))
        state["open"] = still_open
        _queue(root, state, events, webhook)
        _deliver(root, state, webhook, retry, out)
    return out


def notify(root: Path, model: str, event: str, summary: str, figures: Mapping[str, Any], *,
           webhook: Webhook | None, retry: Retry = DEFAULT_RETRY) -> Outcome:
    """A one-off notice (e.g. event "rollback"): recorded, and delivered like an incident's."""
    out = Outcome(webhook=webhook is not None)
    notice = {"id": uuid.uuid4().hex[:12], "model": model, "check": event, "version": None,
              "opened": _now(), "summary": summary[:MAX_SUMMARY], "figures": _plain(figures)}
    with _held(root):
        state = _load(root)
        _queue(root, state, [(event, notice)], webhook)
        _deliver(root, state, webhook, retry, out)
    return out


def open_incidents(root: Path) -> list[dict[str, Any]]:
    """The open incidents (for reports and tests)."""
    path = folder(root) / "state.json"
    if not path.exists() and not path.is_symlink():
        return []
    with _held(root):
        return list(_load(root)["open"])


def pending(root: Path) -> list[dict[str, Any]]:
    """The notifications not delivered yet (oldest first)."""
    path = folder(root) / "state.json"
    if not path.exists() and not path.is_symlink():
        return []
    with _held(root):
        return list(_load(root)["outbox"])


def monitor_breaches(report: Mapping[str, Any]) -> tuple[list[str], list[Breach]]:
    """The checks a `monitor` report judged (none without a verdict) and those that failed:
    data-set drift and training-serving skew (schema anomalies of served data)."""
    if report.get("status") not in ("ok", "drift"):
        return [], []
    ref = str(report.get("model", ""))
    name, _, version = ref.rpartition(":")
    number = int(version) if version.isdigit() else None
    breaches = []
    if report.get("drift_detected"):
        cols = [str(c) for c in report.get("drifted_columns") or []]
        breaches.append(Breach(name, "drift", f"served data of {ref} drifted: {len(cols)}"
                               f" column(s) ({', '.join(c[:60] for c in cols[:8])})", number,
                               {"drifted_columns": cols[:50], "rows": report.get("rows")}))
    anomalies = [str(a.get("message", a)) if isinstance(a, Mapping) else str(a)
                 for a in (report.get("skew") or {}).get("anomalies") or []]
    if anomalies:
        breaches.append(Breach(name, "skew", f"training-serving skew in served data of {ref}:"
                               f" {len(anomalies)} anomaly(ies), first: {anomalies[0][:200]}",
                               number, {"anomalies": anomalies[:20],
                                        "rows": report.get("rows")}))
    return ["drift", "skew"], breaches


# --- state -------------------------------------------------------------------------------


@contextlib.contextmanager
def _held(root: Path) -> Iterator[None]:
    import fcntl

    atomic.make_folder(folder(root), root=root)
    fd = atomic.open_lock(folder(root) / ".lock", root=root, mode=0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _load(root: Path) -> dict[str, Any]:
    path = folder(root) / "state.json"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return {"format": 1, "open": [], "outbox": []}
    except OSError:
        if path.is_symlink():
            raise atomic.symlink_error(path) from None
        raise
    with os.fdopen(fd, "rb") as f:
        raw = f.read()
    try:
        state = json.loads(raw)
        if not (isinstance(state, dict) and isinstance(state.get("open"), list)
                and isinstance(state.get("outbox"), list)):
            raise ValueError("not the alerts' state")
    except ValueError as exc:
        raise ConfigError(str(path), f"unreadable ({str(exc)[:200]}); remove it (open"
                                     " incidents are then opened again by the next run)"
                          ) from None
    return state


def _save(root: Path, state: dict[str, Any]) -> None:
    atomic.write_text(folder(root) / "state.json",
                      json.dumps(state, indent=1, ensure_ascii=False) + "\n",
                      root=root, mode=0o600)


# --- notifications -------------------------------------------------------------------------


def _queue(root: Path, state: dict[str, Any], events: list[tuple[str, dict[str, Any]]],
           webhook: Webhook | None) -> None:
    """Put the notices of `events` in the outbox (with a webhook), save, record in lineage."""
    from mlops_nb.guards.lineage import LineageStore, default_path

    for event, inc in events:
        if webhook is not None:
            state["outbox"].append({"id": inc["id"], "event": event, "created": _now(),
                                    "attempts": 0, "last_error": "",
                                    "payload": payload(event, inc)})
    dropped = len(state["outbox"]) - MAX_OUTBOX
    if dropped > 0:
        log.warning("alert outbox full: %d oldest undelivered notification(s) dropped", dropped)
        del state["outbox"][:dropped]
    _save(root, state)
    if events:
        store = LineageStore(default_path(root))
        for event, inc in events:
            store.record_event("alert", f"{inc['model']}/{inc['check']}",
                               {"event": event, "incident": inc["id"],
                                "webhook": webhook is not None,
                                **{k: v for k, v in inc.items() if k != "id"}})


def _deliver(root: Path, state: dict[str, Any], webhook: Webhook | None, retry: Retry,
             out: Outcome) -> None:
    if webhook is None or not state["outbox"]:
        out.unsent = len(state["outbox"]) if webhook is not None else 0
        return
    while state["outbox"]:
        note = state["outbox"][0]
        result = webhook.post(note["payload"], retry)
        if result.ok:
            state["outbox"].pop(0)
            out.sent += 1
            _save(root, state)
            continue
        note["attempts"] += result.attempts
        note["last_error"] = out.error = result.error
        log.warning("alert %s of %s not delivered after %d attempt(s) in %.1f s: %s",
                    note["event"], note["payload"]["mlops_nb"]["model"], result.attempts,
                    result.seconds, result.error)
        break
    out.unsent = len(state["outbox"])
    _save(root, state)


def payload(event: str, inc: Mapping[str, Any]) -> dict[str, Any]:
    """What the webhook receives: `text` (what Slack and Teams show) and the same facts as
    fields beside it."""
    model, check = str(inc["model"]), str(inc["check"])
    what = f"{model} {check}" if event in ("opened", "resolved") else model
    head = {"opened": "ALERT", "resolved": "RESOLVED"}.get(event, event.upper())
    line = f"[mlops-nb] {head} {what}: {_one_line(str(inc.get('summary', '')))}"
    if event == "resolved":
        line += f" (open since {inc.get('opened')}, {inc.get('runs', 1)} run(s))"
    return {"text": _escape(_one_line(line, MAX_TEXT)),
            "mlops_nb": {"event": event, "incident": inc["id"], "model": model, "check": check,
                         "version": inc.get("version"), "summary": str(inc.get("summary", "")),
                         "opened": inc.get("opened"), "resolved": inc.get("resolved"),
                         "figures": inc.get("figures", {})}}


def _one_line(text: str, limit: int = 600) -> str:
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())[:limit]


def _escape(text: str) -> str:
    """Slack reads <...> as links and mentions (<!channel>): show them as text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plain(value: Any, depth: int = 0) -> Any:
    """JSON-safe figures: NaN and infinity become None, depth and length are bounded."""
    if depth > 6:
        return str(value)[:200]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value[:2000] if isinstance(value, str) else value
    if isinstance(value, Mapping):
        return {str(k)[:200]: _plain(v, depth + 1) for k, v in list(value.items())[:100]}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in list(value)[:100]]
    try:
        number = float(value)
        return number if math.isfinite(number) else None
    except (TypeError, ValueError):
        return str(value)[:2000]
