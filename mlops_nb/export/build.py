"""`mlops-nb export kfp`: the project's pipeline as a KFP v2 package, with the kfp SDK.

The package is the IR YAML that `kfp.compiler.Compiler` writes, built from the same
PipelineSpec and step notebooks that feed dvc.yaml and pipeline.yaml (rendered in memory: the
project's files are not touched). Beside it go the image's Dockerfile, its locked
requirements and the default image name. Exporting twice gives byte-identical files.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import linecache
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_nb.artifacts import atomic
from mlops_nb.errors import ExportError, UsageError
from mlops_nb.export import image as image_mod
from mlops_nb.export.plan import KfpPlan, StepPlan, make_plan
from mlops_nb.export.source import component_source
from mlops_nb.pipeline import params as params_mod
from mlops_nb.pipeline.spec import PipelineSpec
from mlops_nb.project import PARAMS, STEPS

log = logging.getLogger(__name__)
DEFAULT_OUT = "kfp/pipeline.yaml"


@dataclass(frozen=True)
class ExportResult:
    package: Path
    written: tuple[Path, ...]
    image: str
    plan: KfpPlan


def require_kfp() -> Any:
    try:
        import kfp
    except ImportError:
        raise UsageError("the kfp SDK is not installed: pip install 'mlops_nb[kfp]'") from None
    return kfp


def project_name(root: Path) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", root.name.lower()).strip("-")
    return name or "pipeline"


def _values(root: Path, spec: PipelineSpec) -> dict[str, dict[str, Any]]:
    """params.yaml's values per notebook group; a parameter not there yet keeps its default."""
    data = params_mod.read(root / PARAMS, PARAMS)
    out: dict[str, dict[str, Any]] = {}
    for nb in spec.notebooks:
        found = data.get(nb.stem)
        group: dict[str, Any] = found if isinstance(found, dict) else {}
        out[nb.stem] = {var: group[var] if var in group else ast.literal_eval(lit)
                        for var, lit in nb.params}
    return out


def plan_project(root: Path, data_uri: str | None = None) -> KfpPlan:
    from mlops_nb import compile as compile_mod

    spec, files = compile_mod.render(root)
    texts = {s.name: files[f"{STEPS}/{s.name}.ipynb"] for s in spec.steps}
    return make_plan(root, spec, texts, _values(root, spec), project_name(root), data_uri)


KFP_TYPES: dict[str, type] = {"bool": bool, "int": int, "float": float, "str": str,
                              "list": list, "dict": dict, "json": str}
# kfp puts a component's source in one argument of `sh -ec`: Linux's MAX_ARG_STRLEN is
# 128 KiB, and kfp's own wrapper and imports need a little of it
ARG_LIMIT = 120 * 1024
DSL_NAMES = ("HTML", "Artifact", "Dataset", "Input", "Metrics", "Model", "Output")


def _component(dsl: Any, sp: StepPlan, image: str) -> Any:
    """The step's lightweight component. Its source (see `source`) is compiled from memory:
    kfp reads it back through linecache, so no file is written for it."""
    text = component_source(sp)
    if len(text.encode()) > ARG_LIMIT:
        raise ExportError(sp.step, (
            f"its compiled notebook is {len(text.encode()) // 1024} KiB, too large for the"
            f" component's command line (Linux refuses one argument over 128 KiB): move large"
            " literals into a data file the step reads (data files travel in the image)"))
    filename = f"<mlops-nb export kfp: step {sp.step}>"
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    try:
        namespace: dict[str, Any] = {"__name__": "mlops_nb_kfp_components"}
        namespace.update({n: getattr(dsl, n) for n in DSL_NAMES})
        exec(compile(text, filename, "exec", dont_inherit=True), namespace)  # noqa: S102 - made from data
        return dsl.component(namespace[sp.step], base_image=image, install_kfp_package=False)
    finally:
        linecache.cache.pop(filename, None)


def _configure(task: Any, sp: StepPlan, tasks: dict[str, Any], kubernetes: Any,
               env: tuple[tuple[str, str], ...]) -> None:
    task.set_display_name(sp.step)
    for up in sp.after:
        task.after(tasks[up])
    r = sp.resources
    if r.cpu:
        task.set_cpu_limit(r.cpu)
    if r.memory:
        task.set_memory_limit(r.memory)
    if r.accelerator:
        task.set_accelerator_type(r.accelerator[0])
        task.set_accelerator_limit(r.accelerator[1])
    if not r.caching:
        task.set_caching_options(False)
    for key, value in r.labels:
        kubernetes.add_pod_label(task, key, value)
    for key, value in r.annotations:
        kubernetes.add_pod_annotation(task, key, value)
    for secret, key, var in r.secrets:
        kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env={key: var})
    for claim, mount in sp.volumes:
        kubernetes.mount_pvc(task, pvc_name=claim, mount_path=mount)
    for name, value in env:
        task.set_env_variable(name=name, value=value)


def _pipeline_function(dsl: Any, plan: KfpPlan, components: dict[str, Any], kubernetes: Any,
                       env: tuple[tuple[str, str], ...]) -> Any:
    """The pipeline as a Python function the SDK can trace: its signature is set from the
    plan's parameters (names are identifiers, defaults are values), its body wires tasks."""
    names = [p.name for p in plan.params]

    def pipeline(*args: Any) -> None:
        values = dict(zip(names, args, strict=True))
        imported: dict[str, Any] = {}
        if plan.data_uri is not None:
            for rel in sorted({rel for sp in plan.steps for rel, name in sp.data if name}):
                task = dsl.importer(artifact_uri=plan.data_uri.rstrip("/") + "/" + rel,
                                    artifact_class=dsl.Dataset, reimport=False)
                task.set_display_name("data: " + rel)
                imported[rel] = task
        tasks: dict[str, Any] = {}
        for sp in plan.steps:
            kwargs = {i.name: tasks[i.producer].outputs[i.output] for i in sp.inputs}
            kwargs.update({name: imported[rel].output for rel, name in sp.data if name})
            kwargs.update({var: values[pname] for var, pname, _ in sp.params})
            tasks[sp.step] = components[sp.step](**kwargs)
            _configure(tasks[sp.step], sp, tasks, kubernetes, env)

    try:
        pipeline.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
            inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                              default=p.default, annotation=KFP_TYPES[p.kind])
            for p in plan.params])
    except ValueError as exc:
        raise ExportError(None, f"a pipeline parameter cannot be named so: {exc}") from None
    return pipeline


def step_images(plan: KfpPlan, image: str) -> dict[str, str]:
    """Each step's image: the main one, or the one derived from it on the step's base."""
    return {sp.step: image_mod.derived_image(image, sp.resources.image)
            if sp.resources.image else image for sp in plan.steps}


def build_yaml(plan: KfpPlan, image: str, pipeline_root: str | None = None,
               env: tuple[tuple[str, str], ...] = ()) -> str:
    """Compile the plan with the kfp SDK; returns the package's YAML text."""
    require_kfp()
    from kfp import dsl

    kubernetes: Any = None
    if any(sp.resources.labels or sp.resources.annotations or sp.resources.secrets
           or sp.volumes for sp in plan.steps):
        try:
            kubernetes = importlib.import_module("kfp.kubernetes")
        except ImportError:
            raise UsageError("pod labels, annotations, secrets and volumes need"
                             " kfp-kubernetes: pip install 'mlops_nb[kfp]'") from None
    images = step_images(plan, image)
    components = {sp.step: _component(dsl, sp, images[sp.step]) for sp in plan.steps}
    func = _pipeline_function(dsl, plan, components, kubernetes, env)
    pipeline = dsl.pipeline(name=plan.name, description=plan.description,
                            pipeline_root=pipeline_root)(func)
    return package_text(plan.name, pipeline)


def package_text(name: str, pipeline: Any) -> str:
    """The IR YAML of a traced pipeline, as `Compiler().compile` writes it but for its header:
    kfp's header comment pastes parameter defaults and the description, newlines included,
    so a default holding a newline would break out of the comment into the YAML."""
    import yaml
    from google.protobuf import json_format

    docs = [json_format.MessageToDict(pipeline.pipeline_spec)]
    if len(pipeline.platform_spec.platforms) > 0:
        docs.append(json_format.MessageToDict(pipeline.platform_spec))
    assert re.fullmatch(r"[a-z0-9-]+", name), name  # project_name() makes it so
    header = f"# PIPELINE DEFINITION\n# Name: {name}\n"
    return header + yaml.safe_dump_all(docs, sort_keys=True)


def _write(path: Path, text: str, written: list[Path], root: Path | None) -> None:
    if path.is_file() and not path.is_symlink() and path.read_text(encoding="utf-8") == text:
        return
    atomic.write_text(path, text, root=root)
    written.append(path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_data(root: Path, folder: Path, files: tuple[tuple[str, str], ...],
                written: list[Path], base: Path | None) -> None:
    """The data files steps read, beside the Dockerfile, each named by its SHA-256; files of
    earlier exports that no step reads any more are removed (so the image stays small)."""
    data = folder / image_mod.DATA
    if data.is_symlink():
        raise UsageError(f"{data} is a symbolic link: remove it (the export writes the data"
                         " files the image holds there)")
    wanted = {sha for _, sha in files}
    if files:
        atomic.make_folder(data, root=base)
    for rel, sha in files:
        dest = data / sha
        if dest.is_file() and not dest.is_symlink() and _sha256(dest) == sha:
            continue
        content = (root / rel).read_bytes()
        if hashlib.sha256(content).hexdigest() != sha:
            raise UsageError(f"{rel} changed during the export: export again")
        atomic.write_bytes(dest, content, root=base)
        written.append(dest)
    if data.is_dir():
        for old in data.iterdir():
            if re.fullmatch(r"[0-9a-f]{64}", old.name) and old.name not in wanted:
                old.unlink()


def export_kfp(root: Path, out: Path | None = None, *, image: str | None = None,
               pipeline_root: str | None = None, data_uri: str | None = None,
               env: dict[str, str] | None = None) -> ExportResult:
    """Write the KFP package (default kfp/pipeline.yaml) and, beside it, the image files."""
    plan = plan_project(root, data_uri)
    package = out if out is not None else root / DEFAULT_OUT
    folder = package.parent
    lock = image_mod.lock_text(sp.text for sp in plan.steps)
    dockerfile = image_mod.dockerfile_text(bool(plan.files))
    chosen = image or image_mod.default_image(plan.name, lock, dockerfile, plan.files)
    text = build_yaml(plan, chosen, pipeline_root, tuple(sorted((env or {}).items())))
    derived = sorted({(image_mod.derived_image(chosen, sp.resources.image), sp.resources.image)
                      for sp in plan.steps if sp.resources.image})
    base = atomic.boundary(folder, root)  # inside the project: no symlinked folder on the way
    written: list[Path] = []
    _write_data(root, folder, plan.files, written, base)
    _write(package, text, written, base)
    _write(folder / image_mod.DOCKERFILE, dockerfile, written, base)
    _write(folder / image_mod.LOCK, lock, written, base)
    _write(folder / image_mod.IMAGE_FILE, chosen + "\n", written, base)
    if derived:
        _write(folder / image_mod.DERIVED_FILE,
               "".join(f"{name} {image}\n" for name, image in derived), written, base)
    log.info("exported %d steps to %s (image %s)", len(plan.steps), package, chosen)
    return ExportResult(package, tuple(written), chosen, plan)
