"""Which part of a notebook's `functions` cell each step notebook carries.

Rule: editing one helper reruns only the steps that use it. A step notebook carries the
top-level definitions of the functions cell that its code reads, directly or through other
definitions, and those its inputs' producers carried (an object loaded from an earlier step
may name a helper by reference, as pickle does for `__main__` functions). Always carried:
classes (unpickling finds them by name), imports, decorated definitions and every statement
that is not a plain definition or assignment (it may have an effect, `warnings.filterwarnings`).
Statements keep their order and text, comments above them included. A cell that does not
parse is carried whole.
"""

from __future__ import annotations

import ast

from mlops_nb.notebook.magics import parse
from mlops_nb.pipeline.spec import PipelineSpec, StepSpec


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _bound(node: ast.stmt) -> set[str] | None:
    """The names a filterable statement defines; None for one that is always carried."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return None if node.decorator_list else {node.name}
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names = set().union(*(_names(t) for t in targets))
        plain = all(isinstance(n, (ast.Name, ast.Tuple, ast.List, ast.Starred))
                    for t in targets for n in ast.walk(t)
                    if not isinstance(n, (ast.Load, ast.Store)))
        return names if plain and names else None
    return None


class FunctionsCell:
    """A functions cell split into top-level statements, each with what it binds and reads."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines = source.split("\n")
        try:
            tree = parse(source)
        except SyntaxError:
            self.chunks: list[tuple[str, set[str] | None, set[str]]] = [(source, None, set())]
            return
        self.chunks = []
        lines = [n.lineno for n in tree.body]
        if len(set(lines)) < len(lines):  # `a = 1; b = 2`: statements share a line
            self.chunks = [(source, None, set())]
            return
        start = 0
        for node in tree.body:
            end = node.end_lineno or node.lineno
            text = "\n".join(self.lines[start:end])
            self.chunks.append((text, _bound(node), _names(node)))
            start = end
        tail = "\n".join(self.lines[start:])
        if tail.strip():
            self.chunks.append((tail, None, set()))

    @property
    def defined(self) -> set[str]:
        return set().union(*(b for _, b, _ in self.chunks if b)) if self.chunks else set()

    def needed(self, reads: set[str]) -> set[str]:
        """The names of definitions that code reading `reads` needs, transitively."""
        defined = self.defined
        want = set(reads) & defined
        for _, bound, used in self.chunks:
            if bound is None:
                want |= used & defined
        while True:
            more = set().union(*(used for _, bound, used in self.chunks
                                 if bound and bound & want)) & defined
            if more <= want:
                return want
            want |= more

    def text_for(self, names: set[str]) -> str:
        kept = [text for text, bound, _ in self.chunks if bound is None or bound & names]
        return "\n".join(kept).strip("\n")


def _reads(step: StepSpec) -> set[str]:
    out: set[str] = set()
    for source in [c.source for c in step.cells] + [src for _, src in step.copied_defs]:
        try:
            out |= _names(parse(source))
        except SyntaxError:
            return {"*"}
    return out


def functions_by_step(spec: PipelineSpec) -> dict[str, str]:
    """Each step's share of its notebook's functions cell (see the module's rule)."""
    cells = {nb.path: FunctionsCell(nb.functions) for nb in spec.notebooks}
    needed: dict[str, set[str]] = {}
    out = {}
    for step in spec.steps:  # in pipeline order: producers first
        cell = cells[step.notebook]
        reads = _reads(step)
        names = cell.defined if "*" in reads else cell.needed(reads)
        for _, producer in step.inputs:
            if spec.step(producer).notebook == step.notebook:
                names |= needed.get(producer, set())
        needed[step.name] = names
        out[step.name] = cell.text_for(names) if cell.source.strip() else ""
    return out
