"""The pipeline spec planned as KFP components: plain frozen data, no kfp import.

One component per step. Its inputs are the artifacts it loads (one per producer and
artifact, so a bundle stays one artifact) and the pipeline parameters it reads; its outputs
are its artifacts, the executed notebook (HTML) and, when the step has metrics, a Metrics
artifact. `prev:` edges that carry no data become `.after()`. Every parameter of every
notebook becomes a pipeline parameter `GROUP_NAME` whose default is its params.yaml value.

Data files a step reads by literal path go to that step only, never in its command line:
they travel in the image (the export puts them, named by their SHA-256, beside the
Dockerfile) or, with --data-uri, as importer inputs.

The rule: what cannot run where steps share no filesystem is refused here, naming the step,
before anything is written: a step that writes project files by literal path (nothing carries
them to the next pod), an output that is an open file handle.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import keyword
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_nb.artifacts import META
from mlops_nb.compile.notebooks import has_metrics
from mlops_nb.errors import ExportError
from mlops_nb.export.resources import (
    NotebookSettings,
    StepResources,
    notebook_settings,
    step_resources,
)
from mlops_nb.notebook.magics import strip_magics
from mlops_nb.pipeline.spec import PipelineSpec, StepSpec
from mlops_nb.project import Layout

HTML_OUT = "notebook"
METRICS_OUT = "metrics"
# libraries whose objects are models (KFP's Model type) when a step hands them on
MODEL_LIBS = ("sklearn", "xgboost", "lightgbm", "catboost", "torch", "tensorflow", "keras",
              "statsmodels", "skops")
# calls whose result is a handle on this machine, never data another pod could use
HANDLE_CALLS = ("open", "connect", "socket", "TemporaryFile", "NamedTemporaryFile", "Popen",
                "mkstemp", "urlopen")


@dataclass(frozen=True)
class Param:
    """A pipeline parameter: `name` is GROUP_VAR; kind is a KFP type or "json" (as text)."""

    name: str
    group: str
    var: str
    default: Any
    kind: str


@dataclass(frozen=True)
class ArtifactIn:
    name: str  # the component's input name
    producer: str
    artifact: str
    kind: str  # Dataset, Model or Artifact
    output: str  # the producer's output name


@dataclass(frozen=True)
class ArtifactOut:
    name: str
    artifact: str
    kind: str


@dataclass(frozen=True)
class StepPlan:
    step: str
    source: str  # the source notebook, project-relative
    folder: str  # its folder, where the step runs
    text: str  # the compiled step notebook
    params: tuple[tuple[str, str, str], ...]  # (variable, pipeline parameter, kind)
    inputs: tuple[ArtifactIn, ...]
    outputs: tuple[ArtifactOut, ...]
    after: tuple[str, ...]
    data: tuple[tuple[str, str], ...]  # (project-relative path, input name if imported)
    metrics: bool
    resources: StepResources
    files: tuple[tuple[str, str], ...] = ()  # (file, sha256) it finds in the image
    volumes: tuple[tuple[str, str], ...] = ()  # (claim, mount path)


@dataclass(frozen=True)
class KfpPlan:
    name: str
    description: str
    params: tuple[Param, ...]
    steps: tuple[StepPlan, ...]
    files: tuple[tuple[str, str], ...]  # (project-relative file, sha256): the image's data
    data_uri: str | None

    def step(self, name: str) -> StepPlan:
        return next(s for s in self.steps if s.step == name)


def _kind_of_value(value: Any) -> str:
    for t, kind in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str")):
        if isinstance(value, t):
            return kind
    # None, lists and dicts travel as JSON text: KFP keeps a list's or dict's numbers as
    # protobuf doubles, so the step would get [1.0, 2.0] for [1, 2]
    return "json"


def _plain(value: Any) -> Any:
    """A params.yaml value (ruamel's round-trip types) as plain JSON data."""
    return json.loads(json.dumps(value))


def artifact_kind(layout: Layout, step: str, artifact: str) -> str:
    """KFP's type for an output, from its last local run (meta.json); Artifact if never run."""
    try:
        meta = json.loads((layout.output(step, artifact) / META).read_text())
    except (OSError, ValueError):
        return "Artifact"
    if meta.get("format") in ("arrow", "parquet", "npy"):
        return "Dataset"
    top = str(meta.get("type", "")).split(".")[0]
    if meta.get("format") == "skops" or top in MODEL_LIBS:
        return "Model"
    return "Artifact"


def _ident(text: str) -> str:
    """A Python identifier made of `text` (KFP's input and parameter names are identifiers)."""
    out = "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_"
                  for c in text.replace("+", "_and_"))
    if not out or out[0].isdigit() or keyword.iskeyword(out):
        out = "_" + out
    return out


def _check_handles(step: StepSpec) -> None:
    handed = set(step.outputs) | {m for _, ms in step.bundles for m in ms}
    for cell in step.cells:
        try:
            tree = ast.parse(strip_magics(cell.source))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            names: list[str] = []
            value: ast.AST | None = None
            if isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
                value = node.value
            elif isinstance(node, ast.withitem) and isinstance(node.optional_vars, ast.Name):
                names, value = [node.optional_vars.id], node.context_expr
            if not isinstance(value, ast.Call):
                continue
            func = value.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            for name in names:
                if name in handed and called in HANDLE_CALLS:
                    raise ExportError(step.name, (
                        f"hands '{name}' ({step.notebook} cell {cell.index}: {called}(...))"
                        " to later steps: a handle on this machine cannot travel between"
                        " pods; hand on the data read from it, or its path"))


def _check_writes(step: StepSpec) -> None:
    if step.writes:
        raise ExportError(step.name, (
            f"writes {', '.join(step.writes)} by literal path, outside its outputs: on a"
            " cluster steps share no filesystem, so the file would be lost with the pod;"
            " hand the data on as a variable instead (it then travels as an artifact)"))


def _files(root: Path, rels: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """Every file under the data paths `rels`, with its SHA-256."""
    out: list[tuple[str, str]] = []
    for rel in sorted(set(rels)):
        path = root / rel
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            digest = hashlib.sha256()
            with f.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
            out.append((f.relative_to(root).as_posix(), digest.hexdigest()))
    return tuple(out)


def make_plan(root: Path, spec: PipelineSpec, step_texts: dict[str, str],
              values: dict[str, dict[str, Any]], name: str,
              data_uri: str | None = None) -> KfpPlan:
    """Plan the export; `values` are params.yaml's groups, `step_texts` the step notebooks."""
    layout = Layout(root)
    params: list[Param] = []
    seen: dict[str, str] = {}
    for nb in spec.notebooks:
        group = values.get(nb.stem) or {}
        for var, _ in nb.params:
            pname = _ident(f"{nb.stem}_{var}")
            if pname in seen:
                raise ExportError(None, f"parameters {seen[pname]} and {nb.stem}.{var} would"
                                        f" both be the pipeline parameter '{pname}'; rename one")
            seen[pname] = f"{nb.stem}.{var}"
            value = _plain(group.get(var))
            kind = _kind_of_value(value)
            params.append(Param(pname, nb.stem, var, json.dumps(value) if kind == "json"
                                else value, kind))
    by_var = {(p.group, p.var): p for p in params}
    settings: dict[str, NotebookSettings] = {nb.path: notebook_settings(root, nb.path)
                                             for nb in spec.notebooks}
    steps: list[StepPlan] = []
    outputs_of: dict[str, dict[str, str]] = {}
    for step in spec.steps:
        _check_handles(step)
        _check_writes(step)
        nb = spec.notebook(step.notebook)
        nbs = settings[step.notebook]
        res = step_resources(root, step, nbs.defaults)
        reserved = {HTML_OUT, METRICS_OUT} | set(step.params)
        outs: list[ArtifactOut] = []
        for art in step.outputs:
            oname = _ident(art)
            while oname in reserved:
                oname += "_"
            reserved.add(oname)
            outs.append(ArtifactOut(oname, art, artifact_kind(layout, step.name, art)))
        outputs_of[step.name] = {o.artifact: o.name for o in outs}
        ins: list[ArtifactIn] = []
        pairs = sorted({(p, a) for v, p in step.inputs if (a := spec.step(p).artifact_for(v))})
        for producer, art in pairs:
            iname = _ident(f"{producer}_{art}")
            while iname in reserved:
                iname += "_"
            reserved.add(iname)
            ins.append(ArtifactIn(iname, producer, art, artifact_kind(layout, producer, art),
                                  outputs_of[producer][art]))
        producers = {p for p, _ in pairs}
        data = []
        for rel in sorted(set(step.data_deps)):
            dname = ""
            if data_uri is not None:
                dname = _ident(f"data_{rel}")
                while dname in reserved:
                    dname += "_"
                reserved.add(dname)
            data.append((rel, dname))
        steps.append(StepPlan(
            step=step.name, source=nb.path, folder=nb.folder, text=step_texts[step.name],
            params=tuple((v, by_var[(nb.stem, v)].name, by_var[(nb.stem, v)].kind)
                         for v in step.params),
            inputs=tuple(ins), outputs=tuple(outs),
            after=tuple(u for u in step.upstream if u not in producers),
            data=tuple(data), metrics=has_metrics(step),
            resources=dataclasses.replace(res, caching=res.caching and nbs.caching),
            files=() if data_uri is not None else _files(root, step.data_deps),
            volumes=nbs.volumes))
    files = tuple(sorted({f for sp in steps for f in sp.files}))
    sources = ", ".join(n.path for n in spec.notebooks)
    return KfpPlan(name, f"mlops_nb pipeline of {sources}", tuple(params), tuple(steps),
                   files, data_uri)
