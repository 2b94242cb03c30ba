"""Each step's component function as Python source, made from data.

Why source at all: the kfp SDK makes a lightweight component from a function's source text,
which it embeds in the package and runs in the pod. The rule: nothing of the project is
pasted into that text. What the step needs (its notebook, paths, names, data digests) enters
as `repr()` of one JSON string; the only other words are the component's input and output
names, each checked to be a plain Python identifier, and KFP's type names from a fixed table.
The body is the same for every step: it hands the JSON and the function's arguments to
`mlops_nb.export.component.run_step`. The pipeline is not source at all: `build` wires it
with the SDK's objects.
"""

from __future__ import annotations

import json
import keyword
from typing import Any

from mlops_nb.errors import ExportError
from mlops_nb.export.plan import HTML_OUT, METRICS_OUT, StepPlan

RUN_STEP = "_mlops_nb_run_step"
# names the body uses: an argument may not shadow them
RESERVED = {RUN_STEP, "locals"}
ANNOTATION = {"bool": "bool", "int": "int", "float": "float", "str": "str", "list": "list",
              "dict": "dict", "json": "str"}
KINDS = {"Dataset", "Model", "Artifact"}


def ident(name: str, step: str, what: str) -> str:
    """`name` if it may stand in source as an argument name; else an ExportError."""
    if (not name.isidentifier() or not name.isascii() or keyword.iskeyword(name)
            or name in RESERVED or name.startswith("__")):
        raise ExportError(step, f"{what} {name!r} cannot name a KFP component input or"
                                " output (a Python identifier is needed); rename it")
    return name


def step_spec(sp: StepPlan) -> dict[str, Any]:
    """What `run_step` needs besides the arguments: plain JSON data."""
    return {
        "step": sp.step, "source": sp.source, "folder": sp.folder, "notebook": sp.text,
        "parameters": [v for v, _, _ in sp.params],
        "json_parameters": [v for v, _, k in sp.params if k == "json"],
        "inputs": {i.name: f"{i.producer}/{i.artifact}" for i in sp.inputs},
        "outputs": {o.name: o.artifact for o in sp.outputs},
        "imported": {name: rel for rel, name in sp.data if name},
        "files": {rel: digest for rel, digest in sp.files},
        "html": HTML_OUT, "metrics": METRICS_OUT if sp.metrics else None,
    }


def component_source(sp: StepPlan) -> str:
    """The component function of step `sp`."""
    name = ident(sp.step, sp.step, "the step name")
    args: list[tuple[str, str]] = []
    args += [(i.name, f"Input[{i.kind}]") for i in sp.inputs]
    args += [(dname, "Input[Dataset]") for _, dname in sp.data if dname]
    args += [(var, ANNOTATION[kind]) for var, _, kind in sp.params]
    args += [(o.name, f"Output[{o.kind}]") for o in sp.outputs]
    args.append((HTML_OUT, "Output[HTML]"))
    if sp.metrics:
        args.append((METRICS_OUT, "Output[Metrics]"))
    seen: set[str] = set()
    lines = [f"def {name}("]
    for arg, annotation in args:
        ident(arg, sp.step, "the name")
        if arg in seen:
            raise ExportError(sp.step, f"two inputs or outputs of its component are named"
                                       f" {arg!r}; rename the variable")
        seen.add(arg)
        kind = annotation.split("[")[-1].rstrip("]")
        assert kind in KINDS | {"HTML", "Metrics"} | set(ANNOTATION.values()), annotation
        lines.append(f"    {arg}: {annotation},")
    spec = json.dumps(step_spec(sp), sort_keys=True)
    lines += [
        "):",
        f"    from mlops_nb.export.component import run_step as {RUN_STEP}",
        "",
        f"    {RUN_STEP}({spec!r}, locals())",
    ]
    return "\n".join(lines) + "\n"
