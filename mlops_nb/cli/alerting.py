"""CLI parts of alerts and rollback: `models rollback`, and what `monitor` does after its checks
(alerts for drift and skew, `--rollback`).

The webhook is read from the environment before anything changes (a refused webhook file is
exit 3 and nothing moved); delivery failures are a warning on stderr, without the URL, and the
command's exit code stays that of what it did: the next run retries the notification.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _root(args: argparse.Namespace) -> Path:
    from mlops_nb.project import find_root

    return find_root(Path(args.project) if getattr(args, "project", None) else None)


def webhook() -> Any:
    from mlops_nb.monitor.webhook import from_env

    return from_env()


def _say_delivery(outcome: Any) -> None:
    if outcome.unsent:
        print(f"mlops-nb: warning: alert webhook: {outcome.unsent} notification(s) not"
              f" delivered ({outcome.error}); kept in .mlops_nb/alerts/state.json, the next"
              " run retries them", file=sys.stderr)


def cmd_rollback(args: argparse.Namespace) -> int:
    from mlops_nb.errors import UsageError
    from mlops_nb.guards.registry import parse_ref
    from mlops_nb.monitor.rollback import rollback

    name, which = parse_ref(args.ref)
    if which is not None:
        raise UsageError(f"`models rollback` takes a model name ({name!r}); choose the version"
                         " with --to V")
    hook = webhook()
    done = rollback(_root(args), name, to=args.to, reason=args.reason or "", webhook=hook)
    print(f"{done.text}; {name}:{done.to_version} is now production, {name}:"
          f"{done.from_version} archived")
    if done.alert.sent:
        print("  alert sent")
    _say_delivery(done.alert)
    return 0


def add_rollback(msub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    m = msub.add_parser("rollback", help="put the previous production version (or --to V)"
                                         " back in production, archiving the current one")
    m.add_argument("ref", metavar="NAME", help="the model, e.g. iris")
    m.add_argument("--to", metavar="V", help="the version to put back (default: the one in"
                                             " production before the current one)")
    m.add_argument("--reason", help="why, kept in both versions' history and the alert")
    m.set_defaults(func=cmd_rollback)


def after_monitor(args: argparse.Namespace, root: Path, name: str, report: dict[str, Any],
                  webhook: Any, quality: Mapping[int, Any] | None = None) -> list[str]:
    """Alerts for the report's drift and skew (and online quality, given `quality`: version
    -> rollback.QualityInput), with --rollback the rollback policy first; their outcome
    goes into `report` (alerts, rollback), their lines are returned.

    A rollback made in the run that opens the quality incident is told in that incident's one
    notification; otherwise it sends its own."""
    import dataclasses

    from mlops_nb.guards.registry import Registry, default_root
    from mlops_nb.monitor import alerts
    from mlops_nb.monitor import rollback as rb

    lines = []
    checked, breaches = alerts.monitor_breaches(report)
    if quality:  # judged on the production version before any rollback
        more_checked, more = rb.quality_breaches(Registry(default_root(root)), name, quality)
        checked, breaches = checked + more_checked, breaches + more
    done = None
    if getattr(args, "rollback", False):
        decision, done = rb.automatic(root, name, quality or {}, webhook=webhook,
                                      announce=False)
        report["rollback"] = {"decision": decision.reason, "rolled_back": done is not None,
                              **(rb.facts_of(done) if done else {})}
        lines.append(f"  rollback: {done.text if done else decision.reason}")
        if done is not None:
            breaches = [dataclasses.replace(b, summary=f"{b.summary}; {done.text}",
                                            figures={**b.figures, "rollback": rb.facts_of(done)})
                        if b.check == "quality" else b for b in breaches]
    outcome = alerts.update(root, name, checked, breaches, webhook=webhook)
    report["alerts"] = outcome.to_dict()
    sent = ("no webhook set: recorded only" if webhook is None else
            "not delivered yet" if outcome.unsent else "notified")
    lines += [f"  alert: {inc['check']} incident opened ({sent})" for inc in outcome.opened]
    for inc in outcome.ongoing:
        lines.append(f"  alert: {inc['check']} incident still open since {inc['opened']}"
                     f" ({inc['runs']} runs; no new notification)")
    lines += [f"  alert: {inc['check']} incident resolved" for inc in outcome.resolved]
    _say_delivery(outcome)
    if done is not None and not any(i["check"] == "quality" for i in outcome.opened):
        _say_delivery(rb.announce_rollback(root, done, webhook).alert)
    return lines
