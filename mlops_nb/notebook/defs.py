"""What a function, class or lambda the notebook defines does: when made, and when called.

The rule: a def runs its defaults, decorators and annotations (a class its body) when it is
made, and reads its globals when it is called; it changes an argument only if its body does
(an item or attribute assignment, a changing method, passing it on to something that changes
it), through its local aliases too. Where that cannot be known (`*args`, recursion, classes),
every argument counts as changed.
"""

from __future__ import annotations

import ast
import symtable

from mlops_nb.notebook.aliasing import AliasGroups, links, loop_parts
from mlops_nb.notebook.effects import FuncInfo
from mlops_nb.notebook.scanner import scan


def _def_time_reads(stmt: ast.AST, known: dict[str, FuncInfo], imported: set[str]) -> set[str]:
    """Names a def, class or lambda evaluates when it is made (not when it is called)."""
    nodes: list[ast.AST] = list(getattr(stmt, "decorator_list", []))
    if isinstance(stmt, ast.ClassDef):
        nodes += stmt.bases + [k.value for k in stmt.keywords]
        nodes += [s for s in stmt.body
                  if not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))]
        nodes += [d for s in stmt.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for d in s.decorator_list + s.args.defaults + s.args.kw_defaults if d]
    elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        args = stmt.args
        nodes += args.defaults + [d for d in args.kw_defaults if d]
        if not isinstance(stmt, ast.Lambda):
            nodes += [a.annotation for a in ast.walk(args) if isinstance(a, ast.arg)
                      and a.annotation is not None]
            if stmt.returns is not None:
                nodes.append(stmt.returns)
    reads: set[str] = set()
    for n in nodes:
        reads |= set(scan(n, known, imported).loads)
    if isinstance(stmt, ast.ClassDef):
        reads -= {t.id for s in stmt.body for t in ast.walk(s)
                  if isinstance(t, ast.Name) and isinstance(t.ctx, ast.Store)}
    return reads


def _params(args: ast.arguments) -> tuple[tuple[str, ...], bool]:
    names = tuple(a.arg for a in args.posonlyargs + args.args + args.kwonlyargs)
    return names, bool(args.vararg or args.kwarg)


def _body_changes(body: list[ast.stmt], known: dict[str, FuncInfo],
                  imported: set[str]) -> set[str]:
    """Names a function body changes in place, through its local aliases too. A loop
    variable links one way (aliasing.loop_parts): a change through it changes what it
    iterates over, in every loop that binds it; the iterables of two loops sharing a
    variable name are not made one object."""
    aliases = AliasGroups()
    changed: set[str] = set()
    parts: dict[str, set[str]] = {}
    for stmt in body:
        scanner = scan(stmt, known, imported)
        changed |= scanner.mutated
        for node in ast.walk(stmt):
            if isinstance(node, ast.stmt):
                for a, b in links(node, loops=False):
                    aliases.link(a, b)
        for var, whole in loop_parts(stmt):
            parts.setdefault(var, set()).add(whole)
    out = aliases.expand(changed)
    while True:
        more = aliases.expand({w for n in out for w in parts.get(n, ())}) - out
        if not more:
            return out
        out |= more


def function_effects(stmt: ast.stmt, table: symtable.SymbolTable | None,
                      known: dict[str, FuncInfo], imported: set[str]) -> dict[str, FuncInfo]:
    """What a top-level function, class or `name = lambda` does when called (registered in
    `known` too); {} for any other statement."""
    result: dict[str, FuncInfo] = {}
    if table is None:
        return result
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        node: ast.AST = stmt
        name = stmt.name
        first = stmt.decorator_list[0].lineno if stmt.decorator_list else stmt.lineno
        found = next((c for c in table.get_children() if c.get_name() == name
                      and first <= c.get_lineno() <= stmt.lineno), None)
    elif (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
          and isinstance(stmt.targets[0], ast.Name) and isinstance(stmt.value, ast.Lambda)):
        node = stmt.value
        name = stmt.targets[0].id
        found = next((c for c in table.get_children() if c.get_name() == "lambda"
                      and c.get_lineno() == stmt.value.lineno), None)
    else:
        return result
    if found is None:
        return result
    info = FuncInfo()
    _collect_globals(found, info)
    local = _local_names(found)
    if isinstance(node, ast.ClassDef):
        info.methods = {s.name for s in node.body
                        if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))}
    # every statement inside, nested defs' included (a closure may change what it reads)
    body: list[ast.stmt] = [ast.Expr(node.body)] if isinstance(node, ast.Lambda) else [
        n for n in ast.walk(node) if isinstance(n, ast.stmt) and not isinstance(
            n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    changed = _body_changes(body, known, imported)
    info.mutates = (changed & info.reads) - local - imported
    if not isinstance(node, ast.ClassDef):
        assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        info.params, star = _params(node.args)
        recursive = any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                        and n.func.id == name for n in ast.walk(node))
        if not star and not recursive:
            info.changed_params = frozenset(p for p in info.params if p in changed)
    info.def_reads = _def_time_reads(node, known, imported)
    result[name] = info
    known[name] = info
    return result


def _local_names(table: symtable.SymbolTable) -> set[str]:
    names = set()
    for sym in table.get_symbols():
        if sym.is_local() or sym.is_parameter() or sym.is_free():
            names.add(sym.get_name())
    return names


def _collect_globals(table: symtable.SymbolTable, info: FuncInfo) -> None:
    for sym in table.get_symbols():
        if sym.is_global() and not sym.is_local():
            if sym.is_referenced():
                info.reads.add(sym.get_name())
            if sym.is_declared_global() and sym.is_assigned():
                info.writes.add(sym.get_name())
    for child in table.get_children():
        _collect_globals(child, info)
