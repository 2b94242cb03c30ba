"""The image the exported steps run in: a Dockerfile, minimal locked requirements, its name.

The rules: the image holds what a step needs and nothing else: the libraries mlops_nb needs
to run a step in a pod (kfp's executor, IPython, nbformat, the artifact formats),
the distributions the notebooks import, and everything those require, pinned at the versions
of the environment that exported the pipeline (with their hashes, taken from the project's
`requirements.lock` when it pins them all) so pods run what was tried here; never the
development tools (JupyterLab, DVC, Ploomber, Playwright...). mlops_nb itself and anything
installed from a local folder are not on a package index: the Dockerfile installs them from
wheels put beside it. The data files steps read by literal path are put beside it too, named
by their SHA-256, and copied into the image (`DATA_DIR`). The default image name carries the
hash of all of it: changed requirements or data are a new tag.

A step tagged `image:BASE` runs in a derived image: the same Dockerfile built with
`--build-arg BASE=BASE`, named after the main image with the base's hash in its tag.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from mlops_nb.errors import ExportError
from mlops_nb.notebook.magics import strip_magics

DOCKERFILE = "Dockerfile"
LOCK = "requirements.lock"
IMAGE_FILE = "image.txt"
DERIVED_FILE = "derived-images.txt"
DATA = "data"
DATA_DIR = "/opt/mlops_nb/data"
SKIP = {"pip", "setuptools", "wheel"}
# what a pod needs to run a step, besides what the notebooks import: kfp's executor, the
# in-process IPython runner, the notebook format, the artifact formats (skops brings
# scikit-learn, which mlops_nb.guards uses), the step watchdog's psutil
STEP_RUNTIME = ("kfp", "ipython", "nbformat", "pandas", "pyarrow", "numpy", "skops", "joblib",
                "cloudpickle", "ruamel.yaml", "pyyaml", "psutil")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed() -> dict[str, metadata.Distribution]:
    out: dict[str, metadata.Distribution] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            out.setdefault(canonical(name), dist)
    return out


def _requires(dist: metadata.Distribution, extras: Iterable[str]) -> list[tuple[str, set[str]]]:
    from packaging.requirements import InvalidRequirement, Requirement

    out: list[tuple[str, set[str]]] = []
    for text in dist.requires or []:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        envs = [{"extra": e} for e in ("", *extras)]
        if req.marker is None or any(req.marker.evaluate(env) for env in envs):
            out.append((canonical(req.name), set(req.extras)))
    return out


def closure(roots: Iterable[str]) -> list[str]:
    """The installed distributions `roots` need, themselves included (canonical names)."""
    installed = _installed()
    seen: set[str] = set()
    todo: list[tuple[str, set[str]]] = [(canonical(r), set()) for r in roots]
    while todo:
        name, extras = todo.pop()
        dist = installed.get(name)
        if dist is None or (name in seen and not extras):
            continue
        seen.add(name)
        if name == "mlops-nb":
            continue  # its wheel goes in with --no-deps: a step needs STEP_RUNTIME only
        todo += [(n, e) for n, e in _requires(dist, extras) if n not in seen or e]
    return sorted(seen - SKIP)


def imported_modules(texts: Iterable[str]) -> set[str]:
    """Top-level modules the code cells of step notebooks import (absolute imports)."""
    out: set[str] = set()
    for text in texts:
        for cell in json.loads(text).get("cells", []):
            if cell.get("cell_type") != "code":
                continue
            src = cell.get("source", "")
            try:
                tree = ast.parse(strip_magics(src if isinstance(src, str) else "".join(src)))
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    out.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    out.add(node.module.split(".")[0])
    return out


def step_distributions(texts: Iterable[str]) -> list[str]:
    """What the image must hold for these step notebooks (canonical names)."""
    by_module = metadata.packages_distributions()
    roots = set(STEP_RUNTIME)
    for module in imported_modules(texts):
        roots.update(by_module.get(module, []))
    return closure(roots)


def _is_local(dist: metadata.Distribution) -> bool:
    direct = dist.read_text("direct_url.json")
    if not direct:
        return False
    try:
        return str(json.loads(direct).get("url", "")).startswith("file:")
    except ValueError:
        return True


def _lock_entries(lock: Path) -> dict[tuple[str, str], str]:
    """requirements.lock's entries: (canonical name, version) -> the entry's lines (a
    universal lock may pin one name at several versions, under markers)."""
    out: dict[tuple[str, str], str] = {}
    try:
        text = lock.read_text(encoding="utf-8")
    except OSError:
        return out
    entry: list[str] = []
    for line in [*text.splitlines(), ""]:
        if entry and not line.startswith((" ", "\t")):
            m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", entry[0])
            if m:
                out[(canonical(m.group(1)), m.group(2))] = "\n".join(entry)
            entry = []
        if line.strip() and not line.lstrip().startswith("#"):
            entry.append(line)
    return out


def default_lock() -> Path:
    """The lock of the mlops_nb checkout this environment was set up from, if any."""
    return Path(__file__).resolve().parents[2] / "requirements.lock"


def lock_text(texts: Iterable[str], lock: Path | None = None) -> str:
    """The image's requirements: what the steps need, pinned; hashed when `lock` pins all."""
    installed = _installed()
    needed = step_distributions(texts)
    local = sorted(n for n in needed if n == "mlops-nb" or _is_local(installed[n]))
    pinned = [n for n in needed if n not in local]
    entries = _lock_entries(lock if lock is not None else default_lock())
    found = {n: entries.get((n, installed[n].version), "") for n in pinned}
    hashed = bool(pinned) and all("--hash=" in entry for entry in found.values())
    lines = ["# Generated by `mlops-nb export kfp`: what the pipeline's steps need, pinned at",
             "# the versions of the environment it was exported from"
             + (" (hashes from requirements.lock)." if hashed else "."),
             "# Not on a package index (install their wheels, see Dockerfile):"]
    lines += [f"#   {installed[n].metadata['Name']}=={installed[n].version}" for n in local]
    for n in pinned:
        dist = installed[n]
        lines.append(found[n] if hashed else f"{dist.metadata['Name']}=={dist.version}")
    return "\n".join(lines) + "\n"


def dockerfile_text(has_data: bool) -> str:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    text = f"""\
# Generated by `mlops-nb export kfp`: the image every step of the pipeline runs in.
# It holds libraries and the data files steps read; each step's code travels inside the
# pipeline package.
#   pip wheel --no-deps -w wheels/ PATH/TO/mlops_nb   (and any other local package)
#   docker build -t IMAGE .  &&  docker push IMAGE
# A step tagged image:BASE runs in an image built from this file on that base (Python
# {version} with pip): see {DERIVED_FILE}.
ARG BASE=python:{version}-slim
FROM ${{BASE}}
WORKDIR /opt/mlops_nb
COPY {LOCK} .
RUN python3 -m pip install --no-cache-dir -r {LOCK}
COPY wheels/ wheels/
RUN python3 -m pip install --no-cache-dir --no-deps wheels/*.whl
"""
    if has_data:
        text += f"COPY {DATA}/ {DATA_DIR}/\n"
    return text


def default_image(project: str, lock: str, dockerfile: str,
                  files: Iterable[tuple[str, str]] = ()) -> str:
    digest = hashlib.sha256((dockerfile + lock).encode())
    for _, sha in sorted(set(files)):
        digest.update(f"\0{sha}".encode())
    return f"mlops-nb-{project}:{digest.hexdigest()[:12]}"


def derived_image(image: str, base: str) -> str:
    """The name of `image` built on `base`: the base's hash joins the tag."""
    if "@" in image:
        raise ExportError(None, f"--image {image}: a step tagged image:{base} runs in an image"
                                " derived from it, which needs a name with a tag, not a digest")
    slash = image.rfind("/")
    colon = image.rfind(":")
    repo, tag = (image[:colon], image[colon + 1:]) if colon > slash else (image, "latest")
    suffix = "base-" + hashlib.sha256(base.encode()).hexdigest()[:12]
    return f"{repo}:{tag[:128 - len(suffix) - 1]}-{suffix}"
