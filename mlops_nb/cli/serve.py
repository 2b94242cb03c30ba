"""CLI commands of serving and monitoring: `serve`, `predict`, `feedback`, `monitor`.

Registered by cli.build_parser; each parses, calls one library function and renders.
Exit codes: those of cli.py; `feedback` exits 7 when a label is bad (nothing stored);
`monitor` exits 14 when served data drifted past the threshold,
15 with `--retrain` while another retraining of the project runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def _root(args: argparse.Namespace) -> Path:
    from mlops_nb.project import find_root

    return find_root(Path(args.project) if getattr(args, "project", None) else None)


def _model(args: argparse.Namespace, root: Path) -> str:
    """The model the command is about: as given, or the registry's only one."""
    from mlops_nb.errors import UsageError
    from mlops_nb.guards.registry import Registry, default_root

    if args.model:
        return str(args.model)
    names = Registry(default_root(root)).names()
    if len(names) == 1:
        return names[0]
    raise UsageError("name the model, e.g. iris or iris:2: the registry holds "
                     + (", ".join(names) if names else "none yet (run the pipeline first)"))


def _positive(kind: type) -> Callable[[str], Any]:
    """An argparse type: a positive (finite) number; argparse names the option on error."""
    def parse(text: str) -> Any:
        import math

        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{text!r}: must be greater than 0")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def _ranged(kind: type, low: float, high: float) -> Callable[[str], Any]:
    """An argparse type: a finite number from `low` to `high`."""
    def parse(text: str) -> Any:
        import math

        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"{text!r}: use a value from {low:g} to {high:g}")
        return value

    parse.__name__ = f"{kind.__name__} from {low:g} to {high:g}"
    return parse


def cmd_serve(args: argparse.Namespace) -> int:
    import os
    import sys

    from mlops_nb.serve.batching import check as check_batching
    from mlops_nb.serve.runtime import check_choice
    from mlops_nb.serve.server import (
        TOKEN_ENV,
        ServeSettings,
        check_binding,
        read_token_file,
        serve,
    )

    token = args.token
    if args.token_file:
        token = read_token_file(Path(args.token_file))
    elif token:
        print(f"warning: --token on the command line is visible to other users (ps); use"
              f" --token-file or ${TOKEN_ENV}", file=sys.stderr)
    token = token or os.environ.get(TOKEN_ENV) or None
    check_binding(args.host, token)  # before any loading
    check_choice(args.runtime)
    check_batching(args.batch_max_records, args.batch_max_wait_ms)
    root = _root(args)
    settings = ServeSettings(
        root=str(root), ref=_model(args, root), host=args.host, port=args.port,
        workers=args.workers, schema=args.schema, max_rows=args.max_rows,
        max_body=args.max_body, poll=args.poll, log_dir=args.log_dir,
        log_max_bytes=args.log_max_bytes, log_max_files=args.log_max_files,
        allowed_hosts=tuple(args.allowed_host) if args.allowed_host else None,
        header_timeout=args.header_timeout, max_connections=args.max_connections,
        shadow=args.shadow, shadow_queue=args.shadow_queue,
        runtime=args.runtime, batch_max_records=args.batch_max_records,
        batch_max_wait_ms=args.batch_max_wait_ms)
    if args.shadow:  # before any loading: a wrong --shadow is a usage error
        from mlops_nb.serve.shadow import check_ref

        check_ref(settings.ref, args.shadow)
    serve(settings, token=token, announce=lambda line: print(line, flush=True))
    return 0


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: a port is 0 to 65535")
    return value


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the serving commands to the `mlops-nb` parser."""
    s = sub.add_parser("serve", help="REST service of a registered model (production by"
                                     " default): /predict, /health, /version, /metrics")
    s.add_argument("model", nargs="?",
                   help="NAME (its production version, followed on promotion), NAME@production"
                        " or NAME:VERSION (pinned); default: the registry's only model")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; another needs a token)")
    pos_int, pos_float = _positive(int), _positive(float)
    s.add_argument("--port", type=_port, default=8000)
    s.add_argument("--workers", type=pos_int, default=1, help="server processes (default 1)")
    s.add_argument("--token-file", help="file holding the bearer token required on every path"
                                        " but /health (readable by you only)")
    s.add_argument("--token", help="the bearer token itself (visible in ps: prefer"
                                   " --token-file or $MLOPS_NB_SERVE_TOKEN)")
    s.add_argument("--allowed-host", action="append", metavar="NAME",
                   help="another Host name the service answers besides localhost, 127.0.0.1,"
                        " [::1] and the bound address (repeatable; * for any)")
    s.add_argument("--schema", help="data schema YAML (default: the one stored with the model)")
    s.add_argument("--max-rows", type=pos_int, default=1000, help="records per request (1000)")
    s.add_argument("--max-body", type=pos_int, default=2**20,
                   help="request body bytes (1 MiB)")
    s.add_argument("--poll", type=pos_float, default=1.0,
                   help="seconds between checks for a newly promoted version (1)")
    s.add_argument("--header-timeout", type=pos_float, default=10.0,
                   help="seconds a client has to send a request's headers (10)")
    s.add_argument("--max-connections", type=pos_int,
                   help="open connections per process (default: below the descriptor limit)")
    s.add_argument("--runtime", choices=("auto", "sklearn", "onnx"), default="auto",
                   help="what computes predictions: onnx (the version's checked ONNX export,"
                        " `mlops-nb export onnx`; refused without one), sklearn, or auto"
                        " (onnx when the version has a checked export and onnxruntime is"
                        " installed; the default)")
    s.add_argument("--batch-max-records", type=_ranged(int, 1, 100_000), default=1000,
                   metavar="N", help="records predicted in one model call when concurrent"
                                     " requests are batched (1000; 1: no batching)")
    s.add_argument("--batch-max-wait-ms", type=_ranged(float, 0.001, 1000), default=2.0,
                   metavar="MS", help="longest a request waits for others to join its batch"
                                      " (2; it never waits when no other is on its way)")
    s.add_argument("--log-dir", help="serving log folder (default .mlops_nb/serving/NAME)")
    s.add_argument("--log-max-bytes", type=pos_int, default=64 * 2**20,
                   help="rotate a log file at this size (64 MiB)")
    s.add_argument("--log-max-files", type=pos_int, default=20, help="log files kept (20)")
    s.add_argument("--shadow", metavar="REF",
                   help="also predict every request with this version of the same model, off"
                        " the request path, and log it beside the answer: NAME@staging"
                        " (followed; NAME alone means it) or NAME:VERSION")
    s.add_argument("--shadow-queue", type=pos_int, default=1000,
                   help="requests waiting for the shadow; more are dropped, counted (1000)")
    s.set_defaults(func=cmd_serve)
    register_more(sub)


def cmd_predict(args: argparse.Namespace) -> int:
    from mlops_nb.guards.registry import Registry, default_root
    from mlops_nb.guards.validation import schema as schema_mod
    from mlops_nb.serve.batch import predict_file

    schema = schema_mod.load(Path(args.schema)) if args.schema else None
    root = _root(args)
    result = predict_file(Registry(default_root(root)), _model(args, root), Path(args.input),
                          Path(args.output), overwrite=args.overwrite, schema=schema)
    extra = (f"; {result.out_of_range} value(s) outside the training range"
             if result.out_of_range else "")
    print(f"{result.model}: predicted {result.rows} rows in {result.seconds:.3f} s"
          f" ({result.rows_per_second:,.0f} rows/s; model loaded in"
          f" {result.load_seconds:.3f} s, not counted) -> {result.output}{extra}")
    return 0


def cmd_feedback(args: argparse.Namespace) -> int:
    from mlops_nb.artifacts import atomic
    from mlops_nb.guards.registry import Registry, default_root, parse_ref
    from mlops_nb.serve.feedfile import submit_file

    root = _root(args)
    name = parse_ref(_model(args, root))[0]
    log_dir = Path(args.log_dir) if args.log_dir else root / ".mlops_nb" / "serving" / name
    if not args.log_dir:
        atomic.refuse_symlinks(log_dir, root=root)  # a planted link takes the labels
    stored = submit_file(Registry(default_root(root)), name, Path(args.file), log_dir,
                         max_bytes=args.log_max_bytes, max_files=args.log_max_files)
    print(f"{name}: stored {stored} label(s) from {args.file} in {log_dir}")
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    import json
    import time

    from mlops_nb.cli import alerting
    from mlops_nb.cli.guards import _drift_config
    from mlops_nb.errors import DriftDetected
    from mlops_nb.guards.registry import parse_ref
    from mlops_nb.monitor.check import monitor, rewrite

    root = _root(args)
    webhook = alerting.webhook()  # a refused webhook file stops here, before any check
    model = _model(args, root)
    name = parse_ref(model)[0]
    log_dir = Path(args.log_dir) if args.log_dir else root / ".mlops_nb" / "serving" / name
    report_dir = Path(args.report_dir) if args.report_dir else \
        root / ".mlops_nb" / "monitor" / name
    since = time.time() - args.since_hours * 3600 if args.since_hours else None
    try:
        report = monitor(root, model, log_dir=log_dir, report_dir=report_dir,
                         drift=_drift_config(args), min_rows=args.min_rows, since=since,
                         retrain=args.retrain)
    except DriftDetected:
        report = json.loads((report_dir / "monitor.json").read_text(encoding="utf-8"))
        lines = alerting.after_monitor(args, root, name, report, webhook, _quality(report))
        rewrite(report, root)
        _show_monitor(report, args.json, lines)
        raise
    lines = alerting.after_monitor(args, root, name, report, webhook, _quality(report))
    rewrite(report, root)
    _show_monitor(report, args.json, lines)
    return 0


def _quality(report: dict) -> Any:  # type: ignore[type-arg]
    """The online quality of the report as the rollback policy's input (version ->
    QualityInput), or None without labels."""
    from mlops_nb.monitor import rollback
    from mlops_nb.monitor.quality import from_report

    if not report.get("quality"):
        return None
    return rollback.from_online(from_report(report["quality"]).versions) or None


def _show_monitor(report: dict, as_json: bool,  # type: ignore[type-arg]
                  more: Sequence[str] = ()) -> None:
    import json

    if as_json:
        print(json.dumps(report, indent=1, default=str))
        return
    print(f"{report['model']}: {report['status'].upper()} ({report['rows']} served records)")
    if report.get("message"):
        print(f"  {report['message']}")
    bad = report.get("bad_lines") or {}
    if bad.get("count"):
        reasons = "; ".join(f"{r} ({n})" for r, n in bad["reasons"].items())
        first = ", ".join(f"{b['file']}:{b['line']}" for b in bad["first"])
        print(f"  serving log: {bad['count']} bad line(s) skipped: {reasons}; first at {first}")
    for f in report.get("skipped_files") or []:
        print(f"  serving log: file not read: {f}")
    data = report.get("data") or {}
    for c in (data.get("drift") or {}).get("columns", []):
        flag = {True: "DRIFT", False: "ok", None: "not checked"}[c["drifted"]]
        stat = "-" if c["statistic"] is None else f"{float(c['statistic']):.4g}"
        print(f"  {c['column']:<24} {c['method']:<14} {stat:>10} (threshold"
              f" {c['threshold']:g})  {flag}")
    for a in (report.get("skew") or {}).get("anomalies", []):
        print(f"  skew: {a['message']}")
    pred = report.get("prediction_drift")
    if pred:
        print(f"  predictions: {pred['method']} {float(pred['statistic'] or 0):.4g}"
              f" drifted={pred['drifted']}")
    if report.get("quality"):
        from mlops_nb.monitor.qreport import lines

        print("\n".join(lines(report["quality"])))
    r = report.get("retraining")
    if r:
        decision = (r.get("decision") or {}).get("decision", "unknown")
        print(f"  retraining: experiment {r['experiment']} exit {r['exit_code']}"
              f" ({r['seconds']} s), gate: {decision}; log {r['log']}")
    for f in report.get("report_files", []):
        print(f"  report: {f}")
    for line in more:  # alerts and rollback (cli/alerting.py)
        print(line)


def register_more(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from mlops_nb.cli.guards import _drift_flags

    s = sub.add_parser("predict", help="batch prediction over a CSV or Parquet file")
    s.add_argument("model", nargs="?",
                   help="NAME (production), NAME@production or NAME:VERSION; default: the"
                        " registry's only model")
    s.add_argument("--input", required=True, help="input .csv or .parquet")
    s.add_argument("--output", required=True, help="output .csv or .parquet (written"
                                                   " atomically)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output")
    s.add_argument("--schema", help="data schema YAML (default: the one stored with the model)")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("feedback", help="store the true labels of served predictions from a"
                                        " CSV or Parquet file (columns request, index,"
                                        " label); exit 7 naming each bad row, nothing"
                                        " stored")
    s.add_argument("file", help="a .csv or .parquet file of labels")
    s.add_argument("--model", help="NAME; default: the registry's only model")
    s.add_argument("--log-dir", help="serving log folder the labels join (default"
                                     " .mlops_nb/serving/NAME)")
    s.add_argument("--log-max-bytes", type=_positive(int), default=64 * 2**20,
                   help="rotate the feedback file at this size (64 MiB)")
    s.add_argument("--log-max-files", type=_positive(int), default=20,
                   help="feedback files kept (20)")
    s.set_defaults(func=cmd_feedback)

    s = sub.add_parser("monitor", help="drift and skew of served data vs the training data,"
                                       " and online quality from labels; exit 14 on drift,"
                                       " 15 while a retraining runs")
    s.add_argument("model", nargs="?",
                   help="NAME (production), NAME@production or NAME:VERSION; default: the"
                        " registry's only model")
    s.add_argument("--log-dir", help="serving log folder (default .mlops_nb/serving/NAME)")
    s.add_argument("--report-dir", help="where monitor.json and monitor.html go (default"
                                        " .mlops_nb/monitor/NAME)")
    s.add_argument("--min-rows", type=int, default=30,
                   help="served records needed for a verdict (30)")
    s.add_argument("--since-hours", type=float, help="only records served in the last H hours")
    s.add_argument("--retrain", action="store_true",
                   help="on drift, start a retraining run (dvc exp run) through the gate;"
                        " one at a time per project")
    s.add_argument("--rollback", action="store_true",
                   help="roll the production version back when its online quality is below"
                        " its floor (see `models rollback`); never twice without a human")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    _drift_flags(s)
    s.set_defaults(func=cmd_monitor)
