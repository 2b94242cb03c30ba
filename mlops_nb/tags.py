"""Read a notebook's cells and tags into step declarations (DESIGN section 2).

The rule this module embodies: the tag grammar is Kubeflow Kale's, so a Kale-tagged notebook
parses unchanged. An untagged code cell continues the role of the code cell before it; tags of
other tools pass through; a tag that looks like a misspelling of ours is an error naming the
notebook, the cell (1-based, counting every cell as JupyterLab shows them) and the nearest tag.

Notebooks are read as plain JSON, not through nbformat: importing nbformat costs most of a
second (its schema validator pulls a URI grammar), and compile must stay fast.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from mlops_nb.errors import NotebookError

STEP_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
SECTIONS = ("imports", "functions", "pipeline-parameters", "parameters", "pipeline-metrics", "skip")
STEP_PREFIXES = ("step", "block")
# Kale tags that configure Kubeflow (resources, pod metadata, images): valid, unused here.
KALE_FOREIGN_PREFIXES = ("limit", "annotation", "label", "image")
# papermill marks cells it injected; such a cell is a record of a past run, never pipeline code.
IGNORED = ("injected-parameters",)


@dataclass(frozen=True)
class Cell:
    """One code cell: its 1-based position in the notebook and its source."""

    index: int
    source: str


@dataclass(frozen=True)
class StepDecl:
    """A step as the notebook declares it: its cells in order and explicit `prev:` names."""

    name: str
    cells: tuple[Cell, ...]
    prev: tuple[str, ...]
    prev_cells: tuple[int, ...]

    @property
    def first_cell(self) -> int:
        return self.cells[0].index

    @property
    def source(self) -> str:
        return "\n".join(c.source for c in self.cells)


@dataclass(frozen=True)
class ParsedNotebook:
    """A notebook split into its special sections and its steps, in notebook order."""

    path: str
    imports: tuple[Cell, ...]
    functions: tuple[Cell, ...]
    parameters: tuple[Cell, ...]
    metrics: tuple[Cell, ...]
    steps: tuple[StepDecl, ...]
    kernelspec: tuple[tuple[str, str], ...]

    @property
    def stem(self) -> str:
        """The notebook's parameter group in params.yaml: its file stem, made a plain name
        (`01-explore.ipynb` -> `nb_01_explore`) so DVC keys and Ploomber placeholders work."""
        return group_name(Path(self.path).stem)


def group_name(stem: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", stem)
    # Ploomber's env refuses top-level keys that start with "_" (and jinja a leading digit)
    return f"nb_{name}" if not name or name[0].isdigit() or name[0] == "_" else name


def read_notebook_json(path: Path, display: str) -> dict:
    """Load notebook JSON, failing with the file name and what is wrong."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise NotebookError(display, f"cannot read the file ({exc.strerror})") from exc
    try:
        nb = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NotebookError(
            display, f"not valid notebook JSON ({exc}); open it in JupyterLab or restore it"
        ) from exc
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise NotebookError(display, "not a Jupyter notebook (no 'cells' list)")
    if nb.get("nbformat", 4) < 4:
        raise NotebookError(
            display, "nbformat 3 notebooks are not supported; save it again in JupyterLab"
        )
    return nb


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _closest(word: str, candidates: list[str]) -> str | None:
    found = difflib.get_close_matches(word, candidates, n=1, cutoff=0.75)
    return found[0] if found else None


def classify_tag(tag: str, path: str, index: int) -> tuple[str, str] | None:
    """Return (kind, value) for a tag of ours, None for a foreign tag; raise on a likely typo.

    kinds: 'section' (value = section name), 'step' (value = step name), 'prev'.
    """
    if tag in SECTIONS:
        return ("section", "parameters" if tag == "pipeline-parameters" else tag)
    if tag in IGNORED:
        return ("section", "skip")
    if ":" in tag:
        prefix, _, value = tag.partition(":")
        if prefix in STEP_PREFIXES or prefix == "prev":
            if not STEP_NAME.match(value):
                raise NotebookError(
                    path,
                    f"invalid step name in tag '{tag}': names are lower-case letters, digits"
                    " and '_', not starting with a digit (e.g. 'step:train_model')",
                    index,
                )
            return ("prev" if prefix == "prev" else "step", value)
        if prefix in KALE_FOREIGN_PREFIXES:
            return None
        near = _closest(prefix, ["step", "block", "prev"])
        if near:
            raise NotebookError(
                path, f"unknown tag '{tag}' (did you mean '{near}:{value}'?)", index
            )
        return None
    near = _closest(tag, list(SECTIONS))
    if near and len(tag) >= 4:
        raise NotebookError(path, f"unknown tag '{tag}' (did you mean '{near}'?)", index)
    return None


def parse_notebook(path: Path, display: str) -> ParsedNotebook:
    """Parse one notebook file; `display` is the path shown in messages (project-relative)."""
    nb = read_notebook_json(path, display)
    sections: dict[str, list[Cell]] = {k: [] for k in ("imports", "functions", "parameters",
                                                        "pipeline-metrics", "skip")}
    step_cells: dict[str, list[Cell]] = {}
    step_prev: dict[str, list[str]] = {}
    prev_cells: dict[str, list[int]] = {}
    current: tuple[str, ...] = ("skip",)  # leading untagged cells are exploration
    current_is_step = False

    for i, raw in enumerate(nb["cells"], start=1):
        if not isinstance(raw, dict):
            raise NotebookError(display, "cell is not a JSON object", i)
        if raw.get("cell_type") != "code":
            continue
        meta = raw.get("metadata") or {}
        tags = meta.get("tags") or []
        if not isinstance(tags, list):
            raise NotebookError(display, "metadata.tags is not a list", i)
        steps: list[str] = []
        section: str | None = None
        prevs: list[str] = []
        for tag in tags:
            kind = classify_tag(str(tag), display, i)
            if kind is None:
                continue
            if kind[0] == "section":
                section = kind[1]
            elif kind[0] == "step":
                if kind[1] not in steps:
                    steps.append(kind[1])
            else:
                prevs.append(kind[1])
        if "skip" == section:
            current, current_is_step = ("skip",), False
        elif steps:
            current, current_is_step = tuple(steps), True
        elif section:
            current, current_is_step = (section,), False
        if prevs and not current_is_step:
            raise NotebookError(
                display, "a 'prev:' tag must sit on a cell of a step; add 'step:<name>' to it", i
            )
        cell = Cell(i, _source(raw))
        for role in current:
            if current_is_step:
                step_cells.setdefault(role, []).append(cell)
                for p in prevs:
                    if p not in step_prev.setdefault(role, []):
                        step_prev[role].append(p)
                        prev_cells.setdefault(role, []).append(i)
                step_prev.setdefault(role, [])
            else:
                sections[role].append(cell)

    if not step_cells:
        raise NotebookError(
            display,
            "no pipeline step: tag at least one code cell 'step:<name>' in JupyterLab's"
            " cell-tag editor",
        )
    decls = tuple(
        StepDecl(name, tuple(cells), tuple(step_prev[name]), tuple(prev_cells.get(name, [])))
        for name, cells in step_cells.items()
    )
    ks = (nb.get("metadata") or {}).get("kernelspec") or {}
    kernelspec = tuple(sorted((k, str(v)) for k, v in ks.items() if k in ("name", "display_name",
                                                                              "language")))
    return ParsedNotebook(
        path=display,
        imports=tuple(sections["imports"]),
        functions=tuple(sections["functions"]),
        parameters=tuple(sections["parameters"]),
        metrics=tuple(sections["pipeline-metrics"]),
        steps=decls,
        kernelspec=kernelspec,
    )
