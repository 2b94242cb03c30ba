"""Kale's Kubernetes tags on a step's cells: resources, pod labels and annotations, image.

The rule: Kale users keep what they tagged. `limit:RESOURCE:VALUE` (cpu, memory, or an
accelerator such as `nvidia.com/gpu`), `annotation:KEY:VALUE`, `label:KEY:VALUE` and
`image:IMAGE` on any cell of a step configure that step's task. Tags are read from the source
notebook's cells (the spec keeps only their code); a tag we cannot honour is an error naming
the notebook, the cell and the step.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from mlops_nb.errors import NotebookError
from mlops_nb.pipeline.spec import StepSpec

# Kale's own patterns (kale/common/utils.py): resource and label keys are DNS-like names
_KEY = r"[a-zA-Z0-9_\-./]+"
LIMIT = re.compile(rf"^limit:({_KEY}):([a-zA-Z0-9_.]+)$")
LABEL = re.compile(rf"^label:({_KEY}):([a-zA-Z0-9_.\-]+)$")
ANNOTATION = re.compile(rf"^annotation:({_KEY}):(.+)$")
IMAGE = re.compile(r"^image:(\S+)$")
VERTEX_ACCELERATOR = re.compile(r"^[A-Z][A-Z0-9_]+$")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|[KMGTPE]i?)?$")


@dataclass(frozen=True)
class StepResources:
    """What a step's cells ask of the cluster, sorted so the export is byte-stable."""

    cpu: str | None = None
    memory: str | None = None
    accelerator: tuple[str, int] | None = None  # (type, count)
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    image: str | None = None


def _cell_tags(root: Path, notebook: str) -> dict[int, list[str]]:
    doc = json.loads((root / notebook).read_text(encoding="utf-8"))
    return {i: list(c.get("metadata", {}).get("tags", []) or [])
            for i, c in enumerate(doc.get("cells", []), start=1)}


def step_resources(root: Path, step: StepSpec) -> StepResources:
    """The Kale resource tags on the cells of `step`."""
    tags = _cell_tags(root, step.notebook)
    cpu = memory = image = None
    accel: tuple[str, int] | None = None
    labels: dict[str, str] = {}
    notes: dict[str, str] = {}
    for cell in step.cells:
        for tag in tags.get(cell.index, []):
            if not tag.startswith(("limit:", "label:", "annotation:", "image:")):
                continue

            def bad(why: str, tag: str = tag, cell: int = cell.index) -> NotebookError:
                return NotebookError(step.notebook, f"tag '{tag}' of step '{step.name}': {why}",
                                     cell)

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
                image = m.group(1)
            else:
                raise bad("malformed; Kale writes limit:RESOURCE:VALUE, label:KEY:VALUE,"
                          " annotation:KEY:VALUE or image:IMAGE")
    return StepResources(cpu, memory, accel, tuple(sorted(labels.items())),
                         tuple(sorted(notes.items())), image)
