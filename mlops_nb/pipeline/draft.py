"""The working state of build_spec (spec.py): cells analysed block by block, each step's
draft (what it reads, from which step, what it hands on), the parameters cell's literals, and
which string literals name project files. Kept apart so spec.py reads as the build's rules."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

from mlops_nb.errors import NotebookError
from mlops_nb.notebook import analysis, sections
from mlops_nb.notebook.aliasing import AliasGroups
from mlops_nb.notebook.magics import strip_magics
from mlops_nb.notebook.tags import Cell, ParsedNotebook

# Folders whose files are never a step's data dependency (generated or tool state).
NOT_DATA = ("outputs", "steps", ".git", ".dvc", ".mlops_nb", ".venv", ".ipynb_checkpoints")


def block(cells: tuple[Cell, ...]) -> str:
    return "\n".join(c.source for c in cells)


def analyse(nb: ParsedNotebook, cells: tuple[Cell, ...], funcs: dict, aliases: AliasGroups,
            imported: set[str]) -> analysis.BlockInfo:
    merged = analysis.BlockInfo()
    for cell in cells:  # cell by cell, so a syntax error names its cell
        try:
            info = analysis.analyse_block(cell.source, funcs, aliases, imported)
        except analysis.TooDeep as exc:
            raise NotebookError(nb.path, str(exc.msg), cell.index) from None
        except SyntaxError as exc:
            raise NotebookError(
                nb.path, f"Python syntax error on line {exc.lineno}: {exc.msg}", cell.index
            ) from None
        merged.inputs |= info.inputs - merged.writes
        merged.writes |= info.writes
        merged.mutated |= info.mutated
        merged.code_defs = (merged.code_defs - info.writes) | info.code_defs
        merged.literals |= info.literals
        merged.written_literals |= info.written_literals
        merged.folder_literals |= info.folder_literals
        for n in info.writes:
            merged.def_sources.pop(n, None)
        merged.def_sources.update(info.def_sources)
    return merged


def parameters(nb: ParsedNotebook) -> tuple[tuple[str, str], ...]:
    out: dict[str, str] = {}
    for cell in nb.parameters:
        try:
            pairs = sections.literal_names(cell.source)
        except analysis.TooDeep as exc:
            raise NotebookError(nb.path, str(exc.msg), cell.index) from None
        except SyntaxError as exc:
            raise NotebookError(nb.path, f"Python syntax error on line {exc.lineno}: {exc.msg}",
                                cell.index) from None
        except ValueError as exc:
            raise NotebookError(nb.path, str(exc), cell.index) from None
        src = strip_magics(cell.source)
        for name, node in pairs:
            seg = ast.get_source_segment(src, node)
            out[name] = seg if seg is not None else repr(ast.literal_eval(node))
    return tuple(out.items())


@dataclass
class Draft:
    name: str
    nb: ParsedNotebook
    cells: tuple[Cell, ...]
    info: analysis.BlockInfo
    inputs: dict[str, str]
    outputs: set[str]
    params: set[str]
    upstream: set[str]
    data_deps: set[str]
    metrics: list[str]
    copied: dict[str, str]
    groups: dict[str, frozenset[str]] = field(default_factory=dict)
    late: set[str] = field(default_factory=set)
    rebind: set[str] = field(default_factory=set)
    writes: set[str] = field(default_factory=set)


def bundles(d: Draft) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Groups of two or more outputs that may share objects at the end of the step."""
    seen: dict[str, tuple[str, ...]] = {}
    for var in sorted(d.outputs):
        members = tuple(sorted(d.groups.get(var, frozenset({var})) & d.outputs))
        if len(members) > 1:
            seen["+".join(members)] = members
    return tuple(sorted(seen.items()))


def artifacts(d: Draft) -> set[str]:
    names = set(d.outputs)
    for name, members in bundles(d):
        names -= set(members)
        names.add(name)
    return names


def project_file(root: Path, nb_dir: Path, lit: str, folder: bool) -> str | None:
    """The project file a string literal names, if any; a folder only when the literal was
    passed to a call that reads folders (`folder`) or is written as one (`"data/"`, not the
    notebook's own folder): a string is not a path unless it names one, so
    `f"accuracy {x:.3f}."` or a "." is no dependency on the notebook's folder."""
    if not (folder or any(ch in lit for ch in "./")) or lit.startswith(
            ("http:", "https:", "s3:", "gs:")):
        return None
    try:
        p = (nb_dir / lit).resolve()
        rel = p.relative_to(root.resolve())
    except (ValueError, OSError):
        return None
    if not rel.parts or rel.parts[0] in NOT_DATA:
        return None
    folder = folder or (lit.endswith("/") and p != nb_dir.resolve())
    if p.exists() and not (p.is_file() or (folder and p.is_dir())):
        return None
    return rel.as_posix()
