"""CLI command of the exports: `mlops-nb export kfp`.

Registered by cli.build_parser; imports nothing heavy at module level. The command parses,
calls export.command.export_and_run and renders where everything went.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

from mlops_nb.errors import UsageError

_KFP_LOG = re.compile(r"^\d\d:\d\d:\d\d\.\d+ - ")  # kfp.local's own log lines, not a task's


def _env(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--env {item!r}: expected NAME=VALUE")
        out[key] = value
    return out


def cmd_export_kfp(args: argparse.Namespace) -> int:
    from mlops_nb.export.command import export_and_run
    from mlops_nb.project import find_root

    root = find_root(Path(args.project) if args.project else None)
    if args.submit and not args.host:
        raise UsageError("--submit needs --host URL (the Kubeflow Pipelines endpoint)")

    def show(line: str) -> None:
        if args.verbose or _KFP_LOG.match(line):
            print(line, flush=True)

    outcome = export_and_run(
        root, Path(args.output).resolve() if args.output else None, image=args.image,
        pipeline_root=args.pipeline_root, data_uri=args.data_uri, env=_env(args.env),
        settings=args.set, local=args.local, host=args.host if args.submit else None,
        experiment=args.experiment, on_line=show)
    res = outcome.export
    for path in res.written:
        print(f"wrote {_rel(path, root)}")
    print(f"{len(res.plan.steps)} steps, image {res.image}")
    if outcome.local is not None:
        print(f"local run: {_rel(outcome.local.folder, root)}")
        for step in outcome.local.steps:
            for name, path in step.artifacts.items():
                print(f"  {step.step}.{name}: {_rel(path, root)}")
            for name, value in sorted(step.metrics.items()):
                print(f"  {step.step} metric {name} = {value}")
    if outcome.run_id is not None:
        print(f"submitted: run {outcome.run_id} on {args.host}")
    return 0


def _rel(path: Path, root: Path) -> Any:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return os.fspath(path)


def register(sub: Any) -> None:
    p = sub.add_parser("export", help="export the pipeline to another engine")
    engines = p.add_subparsers(dest="engine", required=True)
    s = engines.add_parser(
        "kfp", help="write a Kubeflow Pipelines v2 package (also runs on Vertex AI Pipelines)")
    s.add_argument("-o", "--output", metavar="FILE",
                   help="the package to write (default kfp/pipeline.yaml; the Dockerfile,"
                        " requirements.lock and image.txt go beside it)")
    s.add_argument("--image", help="the image steps run in (default: mlops-nb-PROJECT:TAG, TAG"
                                   " a hash of the generated Dockerfile and lock; written"
                                   " to image.txt)")
    s.add_argument("--pipeline-root", metavar="URI",
                   help="where the cluster keeps artifacts, e.g. gs://bucket/root")
    s.add_argument("--data-uri", metavar="URI",
                   help="data files steps read become importer inputs from URI/<project path>"
                        " (default: they go in the image, beside the Dockerfile in data/)")
    s.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="an environment variable of every step (repeatable)")
    s.add_argument("--local", action="store_true",
                   help="run the package here with kfp.local's SubprocessRunner")
    s.add_argument("-S", "--set", action="append", default=[], metavar="GROUP.NAME=VALUE",
                   help="a parameter value for this run, as `dvc exp run -S` (repeatable)")
    s.add_argument("--submit", action="store_true", help="submit it with kfp.Client")
    s.add_argument("--host", metavar="URL", help="the Kubeflow Pipelines endpoint for --submit")
    s.add_argument("--experiment", help="the KFP experiment to submit the run to")
    s.set_defaults(func=cmd_export_kfp)
    o = engines.add_parser(
        "onnx", help="the registered model as ONNX for the edge, checked equal to it",
        description="Convert a registered model (its whole scikit-learn Pipeline) to ONNX"
                    " with skl2onnx, check it with onnxruntime against the model on the"
                    " version's training sample (same class for every row, probabilities"
                    " within 1e-4), and write NAME-V.onnx; the registry records it beside the"
                    " version. Nothing is written when the check fails.")
    o.add_argument("model", help="NAME, NAME:VERSION or NAME@STAGE")
    o.add_argument("-o", "--output", metavar="DIR", default=None,
                   help="the folder for NAME-V.onnx (default: the project folder)")
    o.set_defaults(func=cmd_export_onnx)


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from mlops_nb.export.onnx_export import export
    from mlops_nb.project import find_root

    root = find_root(Path(args.project) if args.project else None)
    out = Path(args.output).absolute() if args.output else root
    if not out.is_dir():
        raise UsageError(f"--output {args.output}: not a folder")
    result = export(root, args.model, out)
    shown = result.path
    try:
        shown = str(Path(result.path).relative_to(root))
    except ValueError:
        pass
    same = "same class for every row, " if result.classes_equal else ""
    print(f"wrote {shown} ({result.bytes:,} bytes, sha256 {result.sha256[:12]}, opsets"
          f" {result.opsets})")
    print(f"checked on {result.rows_checked} training rows: {same}largest difference"
          f" {result.max_abs_diff:.2g} (tolerance {result.atol:g} + {result.rtol:g} relative);"
          f" {result.seconds:.1f} s")
    return 0
