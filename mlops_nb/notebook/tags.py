"""Read a notebook's cells and tags into step declarations (DESIGN section 2).

The rule this module embodies: the tag grammar is Kubeflow Kale's, so a Kale-tagged notebook
parses unchanged. An untagged code cell (or one with an empty `step:` tag) continues the step
or section that is current: that of the last code cell before it that was not `skip`; `skip`
and markdown cells never change it, as in Kale's parser and its JupyterLab extension. Tags of
other tools pass through; a tag that looks like a misspelling of ours is an error naming the
notebook, the cell (1-based, counting every cell as JupyterLab shows them) and the nearest tag.

Notebooks are read as plain JSON, not through nbformat: importing nbformat costs most of a
second (its schema validator pulls a URI grammar), and compile must stay fast.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from mlops_nb.errors import NoStepsError, NotebookError

log = logging.getLogger(__name__)

STEP_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
MAX_STEP_NAME = 100  # step names make file names (steps/NAME.ipynb, outputs/NAME/NAME.ipynb)
SECTIONS = ("imports", "functions", "pipeline-parameters", "parameters", "pipeline-metrics", "skip")
STEP_PREFIXES = ("step", "block")
# Kale tags that configure Kubeflow (resources, pod metadata, images): valid, unused here.
KALE_FOREIGN_PREFIXES = ("limit", "annotation", "label", "image")
# a cell of assertions about a step's results (`mlops-nb test`); Kale has no such tag
TEST = "test"
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
class TestDecl:
    """A `test` (or `test:STEP`) cell: assertions about STEP's results, never run in a step."""

    step: str
    cell: Cell


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
    exploration: tuple[Cell, ...] = ()  # `skip` cells and untagged cells before any tag
    tests: tuple[TestDecl, ...] = ()  # `test` cells, in notebook order

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
    version = nb.get("nbformat", 4)
    if type(version) is not int:
        raise NotebookError(display, f"'nbformat' must be a whole number (4), not {version!r};"
                                     " save the notebook again in JupyterLab")
    if version < 4:
        raise NotebookError(
            display, "nbformat 3 notebooks are not supported; save it again in JupyterLab"
        )
    if not isinstance(nb.get("metadata", {}), dict):
        raise NotebookError(display, "'metadata' must be a JSON object; save the notebook"
                                     " again in JupyterLab")
    for i, cell in enumerate(nb["cells"], start=1):
        if isinstance(cell, dict):
            _check_cell(cell, display, i)
    return nb


def _check_cell(cell: dict, display: str, index: int) -> None:
    """A cell's source is text (a string or a list of strings, encodable as UTF-8) and its
    metadata an object: anything else would fail later with a traceback, far from here."""
    src = cell.get("source", "")
    if isinstance(src, list) and all(isinstance(s, str) for s in src):
        src = "".join(src)
    if not isinstance(src, str):
        raise NotebookError(display, "the cell's 'source' must be a string or a list of"
                                     " strings", index)
    try:
        src.encode("utf-8")
    except UnicodeEncodeError as exc:
        line = src.count("\n", 0, exc.start) + 1
        raise NotebookError(display, f"line {line} of the cell holds a character that is not"
                                     f" valid text ({src[exc.start]!r}, a lone surrogate);"
                                     " delete it", index) from None
    if not isinstance(cell.get("metadata", {}), dict):
        raise NotebookError(display, "the cell's 'metadata' must be a JSON object", index)


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _closest(word: str, candidates: list[str]) -> str | None:
    found = difflib.get_close_matches(word, candidates, n=1, cutoff=0.75)
    return found[0] if found else None


# Kale 1.x wrote the special sections as steps (`block:imports`); a hyphen is never in a step
# name, so `block:pipeline-parameters` is unambiguous too.
OLD_SECTIONS = {"imports": "imports", "functions": "functions", "skip": "skip",
                "pipeline-parameters": "parameters", "pipeline-metrics": "pipeline-metrics"}
# Tags one letter or one word away from a section of ours: an error with the fix.
NEAR_SECTIONS = {
    "metrics": "pipeline-metrics", "metric": "pipeline-metrics",
    "pipeline-metric": "pipeline-metrics", "pipeline_metrics": "pipeline-metrics",
    "pipelinemetrics": "pipeline-metrics", "parameter": "parameters", "param": "parameters",
    "params": "parameters", "pipeline-parameter": "pipeline-parameters",
    "pipeline_parameters": "pipeline-parameters", "pipeline-params": "pipeline-parameters",
    "pipelineparameters": "pipeline-parameters", "import": "imports", "function": "functions",
}
# `step-x`, `step_x`, `step=x`, `step x`, `prev-x`, `block.x`: our prefix, the wrong separator.
NEAR_PREFIX = re.compile(r"^(step|block|prev)\s*[-_=.\s;]\s*(\S.*)$", re.IGNORECASE)


def _step_value(tag: str, prefix: str, value: str, path: str, index: int) -> str:
    """A step name from a tag, with Kale's tolerance: a hyphen becomes '_' (with a note)."""
    name = value.replace("-", "_")
    if len(name) > MAX_STEP_NAME:
        raise NotebookError(path, f"step name in tag '{tag[:40]}...' is {len(name)} characters"
                                  f" long; at most {MAX_STEP_NAME} (it names files)", index)
    if not STEP_NAME.match(name):
        near = name.lower().strip()
        hint = (f" (did you mean '{prefix}:{near}'?)" if STEP_NAME.match(near) else
                " (e.g. 'step:train_model')")
        raise NotebookError(
            path,
            f"invalid step name in tag '{tag}': names are lower-case letters, digits and '_',"
            f" not starting with a digit{hint}",
            index,
        )
    if name != value:
        log.warning("%s cell %d: tag '%s' names step '%s' (a hyphen is not allowed in step"
                    " names; it was read as '_')", path, index, tag, name)
    return name


def classify_tag(tag: str, path: str, index: int) -> list[tuple[str, str]] | None:
    """Return [(kind, value)...] for a tag of ours, None for a foreign tag; raise on a typo.

    kinds: 'section' (value = section name), 'step' (value = step name, '' for an empty
    `step:` tag, which continues the current step), 'prev' (one per parent: Kale 1.x wrote
    `prev:a:b`).
    """
    if tag in SECTIONS:
        return [("section", "parameters" if tag == "pipeline-parameters" else tag)]
    if tag in IGNORED:
        return [("section", "skip")]
    if tag == TEST:
        return [("test", "")]
    if tag.startswith(TEST + ":"):
        return [("test", _step_value(tag, TEST, tag[len(TEST) + 1:], path, index))]
    if ":" in tag:
        prefix, _, value = tag.partition(":")
        if prefix in STEP_PREFIXES or prefix == "prev":
            if prefix == "block" and value in OLD_SECTIONS:
                return [("section", OLD_SECTIONS[value])]
            if prefix == "prev":
                parts = [v for v in value.split(":")]
                if not value or any(not v for v in parts):
                    raise NotebookError(path, f"tag '{tag}' names no step; write"
                                              " 'prev:<step name>'", index)
                return [("prev", _step_value(tag, prefix, v, path, index)) for v in parts]
            if not value:
                return [("step", "")]
            return [("step", _step_value(tag, prefix, value, path, index))]
        if prefix in KALE_FOREIGN_PREFIXES:
            return None
        low = prefix.strip().lower()
        near = low if low in ("step", "block", "prev") else _closest(low, ["step", "block",
                                                                           "prev"])
        if near:
            fixed = value.strip().lower().replace("-", "_")
            raise NotebookError(
                path, f"unknown tag '{tag}' (did you mean '{near}:{fixed}'?)", index
            )
        return None
    m = NEAR_PREFIX.match(tag)
    if m:
        fixed = f"{m.group(1).lower()}:{m.group(2).strip().lower().replace('-', '_')}"
        raise NotebookError(path, f"unknown tag '{tag}' (did you mean '{fixed}'? our tags"
                                  " separate the name with ':')", index)
    low = tag.strip().lower()
    near = low if low in SECTIONS else NEAR_SECTIONS.get(low)
    if near is None and len(tag) >= 4:
        near = _closest(low, list(SECTIONS))
    if near:
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
    tests: list[TestDecl] = []
    current = "skip"  # leading untagged cells are exploration
    current_is_step = False

    for i, raw in enumerate(nb["cells"], start=1):
        if not isinstance(raw, dict):
            raise NotebookError(display, "cell is not a JSON object", i)
        if raw.get("cell_type") != "code":
            continue  # markdown and raw cells never change the current step (as in Kale)
        meta = raw.get("metadata") or {}
        tags = meta.get("tags") or []
        if not isinstance(tags, list):
            raise NotebookError(display, "metadata.tags is not a list", i)
        steps: list[str] = []
        section: str | None = None
        prevs: list[str] = []
        tested: list[str] = []
        for tag in tags:
            for kind, value in classify_tag(str(tag), display, i) or []:
                if kind == "test":
                    tested.append(value)
                elif kind == "section":
                    section = "skip" if "skip" in (section, value) else value
                elif kind == "step":
                    if value and value not in steps:
                        steps.append(value)
                elif value not in prevs:
                    prevs.append(value)
        if tested and section != "skip":
            tests.append(_test_decl(tested, steps, section, prevs, current_is_step and current,
                                    display, Cell(i, _source(raw))))
            continue  # like `skip`, a test cell never changes the current step
        if section == "skip":
            # Kale passes over a skipped cell: the step before it goes on after it
            if prevs:
                log.warning("%s cell %d: 'prev:' on a 'skip' cell is ignored", display, i)
            sections["skip"].append(Cell(i, _source(raw)))
            continue
        if len(steps) > 1:
            raise NotebookError(
                display,
                f"the cell has two step tags ({', '.join('step:' + s for s in steps)}); a cell"
                " belongs to one step: keep one tag, or split the cell in JupyterLab and tag"
                " each part",
                i,
            )
        if steps:
            current, current_is_step = steps[0], True
        elif section:
            current, current_is_step = section, False
        if prevs and not current_is_step:
            raise NotebookError(
                display, "a 'prev:' tag must sit on a cell of a step; add 'step:<name>' to it", i
            )
        cell = Cell(i, _source(raw))
        if current_is_step:
            step_cells.setdefault(current, []).append(cell)
            for p in prevs:
                if p not in step_prev.setdefault(current, []):
                    step_prev[current].append(p)
                    prev_cells.setdefault(current, []).append(i)
            step_prev.setdefault(current, [])
        else:
            sections[current].append(cell)

    if not step_cells:
        raise NoStepsError(
            display,
            "no pipeline step: tag at least one code cell 'step:<name>' in JupyterLab's"
            " cell-tag editor",
        )
    for t in tests:
        if t.step not in step_cells:
            near = _closest(t.step, list(step_cells))
            hint = f" (did you mean 'test:{near}'?)" if near else \
                f"; its steps are: {', '.join(step_cells)}"
            raise NotebookError(display, f"'test:{t.step}' names no step of this notebook{hint}",
                                t.cell.index)
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
        exploration=tuple(sorted(sections["skip"], key=lambda c: c.index)),
        tests=tuple(tests),
    )


def _test_decl(tested: list[str], steps: list[str], section: str | None, prevs: list[str],
               current: str | bool, display: str, cell: Cell) -> TestDecl:
    """The step a `test` cell is about: the one it names, else the step current there."""
    if steps or section or prevs:
        raise NotebookError(display, "a 'test' cell holds assertions about a step's results and"
                                     " is never part of a step: keep 'test' (or 'test:STEP')"
                                     " and remove its other tags of ours", cell.index)
    named = sorted({t for t in tested if t})
    if len(named) > 1:
        raise NotebookError(display, f"the cell tests two steps ({', '.join(named)}); a test"
                                     " cell is about one step: split it", cell.index)
    if named:
        return TestDecl(named[0], cell)
    if not isinstance(current, str) or not current:
        raise NotebookError(display, "a 'test' cell before any step: tag it 'test:STEP' with"
                                     " the step whose results it checks", cell.index)
    return TestDecl(current, cell)
