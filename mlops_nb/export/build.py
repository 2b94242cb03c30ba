"""`mlops-nb export kfp`: the project's pipeline as a KFP v2 package, with the kfp SDK.

The package is the IR YAML that `kfp.compiler.Compiler` writes, built from the same
PipelineSpec and step notebooks that feed dvc.yaml and pipeline.yaml (rendered in memory: the
project's files are not touched). Beside it go the image's Dockerfile, its locked
requirements and the default image name. Exporting twice gives byte-identical files.
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_nb.artifacts import atomic
from mlops_nb.errors import UsageError
from mlops_nb.export import image as image_mod
from mlops_nb.export.plan import KfpPlan, make_plan
from mlops_nb.export.source import PIPELINE_FUNC, render_module
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


def build_yaml(plan: KfpPlan, image: str, pipeline_root: str | None = None,
               env: tuple[tuple[str, str], ...] = ()) -> str:
    """Compile the plan with the kfp SDK; returns the package's YAML text."""
    require_kfp()
    from kfp import compiler, dsl

    source = render_module(plan, env)
    kubernetes: Any = None
    if any(sp.resources.labels or sp.resources.annotations for sp in plan.steps):
        try:
            kubernetes = importlib.import_module("kfp.kubernetes")
        except ImportError:
            raise UsageError("pod labels and annotations need kfp-kubernetes:"
                             " pip install 'mlops_nb[kfp]'") from None
    with tempfile.TemporaryDirectory(prefix="mlops-nb-kfp-") as tmp:
        path = Path(tmp) / "mlops_nb_kfp_pipeline.py"
        path.write_text(source, encoding="utf-8")
        mspec = importlib.util.spec_from_file_location("mlops_nb_kfp_pipeline", path)
        assert mspec is not None and mspec.loader is not None
        module = importlib.util.module_from_spec(mspec)
        mspec.loader.exec_module(module)
        module._c = {sp.step: dsl.component(getattr(module, sp.step),  # type: ignore[attr-defined]
                                            base_image=sp.resources.image or image,
                                            install_kfp_package=False)
                     for sp in plan.steps}
        module._k = kubernetes  # type: ignore[attr-defined]
        pipeline = dsl.pipeline(name=plan.name, description=plan.description,
                                pipeline_root=pipeline_root)(getattr(module, PIPELINE_FUNC))
        out = Path(tmp) / "pipeline.yaml"
        compiler.Compiler().compile(pipeline, str(out))
        return out.read_text(encoding="utf-8")


def _write(path: Path, text: str, written: list[Path], root: Path | None) -> None:
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    atomic.write_text(path, text, root=root)
    written.append(path)


def export_kfp(root: Path, out: Path | None = None, *, image: str | None = None,
               pipeline_root: str | None = None, data_uri: str | None = None,
               env: dict[str, str] | None = None) -> ExportResult:
    """Write the KFP package (default kfp/pipeline.yaml) and, beside it, the image files."""
    plan = plan_project(root, data_uri)
    package = out if out is not None else root / DEFAULT_OUT
    folder = package.parent
    lock = image_mod.lock_text()
    dockerfile = image_mod.dockerfile_text()
    chosen = image or image_mod.default_image(plan.name, lock, dockerfile)
    text = build_yaml(plan, chosen, pipeline_root, tuple(sorted((env or {}).items())))
    base = atomic.boundary(folder, root)  # inside the project: no symlinked folder on the way
    written: list[Path] = []
    _write(package, text, written, base)
    _write(folder / image_mod.DOCKERFILE, dockerfile, written, base)
    _write(folder / image_mod.LOCK, lock, written, base)
    _write(folder / image_mod.IMAGE_FILE, chosen + "\n", written, base)
    log.info("exported %d steps to %s (image %s)", len(plan.steps), package, chosen)
    return ExportResult(package, tuple(written), chosen, plan)
