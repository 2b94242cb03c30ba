"""CLI commands of the level-1 guards (validation, drift, registry, lineage).

Registered by cli.build_parser; imports nothing heavy at module level. Each command parses,
calls one library function and renders. Exit codes: 7 data failed validation or drifted,
8 model blocked, 9 registry error (unknown model or version, unsafe pickle), 10 lineage store
error; the others are those of cli/__init__.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _root(args: argparse.Namespace) -> Path:
    from mlops_nb.project import find_root

    return find_root(Path(args.project) if getattr(args, "project", None) else None)


def _drift_config(args: argparse.Namespace) -> Any:
    """Drift settings: params.yaml's key (default guards.drift), then the flags over it."""
    import dataclasses

    from mlops_nb.guards.lineage import lookup
    from mlops_nb.guards.validation import drift as drift_mod
    from mlops_nb.pipeline import params as params_mod
    from mlops_nb.project import PARAMS

    base = None
    try:
        root = _root(args)
    except Exception:  # noqa: BLE001 - outside a project: flags only
        root = None
    if root is not None and (root / PARAMS).exists():
        base = lookup(params_mod.read(root / PARAMS, PARAMS), args.drift_key)
    cfg = drift_mod.from_mapping(base, f"{PARAMS} ({args.drift_key})")
    over = {k: v for k, v in (("method", args.method), ("threshold", args.threshold),
                              ("dataset_share", args.dataset_share)) if v is not None}
    if over:
        cfg = drift_mod.from_mapping({**dataclasses.asdict(cfg), **over}, "command line")
    return cfg


def _print_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=1, default=str))
        return
    print(f"{report['name']}: {report['status'].upper()} ({report['rows']} rows)")
    for p in report["problems"]:
        print(f"  problem: {p}")
    for n in report["notes"]:
        print(f"  note: {n}")
    drift = report.get("drift")
    if drift:
        for c in drift["columns"]:
            stat = "-" if c["statistic"] is None else f"{float(c['statistic']):.4g}"
            psi = "-" if c["psi"] is None else f"{float(c['psi']):.4g}"
            dist = "-" if c["distance"] is None else f"{float(c['distance']):.4g}"
            flag = {True: "DRIFT", False: "ok", None: "not checked"}[c["drifted"]]
            print(f"  {c['column']:<24} {c['method']:<14} {stat:>10} (threshold"
                  f" {c['threshold']:g})  distance {dist:>8}  psi {psi:>8}  {flag}")
    for f in report.get("report_files", []):
        print(f"  report: {f}")


def _finish(report: dict[str, Any], args: argparse.Namespace) -> int:
    from mlops_nb.errors import DataValidationError
    from mlops_nb.guards.validation import report as report_mod

    if args.report_dir:
        files = report_mod.write(report, Path(args.report_dir), f"{report['name']}_validation")
        report["report_files"] = [str(f) for f in files]
    _print_report(report, args.json)
    if report["blocking"]:
        raise DataValidationError(report["name"], report["problems"],
                                  report.get("report_files", [None])[-1])
    return 0


def cmd_validate_data(args: argparse.Namespace) -> int:
    from mlops_nb.errors import UsageError
    from mlops_nb.guards.validation import check, read_table
    from mlops_nb.guards.validation import schema as schema_mod

    data = read_table(Path(args.data), allow_pickle=args.allow_pickle)
    if args.infer:
        if not args.schema:
            raise UsageError("--infer needs --schema PATH to write the schema to")
        schema_mod.save(schema_mod.infer(data, min_rows=args.min_rows, ranges=args.ranges),
                        Path(args.schema))
        print(f"wrote {args.schema}: {len(data.columns)} columns; review it and commit it")
        return 0
    if not args.schema and not args.reference:
        raise UsageError("give --schema PATH, --reference DATA, or both")
    schema = schema_mod.load(Path(args.schema)) if args.schema else None
    reference = (read_table(Path(args.reference), allow_pickle=args.allow_pickle)
                 if args.reference else None)
    report = check(data, schema=schema, schema_path=args.schema, reference=reference,
                   drift=_drift_config(args) if reference is not None else None,
                   warn_only=args.warn_only, name=args.name or Path(args.data).stem)
    return _finish(report, args)


def cmd_drift(args: argparse.Namespace) -> int:
    from mlops_nb.guards.validation import check, read_table

    report = check(read_table(Path(args.current), allow_pickle=args.allow_pickle),
                   schema=None,
                   reference=read_table(Path(args.reference), allow_pickle=args.allow_pickle),
                   drift=_drift_config(args),
                   warn_only=args.warn_only, name=args.name or Path(args.current).stem)
    return _finish(report, args)


def _registry(args: argparse.Namespace) -> Any:
    from mlops_nb.guards.registry import Registry, default_root

    return Registry(default_root(_root(args)))


def cmd_models(args: argparse.Namespace) -> int:
    from mlops_nb.errors import UsageError
    from mlops_nb.guards.registry import parse_ref

    reg = _registry(args)
    if args.action == "list":
        versions = reg.versions(parse_ref(args.ref)[0] if args.ref else None)
        if args.json:
            print(json.dumps([v.to_dict() for v in versions], indent=1, default=str))
        elif not versions:
            print("no models registered yet")
        for v in [] if args.json else versions:
            metrics = ", ".join(f"{k}={val:.4g}" if isinstance(val, float) else f"{k}={val}"
                                for k, val in v.metrics.items())
            print(f"{v.ref:<16} {v.stage:<11} {v.created}  {v.format:<6} {metrics}")
        return 0
    if not args.ref:
        raise UsageError(f"`models {args.action}` needs a model, e.g. iris:2 or iris@production")
    name, which = parse_ref(args.ref)
    if args.action == "show":
        from mlops_nb.export.onnx_export import recorded

        mv = reg.get(name, which)
        print(json.dumps({**mv.to_dict(), "onnx": recorded(mv.path)}, indent=1, default=str))
        return 0
    if which is None:
        raise UsageError("say which version to move, e.g. `models promote iris:2`")
    mv = reg.set_stage(name, reg.get(name, which).version, args.stage,
                       reason=args.reason or "by hand (mlops-nb models promote)")
    print(f"{mv.ref} is now {mv.stage}")
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    from mlops_nb.guards import lineage
    from mlops_nb.guards.registry import parse_ref

    root = _root(args)
    name, which = parse_ref(args.model)
    mv = _registry(args).get(name, which)
    store = lineage.LineageStore(lineage.default_path(root))
    run_id = mv.info.get("run_id") or store.model_run(mv.name, mv.version)
    run = store.run(run_id)
    if args.json:
        print(json.dumps({"model": mv.to_dict(), "run": run}, indent=1, default=str))
        return 0
    print(f"model {mv.ref} ({mv.stage}), registered {mv.created}")
    print(f"  metrics: {json.dumps(mv.metrics)}")
    dirty = " (uncommitted changes)" if run["git_dirty"] else ""
    print(f"run {run['run_id']}: {run['status']}, git {run['git_commit'] or '-'}{dirty}")
    print("  params: " + ", ".join(f"{k}={v}" for k, v in sorted(run["params"].items())))
    print("  data:")
    for path, sha in sorted(mv.info.get("data", {}).items()):
        print(f"    {path}  {(sha or 'missing')[:12]}")
    print("  code:")
    for path, sha in sorted(mv.info.get("code", {}).items()):
        print(f"    {path}  {(sha or 'missing')[:12]}")
    print("  steps:")
    for s in run["steps"]:
        took = f"{s['duration']:.1f}s" if s["duration"] is not None else "-"
        again = " (reused)" if s["reused"] else ""
        print(f"    {s['step']:<16} {s['status']:<10} {took:>7}{again}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from mlops_nb.guards import lineage

    runs = lineage.LineageStore(lineage.default_path(_root(args))).runs(args.n)
    if args.json:
        print(json.dumps(runs, indent=1, default=str))
        return 0
    if not runs:
        print("no runs recorded yet")
    for r in runs:
        models = "; ".join(f"{m['name']}{':' + str(m['version']) if m['version'] else ''}"
                           f" {m['decision']}"
                           + (f" ({m['reasons'][0]})" if m["decision"] == "blocked" else "")
                           for m in r["models"]) or r["note"] or "-"
        ran = sum(1 for s in r["steps"] if not s["reused"])
        print(f"{r['run_id']}  {r['status']:<9} {r['finished'][:19]}  git"
              f" {(r['git_commit'] or '-')[:8]}  steps run {ran}/{len(r['steps'])}  {models}")
    return 0


def _drift_flags(s: argparse.ArgumentParser) -> None:
    s.add_argument("--method", choices=["ks", "chisquare", "wasserstein", "jensenshannon",
                                        "psi"], help="one drift method for every column")
    s.add_argument("--threshold", type=float, help="drift threshold (p-value or distance)")
    s.add_argument("--dataset-share", type=float,
                   help="share of drifted columns that makes the data set drift (0.5)")
    s.add_argument("--drift-key", default="guards.drift",
                   help="params.yaml key holding drift settings (default guards.drift)")


def _report_flags(s: argparse.ArgumentParser) -> None:
    s.add_argument("--allow-pickle", action="store_true",
                   help="read a step output folder holding a pickle or skops file (they can"
                        " run code when loaded): only for folders you trust")
    s.add_argument("--warn-only", action="store_true", help="report problems, exit 0")
    s.add_argument("--report-dir", help="write NAME_validation.json and .html here")
    s.add_argument("--name", help="name in the report (default: the data file's stem)")
    s.add_argument("--json", action="store_true", help="print the report as JSON")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the guard commands to the `mlops-nb` parser."""
    s = sub.add_parser("validate-data", help="check data against a schema (and drift vs"
                                             " reference data); exit 7 on a blocking problem")
    s.add_argument("data", help=".parquet, .csv, .json, or a step output folder")
    s.add_argument("--schema", help="schema YAML to check against (or write, with --infer)")
    s.add_argument("--infer", action="store_true", help="infer the schema from DATA, write it")
    s.add_argument("--min-rows", type=int, default=1, help="with --infer: rows required")
    s.add_argument("--ranges", action="store_true",
                   help="with --infer: the observed min and max become hard limits")
    s.add_argument("--reference", help="reference data to measure drift against")
    _drift_flags(s)
    _report_flags(s)
    s.set_defaults(func=cmd_validate_data)

    s = sub.add_parser("drift", help="per-column drift of CURRENT vs REFERENCE; exit 7 on"
                                     " data-set drift")
    s.add_argument("reference", help="the data to compare against (e.g. the training data)")
    s.add_argument("current", help="the data to check (e.g. served or new data)")
    _drift_flags(s)
    _report_flags(s)
    s.set_defaults(func=cmd_drift)

    s = sub.add_parser("models", help="the model registry: list, show, promote, rollback")
    msub = s.add_subparsers(dest="action", required=True,
                            metavar="{list,show,promote,rollback}",
                            help="what to do with the registry")
    m = msub.add_parser("list", help="registered versions, of every model or of NAME")
    m.add_argument("ref", nargs="?", metavar="NAME", help="only this model's versions")
    m.add_argument("--json", action="store_true", help="print JSON")
    m.set_defaults(func=cmd_models)
    m = msub.add_parser("show", help="one version: stage, metrics, hashes, params, run")
    m.add_argument("ref", metavar="NAME:VERSION", help="e.g. iris:2 or iris@production")
    m.add_argument("--json", action="store_true", help="print JSON (the default output)")
    m.set_defaults(func=cmd_models)
    m = msub.add_parser("promote", help="move a version to a stage (default production)")
    m.add_argument("ref", metavar="NAME:VERSION", help="e.g. iris:2")
    m.add_argument("--stage", default="production",
                   choices=["production", "staging", "candidate", "archived"],
                   help="the stage to move to (default production)")
    m.add_argument("--reason", help="why, kept in the version's history")
    m.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    m.set_defaults(func=cmd_models)
    from mlops_nb.cli.alerting import add_rollback

    add_rollback(msub)

    s = sub.add_parser("lineage", help="which data, code and params made MODEL_VERSION")
    s.add_argument("model", help="NAME:VERSION or NAME@production")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_lineage)

    s = sub.add_parser("runs", help="recent pipeline runs from the lineage store")
    s.add_argument("-n", type=int, default=20, help="how many (default 20)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_runs)
