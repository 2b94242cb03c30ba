"""The names one statement loads, binds and changes in place, outside nested scopes.

The rule: comprehensions and lambdas are scopes of their own, as in Python 3, and a def
nested in a statement runs when it is called: their variables are never the block's names.
Whether a call changes what it touches is `effects`' knowledge.
"""

from __future__ import annotations

import ast

from mlops_nb.notebook.aliasing import names_in
from mlops_nb.notebook.effects import (
    FOLDER_READERS,
    MUTATING_CALLS,
    PURE_CALLS,
    WRITE_CALLS,
    FuncInfo,
    base_name,
    call_name,
    changes_receiver,
)


class Scanner(ast.NodeVisitor):
    """Collect loads, stores and in-place changes of one statement, outside nested scopes.

    Comprehensions and lambdas are scopes of their own, as in Python 3: their variables are
    never the block's names; a change to a comprehension variable is a change to what it
    iterates over (`[clean(d) for d in frames]` changes `frames`).
    """

    def __init__(self, known_funcs: dict[str, FuncInfo], imported: set[str]) -> None:
        self.loads: list[str] = []
        self.stores: set[str] = set()
        self.mutated: set[str] = set()
        self.literals: set[str] = set()
        self.written: set[str] = set()
        self.folders: set[str] = set()  # literals passed to a call that reads a folder
        self.known = known_funcs
        self.imported = imported
        self.methods = {m for f in known_funcs.values() for m in f.methods}
        self._scopes: list[dict[str, list[str]]] = []  # bound name -> names it draws from

    def _bound(self, name: str) -> dict[str, list[str]] | None:
        for scope in reversed(self._scopes):
            if name in scope:
                return scope
        return None

    def _mutate(self, node: ast.AST, depth: int = 0) -> None:
        base = base_name(node)
        if base is None or depth > 8:
            return
        scope = self._bound(base)
        if scope is None:
            self.mutated.add(base)
            return
        for src in scope[base]:  # a comprehension variable: what it iterates over
            self._mutate(ast.Name(id=src, ctx=ast.Load()), depth + 1)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            if self._bound(node.id) is None:
                self.loads.append(node.id)
        elif self._bound(node.id) is None:
            self.stores.add(node.id)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        # a def nested in a statement: its body runs when called (see _function_effects)
        for n in node.decorator_list + node.args.defaults + [
                d for d in node.args.kw_defaults if d]:
            self.visit(n)
        self.stores.add(node.name)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for n in node.decorator_list + node.bases + [k.value for k in node.keywords]:
            self.visit(n)
        self.stores.add(node.name)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and 0 < len(node.value) < 300 and "\n" not in node.value:
            self.literals.add(node.value)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        # the text of an f-string is a fragment (`f"accuracy {x:.3f}."` holds "."), never a
        # path by itself; only the expressions inside are visited
        for part in node.values:
            if isinstance(part, ast.FormattedValue):
                self.visit(part.value)
                if part.format_spec is not None:
                    self.visit(part.format_spec)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)  # `:=` binds in the enclosing (block) scope, even in a comp
        self.stores.add(node.target.id)

    def _comprehension(self, elts: list[ast.AST], generators: list[ast.comprehension]) -> None:
        scope: dict[str, list[str]] = {}
        first = True
        for gen in generators:
            if first:  # the first iterable is evaluated in the enclosing scope
                self.visit(gen.iter)
                self._scopes.append(scope)
                first = False
            else:
                self.visit(gen.iter)
            sources = names_in(gen.iter)
            for t in ast.walk(gen.target):
                if isinstance(t, ast.Name):
                    scope[t.id] = sources
            for cond in gen.ifs:
                self.visit(cond)
        for e in elts:
            self.visit(e)
        self._scopes.pop()

    def visit_ListComp(self, node: ast.ListComp) -> None:
        self._comprehension([node.elt], node.generators)

    visit_SetComp = visit_ListComp  # type: ignore[assignment]
    visit_GeneratorExp = visit_ListComp  # type: ignore[assignment]

    def visit_DictComp(self, node: ast.DictComp) -> None:
        self._comprehension([node.key, node.value], node.generators)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for d in node.args.defaults + [d for d in node.args.kw_defaults if d]:
            self.visit(d)
        self._scopes.append({a.arg: [] for a in ast.walk(node.args) if isinstance(a, ast.arg)})
        self.visit(node.body)
        self._scopes.pop()

    def _target_change(self, target: ast.AST) -> None:
        if isinstance(target, (ast.Attribute, ast.Subscript)):
            self._mutate(target)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for elt in target.elts:
                self._target_change(elt)
        elif isinstance(target, ast.Starred):
            self._target_change(target.value)

    def visit_Assign(self, node: ast.Assign) -> None:
        for t in node.targets:
            self._target_change(t)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._target_change(node.target)
        if isinstance(node.target, ast.Name):
            self.loads.append(node.target.id)
            # `lst += [x]` changes a list in place; `n += 1` rebinds (immutables: see analyse)
            self.mutated.add(node.target.id)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._target_change(node.target)
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for t in node.targets:
            self._target_change(t)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = call_name(node.func)
        args: list[ast.expr] = list(node.args) + [k.value for k in node.keywords]
        if isinstance(node.func, ast.Attribute):
            base = base_name(node.func.value)
            if base and base not in self.imported and base not in self.known \
                    and changes_receiver(node):
                self._mutate(node.func.value)
            if name in self.methods:  # a method of a class the notebook defines
                for a in args:
                    self._mutate(a)
        elif name in self.known:
            for a in self.known[name].changed_args(node):
                self._mutate(a)
        if name and name in MUTATING_CALLS and name not in PURE_CALLS:
            for a in args:
                self._mutate(a)
        if name in FOLDER_READERS:
            self.folders |= {a.value for a in args
                             if isinstance(a, ast.Constant) and isinstance(a.value, str)}
        receiver = _path_literal(node.func.value) if isinstance(node.func, ast.Attribute) \
            else None
        if receiver is not None and (name in ("write_text", "write_bytes", "touch")
                                     or (name == "open" and _writes(node.args[:1]))):
            self.written.add(receiver)  # Path('out.txt').write_text(...): a write, not a read
        elif receiver is not None and name in ("glob", "rglob", "iterdir"):
            # Path('imgs').glob(...) reads a folder; Path('x') alone is no dependency (a
            # name that only exists now and then, as a flag file, must not flip the pipeline)
            self.folders.add(receiver)
        elif name and WRITE_CALLS.match(name):
            for a in args[:2]:
                if isinstance(a, ast.Constant) and isinstance(a.value, str):
                    self.written.add(a.value)
        if name == "open" and len(node.args) >= 2:
            mode = node.args[1]
            first = node.args[0]
            if (isinstance(mode, ast.Constant) and isinstance(mode.value, str)
                    and set(mode.value) & set("wax") and isinstance(first, ast.Constant)):
                self.written.add(str(first.value))
        self.generic_visit(node)


def _path_literal(node: ast.AST) -> str | None:
    """'x' for `Path('x')` / `pathlib.Path('x')`, else None."""
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
            and isinstance(node.args[0].value, str):
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if called in ("Path", "PosixPath", "PurePath"):
            return node.args[0].value
    return None


def _writes(mode_args: list[ast.expr]) -> bool:
    """A literal open mode that writes ('w', 'a', 'x', with or without 'b' / '+')."""
    return bool(mode_args) and isinstance(mode_args[0], ast.Constant) \
        and isinstance(mode_args[0].value, str) and bool(set(mode_args[0].value) & set("wax"))


def scan(node: ast.AST, known: dict[str, FuncInfo], imported: set[str],
          bound: dict[str, list[str]] | None = None) -> Scanner:
    scanner = Scanner(known, imported)
    if bound:
        scanner._scopes.append(bound)
    scanner.visit(node)
    return scanner
