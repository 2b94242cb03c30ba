"""Which names a statement reads before it binds them, following Python's order of execution.

The rule: a name bound earlier on every path that reaches a read is not an input of the
read (`for i in r: img = load(i); show(img)` does not read an outer `img`; a `with` body binds
for the code after it). Branches bind for the code after them only when every branch binds
(an `if` with its `else`); a loop body or a `try` body may not run, so what they bind is not
taken as bound after them. Reads of names the code may not have bound stay inputs: a missing
input is a failed step, a superfluous one only a cost.
"""

from __future__ import annotations

import ast
from collections.abc import Callable

# loads(node) -> names an expression or a simple statement reads (comprehension- and
# lambda-aware, functions it calls expanded); stores(stmt) -> names a simple statement binds
Loads = Callable[[ast.AST], set[str]]


def _target_names(node: ast.AST | None) -> set[str]:
    if node is None:
        return set()
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)
            and isinstance(n.ctx, ast.Store)}


def _pattern_names(node: ast.AST) -> set[str]:
    out = set()
    for n in ast.walk(node):
        name = getattr(n, "name", None)
        if isinstance(n, (ast.MatchAs, ast.MatchStar)) and name:
            out.add(name)
        if isinstance(n, ast.MatchMapping) and n.rest:
            out.add(n.rest)
    return out


def _nested_scope_reads(stmt: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef,
                        loads: Loads) -> set[str]:
    """Names a def or class nested in a compound statement reads from outside."""
    reads: set[str] = set()
    for dec in stmt.decorator_list:
        reads |= loads(dec)
    if isinstance(stmt, ast.ClassDef):
        for b in stmt.bases + [k.value for k in stmt.keywords]:
            reads |= loads(b)
    else:
        for d in stmt.args.defaults + [d for d in stmt.args.kw_defaults if d]:
            reads |= loads(d)
    inner = {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name)
             and isinstance(n.ctx, ast.Load)}
    local = {a.arg for a in ast.walk(stmt) if isinstance(a, ast.arg)} | {
        n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and not isinstance(n.ctx,
                                                                                 ast.Load)}
    return reads | (inner - local)


def reads_before_bound(stmts: list[ast.stmt], bound: set[str], loads: Loads,
                       stores: Callable[[ast.stmt], set[str]]) -> tuple[set[str], set[str]]:
    """(names read where they may be unbound, names bound on every path after `stmts`)."""
    reads: set[str] = set()
    bound = set(bound)
    for stmt in stmts:
        r, bound = _one(stmt, bound, loads, stores)
        reads |= r
    return reads, bound


def _one(stmt: ast.stmt, bound: set[str], loads: Loads,
         stores: Callable[[ast.stmt], set[str]]) -> tuple[set[str], set[str]]:
    def block(body: list[ast.stmt], start: set[str]) -> tuple[set[str], set[str]]:
        return reads_before_bound(body, start, loads, stores)

    if isinstance(stmt, (ast.If, ast.While)):
        reads = loads(stmt.test) - bound
        rb, bb = block(stmt.body, bound)
        ro, bo = block(stmt.orelse, bound)
        after = bound | (bb & bo) if isinstance(stmt, ast.If) else bound
        return reads | rb | ro, after
    if isinstance(stmt, (ast.For, ast.AsyncFor)):
        reads = loads(stmt.iter) - bound
        rb, _ = block(stmt.body, bound | _target_names(stmt.target))
        ro, _ = block(stmt.orelse, bound)
        return reads | rb | ro, bound
    if isinstance(stmt, (ast.With, ast.AsyncWith)):
        reads = set()
        inner = set(bound)
        for item in stmt.items:
            reads |= loads(item.context_expr) - inner
            inner |= _target_names(item.optional_vars)
        rb, bb = block(stmt.body, inner)
        return reads | rb, bb
    if isinstance(stmt, (ast.Try, ast.TryStar)):
        rb, bb = block(stmt.body, bound)
        reads = set(rb)
        for h in stmt.handlers:
            if h.type is not None:
                reads |= loads(h.type) - bound
            rh, _ = block(h.body, bound | ({h.name} if h.name else set()))
            reads |= rh
        ro, _ = block(stmt.orelse, bb)
        rf, bf = block(stmt.finalbody, bound)
        return reads | ro | rf, bf
    if isinstance(stmt, ast.Match):
        reads = loads(stmt.subject) - bound
        for case in stmt.cases:
            inner = bound | _pattern_names(case.pattern)
            for n in ast.walk(case.pattern):
                if isinstance(n, ast.MatchValue):
                    reads |= loads(n.value) - bound
            if case.guard is not None:
                reads |= loads(case.guard) - inner
            rc, _ = block(case.body, inner)
            reads |= rc
        return reads, bound
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return _nested_scope_reads(stmt, loads) - bound, bound | {stmt.name}
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):  # binds, like an assignment
        return set(), bound | {(a.asname or a.name).split(".")[0] for a in stmt.names
                               if a.name != "*"}
    return loads(stmt) - bound, bound | stores(stmt)
