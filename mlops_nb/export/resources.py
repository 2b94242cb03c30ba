"""Kale's Kubernetes tags on a step's cells and Kale's notebook settings.

The rule: Kale users keep what they tagged; nothing is dropped in silence. `limit:RESOURCE:VALUE`
(cpu, memory, or an accelerator such as `nvidia.com/gpu`), `annotation:KEY:VALUE`,
`label:KEY:VALUE`, `image:IMAGE`, `cache:disabled` and `secret:NAME:KEY:ENV` on any cell of a
step configure that step's task; the notebook's Kale metadata (`metadata.kubeflow_notebook`:
`enable_caching`, `volumes`) configures every task of that notebook. Tags are read from the
source notebook's cells (the spec keeps only their code); a tag or setting we cannot honour is
an error naming the notebook, the cell and the step.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from mlops_nb.errors import NotebookError
from mlops_nb.pipeline.spec import StepSpec

# Kale's own patterns (kale/common/utils.py): resource and label keys are DNS-like names
_KEY = r"[a-zA-Z0-9_\-./]+"
LIMIT = re.compile(rf"^limit:({_KEY}):([a-zA-Z0-9_.]+)\Z")
LABEL = re.compile(rf"^label:({_KEY}):([a-zA-Z0-9_.\-]+)\Z")
ANNOTATION = re.compile(rf"^annotation:({_KEY}):(.+)\Z", re.S)
IMAGE = re.compile(r"^image:(.*)\Z", re.S)
CACHE = re.compile(r"^cache:(.*)\Z", re.S)
SECRET = re.compile(r"^secret:([^:]*):([^:]*):([^:]*)\Z")
# Kubernetes names: a secret is a DNS subdomain, its keys [-._a-zA-Z0-9]+, and the variable
# a C identifier (what a shell and os.environ agree on)
SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+\Z")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
# an image reference as docker reads it: [host[:port]/]path[:tag][@digest]
IMAGE_REF = re.compile(r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-]+[a-z0-9]+)*"
                       r"(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?"
                       r"(?:@sha256:[0-9a-f]{64})?\Z")
KALE_META = "kubeflow_notebook"
log = logging.getLogger(__name__)
_OURS = ("limit:", "label:", "annotation:", "image:", "cache:", "secret:")
VERTEX_ACCELERATOR = re.compile(r"^[A-Z][A-Z0-9_]+\Z")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|[KMGTPE]i?)?\Z")


@dataclass(frozen=True)
class StepResources:
    """What a step's cells ask of the cluster, sorted so the export is byte-stable."""

    cpu: str | None = None
    memory: str | None = None
    accelerator: tuple[str, int] | None = None  # (type, count)
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    image: str | None = None
    caching: bool = True
    secrets: tuple[tuple[str, str, str], ...] = ()  # (secret, key, environment variable)


@dataclass(frozen=True)
class NotebookSettings:
    """Kale's notebook metadata: caching for all its steps, and existing claims to mount."""

    caching: bool = True
    volumes: tuple[tuple[str, str], ...] = ()  # (persistent volume claim, mount path)
    defaults: tuple[str, ...] = ()  # Kale's steps_defaults: tags of every step


def _cell_tags(root: Path, notebook: str) -> dict[int, list[str]]:
    doc = json.loads((root / notebook).read_text(encoding="utf-8"))
    return {i: list(c.get("metadata", {}).get("tags", []) or [])
            for i, c in enumerate(doc.get("cells", []), start=1)}


def image_ref(value: str) -> bool:
    return bool(IMAGE_REF.match(value))


def step_resources(root: Path, step: StepSpec,
                   defaults: tuple[str, ...] = ()) -> StepResources:
    """The Kale resource tags on the cells of `step`, after the notebook's `defaults` (Kale's
    `steps_defaults`, which a step's own tags override)."""
    tags = _cell_tags(root, step.notebook)
    cpu = memory = image = None
    caching = True
    secrets: dict[str, tuple[str, str, str]] = {}
    accel: tuple[str, int] | None = None
    labels: dict[str, str] = {}
    notes: dict[str, str] = {}
    sources: list[tuple[int | None, list[str]]] = [(None, list(defaults))]
    sources += [(cell.index, tags.get(cell.index, [])) for cell in step.cells]
    for index, cell_tags in sources:
        for tag in cell_tags:
            if not tag.startswith(_OURS):
                continue

            def bad(why: str, tag: str = tag, cell: int | None = index) -> NotebookError:
                where = "" if cell is not None else f"metadata {KALE_META}.steps_defaults: "
                return NotebookError(step.notebook, f"{where}tag {tag!r} of step"
                                                    f" '{step.name}': {why}", cell)

            if m := LIMIT.match(tag):
                key, value = m.groups()
                if not QUANTITY.match(value):
                    raise bad("the value is not a Kubernetes quantity (e.g. 2, 500m, 4Gi)")
                if key == "cpu":
                    cpu = value
                elif key == "memory":
                    memory = value
                elif "/" in key or VERTEX_ACCELERATOR.match(key):
                    # Kubernetes' extended resources (nvidia.com/gpu) or Vertex AI's
                    # accelerator names (NVIDIA_TESLA_T4)
                    if not value.isdigit():
                        raise bad("an accelerator count must be a whole number")
                    accel = (key, int(value))
                else:
                    raise bad("KFP sets limits for cpu, memory and accelerators"
                              " (nvidia.com/gpu, or Vertex AI's NVIDIA_TESLA_T4...) only;"
                              " remove it or use one of those")
            elif m := LABEL.match(tag):
                labels[m.group(1)] = m.group(2)
            elif m := ANNOTATION.match(tag):
                notes[m.group(1)] = m.group(2)
            elif m := IMAGE.match(tag):
                if not image_ref(m.group(1)):
                    raise bad("not an image reference ([HOST/]NAME[:TAG][@sha256:DIGEST])")
                image = m.group(1)
            elif m := CACHE.match(tag):
                if m.group(1) != "disabled":
                    raise bad("Kale's caching tag is cache:disabled (caching is on otherwise)")
                caching = False
            elif m := SECRET.match(tag):
                name, key, env = m.groups()
                if not (SECRET_NAME.match(name) and SECRET_KEY.match(key)
                        and ENV_NAME.match(env)):
                    raise bad("expected secret:NAME:KEY:ENV with a Kubernetes secret NAME"
                              " (lower case, digits, '-', '.'), a KEY of it and an"
                              " environment variable ENV ([A-Za-z_][A-Za-z0-9_]*)")
                if env in secrets and secrets[env] != (name, key, env):
                    raise bad(f"the environment variable {env} is set from two secrets")
                secrets[env] = (name, key, env)
            else:
                raise bad("malformed; Kale writes limit:RESOURCE:VALUE, label:KEY:VALUE,"
                          " annotation:KEY:VALUE, image:IMAGE, cache:disabled or"
                          " secret:NAME:KEY:ENV")
    return StepResources(cpu, memory, accel, tuple(sorted(labels.items())),
                         tuple(sorted(notes.items())), image, caching,
                         tuple(sorted(secrets.values())))


def notebook_settings(root: Path, notebook: str) -> NotebookSettings:
    """Kale's `metadata.kubeflow_notebook` of `notebook`: `enable_caching` and `volumes`.

    A volume of type `pvc` (an existing claim, as Kale records the notebook server's own
    volumes) is mounted in every task; the types that make or snapshot volumes (`new_pvc`,
    `pv`, `snapshot`) are refused: create the claim first and name it as a `pvc`."""
    doc = json.loads((root / notebook).read_text(encoding="utf-8"))
    meta = doc.get("metadata", {}).get(KALE_META)
    if meta is None:
        return NotebookSettings()

    def bad(why: str) -> NotebookError:
        return NotebookError(notebook, f"metadata {KALE_META}: {why}")

    if not isinstance(meta, dict):
        raise bad("expected a mapping (Kale's notebook settings)")
    caching = meta.get("enable_caching", True)
    if not isinstance(caching, bool):
        raise bad(f"enable_caching is {caching!r}: expected true or false")
    volumes: dict[str, tuple[str, str]] = {}
    raw = meta.get("volumes") or []
    if not isinstance(raw, list):
        raise bad("volumes: expected a list of volumes")
    for i, vol in enumerate(raw, start=1):
        if not isinstance(vol, dict):
            raise bad(f"volume {i}: expected a mapping with type, name and mount_point")
        kind, name, mount = vol.get("type"), vol.get("name"), vol.get("mount_point")
        if kind != "pvc":
            raise bad(f"volume {i} ({name!r}): type {kind!r} cannot be exported: KFP v2 mounts"
                      " existing claims only here; create the claim (kubectl apply) and"
                      " give it as type 'pvc' with its name")
        if not (isinstance(name, str) and SECRET_NAME.match(name)):
            raise bad(f"volume {i}: name {name!r} is not a Kubernetes claim name")
        if not (isinstance(mount, str) and mount.startswith("/") and "\n" not in mount
                and "\x00" not in mount):
            raise bad(f"volume {i} ({name}): mount_point {mount!r} must be an absolute path")
        if mount in volumes:
            raise bad(f"volume {i} ({name}): {mount} is mounted twice")
        volumes[mount] = (name, mount)
    defaults = meta.get("steps_defaults") or []
    if not (isinstance(defaults, list) and all(isinstance(t, str) for t in defaults)):
        raise bad("steps_defaults: expected a list of tags")
    image = meta.get("docker_image")
    if image:
        # Kale fills it with the notebook server's own image, which holds neither kfp nor
        # mlops_nb at the versions this export pins: say so rather than drop it unseen
        log.warning("%s: metadata %s.docker_image %r is not used: steps run in the export's"
                    " image; tag a step image:IMAGE to run it on that base", notebook,
                    KALE_META, image)
    return NotebookSettings(caching, tuple(sorted(volumes.values())), tuple(defaults))
