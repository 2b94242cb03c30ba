"""CLI command of the parameters: `mlops-nb params sync --to-notebook | --to-params`.

Registered by cli.build_parser. Compares the notebooks' parameters cells with params.yaml
(pipeline.paramsync) and writes one side's values into the other; with nothing to do it says
so and writes nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_params_sync(args: argparse.Namespace) -> int:
    from mlops_nb import compile as compile_mod
    from mlops_nb.pipeline import paramsync
    from mlops_nb.project import PARAMS, find_root

    root = find_root(Path(args.project) if args.project else None)
    spec, _ = compile_mod.render(root)
    drifts = paramsync.project_drifts(root, spec.notebooks)
    if not drifts:
        print(f"{PARAMS} and the notebooks' parameters cells agree; nothing to write")
        return 0
    for d in drifts:
        print(d.line())
    if args.to_notebook:
        for rel in paramsync.to_notebook(root, drifts):
            print(f"wrote {rel} (its parameters cell now holds {PARAMS}'s values); reload it"
                  " in JupyterLab if it is open there")
    else:
        paramsync.to_params(root, drifts)
        print(f"wrote {PARAMS} (the notebooks' values)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `params` to the `mlops-nb` parser."""
    p = sub.add_parser("params", help="the notebooks' parameters against params.yaml")
    verbs = p.add_subparsers(dest="params_command", required=True, metavar="VERB")
    s = verbs.add_parser("sync", help="make params.yaml and the notebooks' parameters cells"
                                      " agree (`mlops-nb status` says where they differ)")
    way = s.add_mutually_exclusive_group(required=True)
    way.add_argument("--to-notebook", action="store_true",
                     help="write params.yaml's values into the parameters cells (comments"
                          " and layout kept)")
    way.add_argument("--to-params", action="store_true",
                     help="write the parameters cells' values into params.yaml")
    s.set_defaults(func=cmd_params_sync)
