"""What each piece of cell code reads, defines and changes (DESIGN section 3).

The rule: a step's inputs and outputs must make the compiled pipeline equal to running the
notebook top to bottom in one kernel. So the analysis is conservative where Python is dynamic:
a method call on a name, an item or attribute assignment, or passing a name to a function the
user defined, all count as changing it; a change through an alias (`a = df; a['x'] = 1`)
changes every name bound to the same object; names a function reads or changes count when the
function is referenced, not when it is defined. IPython magics and shell escapes are rewritten
to plain Python before parsing, so they never crash the analyser.
"""

from __future__ import annotations

import ast
import builtins
import re
import symtable
from dataclasses import dataclass, field

from mlops_nb.aliasing import AliasGroups, links
from mlops_nb.magics import parse, strip_magics

BUILTINS = frozenset(dir(builtins)) | {"get_ipython", "display", "In", "Out", "exit", "quit"}
# Calls that never change their arguments, though they take them: common reads.
PURE_CALLS = frozenset(
    {"print", "len", "repr", "str", "int", "float", "bool", "type", "isinstance", "sorted",
     "list", "tuple", "set", "dict", "sum", "min", "max", "abs", "round", "range", "enumerate",
     "zip", "display", "hash", "id", "iter", "any", "all", "format", "vars", "dir", "hasattr",
     "getattr", "issubclass", "frozenset", "reversed", "map", "filter"}
)
# Library functions known to change an argument in place (np.random.shuffle, rng.shuffle...).
MUTATING_CALLS = frozenset({"shuffle", "fill_diagonal", "copyto", "put", "place", "putmask"})
WRITE_CALLS = re.compile(
    r"^(to_csv|to_parquet|to_json|to_pickle|to_excel|to_feather|to_hdf|to_html|to_latex|"
    r"to_markdown|savefig|save|savez|savez_compressed|savetxt|dump|write_text|write_bytes)$"
)
@dataclass
class FuncInfo:
    """Globals a function (or class) reads and changes when it is called."""

    reads: set[str] = field(default_factory=set)
    writes: set[str] = field(default_factory=set)
    mutates: set[str] = field(default_factory=set)


@dataclass
class BlockInfo:
    """The effect of a block of top-level code, as a step or a section sees it."""

    inputs: set[str] = field(default_factory=set)  # read before this block binds them
    writes: set[str] = field(default_factory=set)  # bound or changed by the block
    mutated: set[str] = field(default_factory=set)  # changed in place (subset of writes)
    code_defs: set[str] = field(default_factory=set)  # finally bound by a def/class
    imported: set[str] = field(default_factory=set)
    literals: set[str] = field(default_factory=set)  # string constants (candidate paths)
    written_literals: set[str] = field(default_factory=set)  # paths passed to write calls
    def_sources: dict[str, str] = field(default_factory=dict)


def _base_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def call_name(func: ast.AST) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


class _Scanner(ast.NodeVisitor):
    """Collect loads, stores and in-place changes of one statement, outside nested scopes."""

    def __init__(self, known_funcs: dict[str, FuncInfo], user_funcs: set[str],
                 imported: set[str]) -> None:
        self.loads: list[str] = []
        self.stores: set[str] = set()
        self.mutated: set[str] = set()
        self.literals: set[str] = set()
        self.written: set[str] = set()
        self.known = known_funcs
        self.user_funcs = user_funcs
        self.imported = imported
        self._bound_in_comp: list[set[str]] = []

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            if not any(node.id in s for s in self._bound_in_comp):
                self.loads.append(node.id)
        else:
            self.stores.add(node.id)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and 0 < len(node.value) < 300 and "\n" not in node.value:
            self.literals.add(node.value)

    def _comprehension(self, node: ast.AST, elts: list[ast.AST],
                       generators: list[ast.comprehension]) -> None:
        bound: set[str] = set()
        self._bound_in_comp.append(bound)
        for gen in generators:
            self.visit(gen.iter)
            for t in ast.walk(gen.target):
                if isinstance(t, ast.Name):
                    bound.add(t.id)
            for cond in gen.ifs:
                self.visit(cond)
        for e in elts:
            self.visit(e)
        self._bound_in_comp.pop()

    def visit_ListComp(self, node: ast.ListComp) -> None:
        self._comprehension(node, [node.elt], node.generators)

    visit_SetComp = visit_ListComp  # type: ignore[assignment]
    visit_GeneratorExp = visit_ListComp  # type: ignore[assignment]

    def visit_DictComp(self, node: ast.DictComp) -> None:
        self._comprehension(node, [node.key, node.value], node.generators)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        params = {a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg)}
        self._bound_in_comp.append(params)
        self.visit(node.body)
        for d in node.args.defaults + [d for d in node.args.kw_defaults if d]:
            self.visit(d)
        self._bound_in_comp.pop()

    def _target_change(self, target: ast.AST) -> None:
        if isinstance(target, (ast.Attribute, ast.Subscript)):
            base = _base_name(target)
            if base:
                self.mutated.add(base)
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
        args = list(node.args) + [k.value for k in node.keywords]
        if isinstance(node.func, ast.Attribute):
            base = _base_name(node.func.value)
            if base and base not in self.imported and base not in self.user_funcs:
                self.mutated.add(base)
        if name and (name in self.user_funcs or name in MUTATING_CALLS) and name not in PURE_CALLS:
            for a in args:
                base = _base_name(a)
                if base:
                    self.mutated.add(base)
        if name and WRITE_CALLS.match(name):
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


def _function_effects(source_tree: ast.Module, text: str) -> dict[str, FuncInfo]:
    """Globals read/changed by each top-level function or class body, from symtable."""
    result: dict[str, FuncInfo] = {}
    try:
        table = symtable.symtable(text, "<cell>", "exec")
    except SyntaxError:
        return result
    by_name: dict[str, symtable.SymbolTable] = {}
    for child in table.get_children():
        by_name.setdefault(child.get_name(), child)
    for stmt in source_tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found = by_name.get(stmt.name)
            if found is None:
                continue
            info = FuncInfo()
            _collect_globals(found, info)
            # in-place changes of globals inside the body (x.append(...), x[k] = v)
            local_names = _local_names(found)
            for node in ast.walk(stmt):
                target: ast.AST | None = None
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                    target = node.func.value
                elif isinstance(node, (ast.Assign, ast.AugAssign)):
                    for t in getattr(node, "targets", [getattr(node, "target", None)]):
                        if isinstance(t, (ast.Subscript, ast.Attribute)):
                            b = _base_name(t)
                            if b and b not in local_names:
                                info.mutates.add(b)
                if target is not None:
                    b = _base_name(target)
                    if b and b not in local_names and b in info.reads:
                        info.mutates.add(b)
            result[stmt.name] = info
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


CONDITIONAL = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.Try, ast.Match)


def analyse_block(
    source: str,
    known_funcs: dict[str, FuncInfo],
    aliases: AliasGroups,
    imported: set[str],
) -> BlockInfo:
    """Analyse one block of top-level code in order.

    `known_funcs` (functions visible so far) and `aliases` (which names may share an object)
    carry state across blocks in notebook order and are updated in place;
    `imported` collects names bound by import statements.
    """
    tree = parse(source)
    info = BlockInfo()
    known_funcs.update(_function_effects(tree, strip_magics(source)))
    definite: set[str] = set()
    user_funcs = set(known_funcs)


    for stmt in tree.body:
        for node in ast.walk(stmt):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    if alias.name != "*":
                        imported.add((alias.asname or alias.name).split(".")[0])
        info.imported = set(imported)
        scanner = _Scanner(known_funcs, user_funcs, imported)
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for dec in stmt.decorator_list:
                scanner.visit(dec)
            if not isinstance(stmt, ast.ClassDef):
                for d in stmt.args.defaults + [d for d in stmt.args.kw_defaults if d]:
                    scanner.visit(d)
            else:
                for b in stmt.bases:
                    scanner.visit(b)
            stores = {stmt.name}
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            stores = {(a.asname or a.name).split(".")[0] for a in stmt.names if a.name != "*"}
            if isinstance(stmt, ast.ImportFrom) and any(a.name == "*" for a in stmt.names):
                stores.add(f"*{stmt.module}")  # names unknown here: copied to later steps
        else:
            scanner.visit(stmt)
            stores = scanner.stores
        loads = list(scanner.loads)
        extra_reads: set[str] = set()
        extra_writes: set[str] = set()
        mutated = set(scanner.mutated)
        seen: set[str] = set()
        queue = [n for n in loads if n in known_funcs]
        while queue:  # functions referenced, and the functions they reference
            f = queue.pop()
            if f in seen:
                continue
            seen.add(f)
            fi = known_funcs[f]
            extra_reads |= fi.reads
            extra_writes |= fi.writes
            mutated |= fi.mutates
            queue.extend(n for n in fi.reads if n in known_funcs)
        reads = set(loads) | extra_reads
        mutated = {m for m in mutated if m not in imported or m in stores}
        # alias bookkeeping before expanding changes: rebinding leaves a group, then the
        # statement's own links (`for d in data:` ...) join groups
        linked = links(stmt)
        for name in stores:
            aliases.unlink(name)
        for left, right in linked:
            aliases.link(left, right)
        mutated = aliases.expand(mutated)
        bound_first: set[str] = set()
        if isinstance(stmt, (ast.For, ast.AsyncFor)):  # the loop binds its target first
            iter_loads = {n.id for n in ast.walk(stmt.iter) if isinstance(n, ast.Name)}
            bound_first = {n.id for n in ast.walk(stmt.target)
                           if isinstance(n, ast.Name)} - iter_loads
        info.inputs |= {n for n in reads | mutated if n not in definite | bound_first}
        info.mutated |= mutated
        writes = stores | extra_writes | mutated
        info.writes |= writes
        info.literals |= scanner.literals
        info.written_literals |= scanner.written
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            # an import in a step reaches later steps as a copy of the statement
            seg = ast.get_source_segment(strip_magics(source), stmt)
            for name in stores:
                info.code_defs.add(name)
                if seg is not None:
                    info.def_sources[name] = seg
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            info.code_defs.add(stmt.name)
            seg = ast.get_source_segment(strip_magics(source), stmt, padded=False)
            if seg is not None:
                start = stmt.decorator_list[0].lineno if stmt.decorator_list else stmt.lineno
                lines = strip_magics(source).split("\n")[start - 1: stmt.end_lineno]
                info.def_sources[stmt.name] = "\n".join(lines)
        else:
            info.code_defs -= stores | mutated
            for n in stores | mutated:
                info.def_sources.pop(n, None)
        if not isinstance(stmt, CONDITIONAL):
            definite |= stores
    return info
