"""`mlops-nb compile`: notebooks -> step notebooks, pipeline.yaml, dvc.yaml, params.yaml.

Everything is rendered in memory first; files are written only when every notebook compiled,
each atomically, and only when its text changed, so compiling twice is byte-identical and a
failed compile writes nothing. `check` renders the same and names what is stale.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from mlops_nb.artifacts import atomic
from mlops_nb.compile.helpers import functions_by_step
from mlops_nb.compile.notebooks import GENERATED_BY, render_step
from mlops_nb.compile.record import (
    RECORDS,
    check_hand_edits,
    last_seeded,
    record_sources,
    write_record,
    write_seeded,
)
from mlops_nb.compile.targets import render_dvc, render_ploomber
from mlops_nb.errors import ArtifactError, NoStepsError, StaleError, UsageError
from mlops_nb.notebook.tags import parse_notebook
from mlops_nb.pipeline import paramcheck
from mlops_nb.pipeline import params as params_mod
from mlops_nb.pipeline.spec import PipelineSpec, build_spec
from mlops_nb.project import DVC_YAML, ENV_LINK, NOTEBOOKS, PARAMS, PIPELINE, STATE, STEPS

log = logging.getLogger(__name__)
SKIPPED = ": skipped, no cell is tagged 'step:<name>' yet"
SKIPS_SAID = "skipped.json"  # in .mlops_nb/: the skipped notebooks the last compile named


@dataclass(frozen=True)
class CompileResult:
    spec: PipelineSpec
    written: tuple[str, ...]
    removed: tuple[str, ...]


def discover(root: Path, paths: list[str] | None = None) -> list[Path]:
    """The notebooks to compile: the given ones, or every notebook under notebooks/."""
    if paths:
        found = []
        for p in paths:
            path = (Path.cwd() / p).resolve()
            if path.is_dir():
                found += sorted(path.rglob("*.ipynb"))
            elif path.exists():
                found.append(path)
            else:
                raise UsageError(f"{p}: no such notebook")
    else:
        found = sorted((root / NOTEBOOKS).rglob("*.ipynb"))
    # hidden files and folders (.ipynb_checkpoints, scratch copies) are never pipeline sources
    found = [f for f in found if not any(part.startswith(".") for part in
                                         f.relative_to(root).parts)]
    if not found:
        raise UsageError(f"no notebooks found under {NOTEBOOKS}/; add a tagged notebook there")
    return found


def render(root: Path, paths: list[str] | None = None) -> tuple[PipelineSpec, dict[str, str]]:
    """The spec and every generated file's text, keyed by project-relative path."""
    spec, files, _ = render_with_notes(root, paths)
    return spec, files


def render_with_notes(root: Path, paths: list[str] | None = None
                      ) -> tuple[PipelineSpec, dict[str, str], list[str]]:
    """render(), plus notes for the user: notebooks skipped for having no step, what the
    parameter merge has to say (see params.seed)."""
    parsed = []
    notes: list[str] = []
    untagged: list[NoStepsError] = []
    for path in discover(root, paths):
        try:
            display = path.relative_to(root).as_posix()
        except ValueError:
            raise UsageError(f"{path}: notebooks must be inside the project {root}") from None
        try:
            parsed.append(parse_notebook(path, display))
        except NoStepsError as exc:
            if paths:  # named on the command line: it was meant to be compiled
                raise
            untagged.append(exc)
            notes.append(f"{display}{SKIPPED}")
    if not parsed and untagged:
        raise untagged[0]
    spec = build_spec(parsed, root)
    files: dict[str, str] = {}
    functions = functions_by_step(spec)
    for step in spec.steps:
        files[f"{STEPS}/{step.name}.ipynb"] = render_step(step, spec.notebook(step.notebook), spec,
                                                         functions[step.name])
    params_path = root / PARAMS
    existing = params_path.read_text(encoding="utf-8") if params_path.exists() else None
    # parse first: fail early, with line and column, before anything is merged or written
    doc = paramcheck.parse_text(existing, PARAMS) if existing is not None else None
    declared = {n.stem: dict(n.params) for n in spec.notebooks}
    replaced: set[tuple[str, str]] = set()
    seeded = params_mod.seed(existing, {n.stem: list(n.params) for n in spec.notebooks},
                             last_seeded(root), notes, replaced)
    # the values the merge kept are the file's: their types must be the notebooks' (a value
    # the merge took from the notebook is the notebook's own)
    values = paramcheck.check_parsed(doc, declared, PARAMS, replaced) if doc else {}
    files[PIPELINE] = render_ploomber(
        spec, {s.name: files[f"{STEPS}/{s.name}.ipynb"] for s in spec.steps},
        jobs=params_mod.ploomber_jobs(values))
    files[DVC_YAML] = render_dvc(spec)
    files[PARAMS] = seeded if seeded is not None else (existing or "{}\n")
    return spec, files, notes


def _stale_steps(root: Path, wanted: dict[str, str]) -> list[str]:
    """Generated step notebooks that no step produces any more."""
    out: list[str] = []
    folder = root / STEPS
    if not folder.is_dir():
        return out
    for f in sorted(folder.glob("*.ipynb")):
        rel = f"{STEPS}/{f.name}"
        if rel in wanted:
            continue
        try:
            meta = json.loads(f.read_text()).get("metadata", {}).get("mlops_nb", {})
        except (OSError, json.JSONDecodeError):
            continue
        if meta.get("generated_by") == GENERATED_BY:
            out.append(rel)
    return out


def _ensure_env_link(root: Path) -> bool:
    link = root / ENV_LINK
    if link.is_symlink() and os.readlink(link) == PARAMS:
        return False
    if link.exists() or link.is_symlink():
        log.warning("%s exists and is not a link to %s: Ploomber will not see params.yaml",
                    ENV_LINK, PARAMS)
        return False
    link.symlink_to(PARAMS)
    return True


def _root_relative(root: Path, paths: list[str] | None) -> list[str] | None:
    if not paths:
        return None
    return [(Path.cwd() / p).resolve().relative_to(root.resolve()).as_posix() for p in paths]


def compile_project(root: Path, paths: list[str] | None = None, *,
                    refuse_hand_edits: bool = False) -> CompileResult:
    """Write the generated files; with refuse_hand_edits, stop if one was edited by hand."""
    _refuse_links(root, [PARAMS, PIPELINE, DVC_YAML])  # first: params.yaml is read to render
    spec, files, notes = render_with_notes(root, paths)
    skips = [n for n in notes if n.endswith(SKIPPED)]
    said = _skips_said(root)
    for note in notes:
        if note not in said:  # a skipped notebook is named once, not on every run
            log.warning("%s", note)
    generated = {rel: text for rel, text in files.items() if rel != PARAMS}
    if refuse_hand_edits:
        check_hand_edits(root, expected=generated)
    try:
        written, removed = _write(root, spec, paths, files, generated)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ArtifactError(
                f"no space left on the disk holding {root} ({exc.strerror}) while compile"
                " wrote the generated files; free some space and run `mlops-nb compile`"
                " again (each file was replaced whole or not at all)") from None
        raise
    if sorted(skips) != sorted(said):
        atomic.write_text(root / STATE / SKIPS_SAID, json.dumps(sorted(skips)), root=root)
    return CompileResult(spec, tuple(written), tuple(removed))


def _refuse_links(root: Path, rels: list[str]) -> None:
    """Every target and its folders, checked before any write: a symlink planted at one (a
    symlinked steps/ or .mlops_nb/, pipeline.yaml -> ~/.bashrc) is refused and nothing of
    the compile is written."""
    for rel in [*rels, STEPS, *(f"{STATE}/{name}" for name in RECORDS)]:
        atomic.refuse_symlinks(root / rel, root=root)


def _skips_said(root: Path) -> list[str]:
    try:
        said = json.loads((root / STATE / SKIPS_SAID).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [n for n in said if isinstance(n, str)] if isinstance(said, list) else []


def _write(root: Path, spec: PipelineSpec, paths: list[str] | None, files: dict[str, str],
           generated: dict[str, str]) -> tuple[list[str], list[str]]:
    _refuse_links(root, list(files))
    written = []
    for rel, text in files.items():
        path = root / rel
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        atomic.write_text(path, text, root=root)
        written.append(rel)
    removed = []
    for rel in _stale_steps(root, files):
        (root / rel).unlink()
        removed.append(rel)
    if _ensure_env_link(root):
        written.append(ENV_LINK)
    write_record(root, generated)
    write_seeded(root, {n.stem: list(n.params) for n in spec.notebooks})
    record_sources(root, _root_relative(root, paths))
    return written, removed


def check(root: Path, paths: list[str] | None = None) -> PipelineSpec:
    """Raise StaleError naming every generated file that does not match the notebooks."""
    spec, files = render(root, paths)
    stale = []
    for rel, text in files.items():
        path = root / rel
        if not path.exists():
            stale.append(f"{rel} (missing)")
        elif path.read_text(encoding="utf-8") != text:
            stale.append(f"{rel} (differs)" if rel != PARAMS
                         else f"{rel} (parameters missing or changed in the notebook)")
    stale += [f"{rel} (no such step any more)" for rel in _stale_steps(root, files)]
    if stale:
        raise StaleError("generated files do not match the notebooks: " + ", ".join(stale)
                         + "; run `mlops-nb compile`")
    return spec
