"""What each piece of cell code reads, defines and changes (DESIGN section 3).

The rule: a step's inputs and outputs must make the compiled pipeline equal to running the
notebook top to bottom in one kernel; precise where the analysis can know, conservative where
Python is dynamic. A name is an input when it is read where it may not be bound yet,
following Python's order of execution (`flow`); comprehensions and lambdas are scopes of
their own. A name counts as changed by an item or attribute assignment, a method that is not
known to only read (`effects`), or an argument a user function's body changes (`defs`); a
change through an alias (`a = df; a['x'] = 1`) changes every name bound to the same object,
but values known to be immutable never change and slices of lists are copies. Functions,
classes and `f = lambda` reach later steps as source: their globals are read where they are
called, as in one kernel. IPython magics and shell escapes are rewritten to plain Python
before parsing, so they never crash the analyser.
"""

from __future__ import annotations

import ast
import symtable
from dataclasses import dataclass, field

from mlops_nb.notebook.aliasing import AliasGroups, links
from mlops_nb.notebook.defs import function_effects
from mlops_nb.notebook.effects import BUILTINS, FuncInfo, call_name
from mlops_nb.notebook.flow import reads_before_bound
from mlops_nb.notebook.magics import TooDeep, parse, strip_magics
from mlops_nb.notebook.scanner import Scanner, scan

__all__ = ["BUILTINS", "BlockInfo", "FuncInfo", "TooDeep", "analyse_block", "call_name"]


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
    folder_literals: set[str] = field(default_factory=set)  # passed to calls reading folders
    def_sources: dict[str, str] = field(default_factory=dict)


def _immutable(node: ast.AST, immutable: set[str]) -> bool:
    """Whether an expression's value is known to be immutable (a number, a string...)."""
    if isinstance(node, (ast.Constant, ast.JoinedStr, ast.Compare)):
        return True
    if isinstance(node, ast.Name):
        return node.id in immutable
    if isinstance(node, ast.Tuple):
        return all(_immutable(e, immutable) for e in node.elts)
    if isinstance(node, ast.UnaryOp):
        return _immutable(node.operand, immutable)
    if isinstance(node, ast.BinOp):
        return _immutable(node.left, immutable) and _immutable(node.right, immutable)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return node.func.id in ("int", "float", "str", "bool", "len", "round", "abs", "repr",
                                "ord", "chr", "hash", "format", "complex")
    return False


def _loads_with_calls(node: ast.AST, known: dict[str, FuncInfo],
                      imported: set[str]) -> tuple[set[str], Scanner]:
    """Names `node` reads, with the globals of the functions it refers to (read at call)."""
    scanner = scan(node, known, imported)
    reads = set(scanner.loads)
    queue = [n for n in reads if n in known]
    seen: set[str] = set()
    while queue:
        f = queue.pop()
        if f in seen:
            continue
        seen.add(f)
        reads |= known[f].reads
        queue.extend(n for n in known[f].reads if n in known)
    return reads, scanner


def analyse_block(
    source: str,
    known_funcs: dict[str, FuncInfo],
    aliases: AliasGroups,
    imported: set[str],
) -> BlockInfo:
    """Analyse one block of top-level code in order.

    `known_funcs` (functions visible so far) and `aliases` (which names may share an object,
    which hold immutable values) carry state across blocks in notebook order and are updated
    in place; `imported` collects names bound by import statements. Raises SyntaxError, and
    TooDeep (one) for code nested deeper than the parser or the analysis can follow.
    """
    try:
        return _analyse_block(source, known_funcs, aliases, imported)
    except RecursionError:  # the recursive walkers, past Python's recursion limit
        raise TooDeep() from None


def _analyse_block(source: str, known_funcs: dict[str, FuncInfo], aliases: AliasGroups,
                   imported: set[str]) -> BlockInfo:
    tree = parse(source)
    text = strip_magics(source)
    info = BlockInfo()
    definite: set[str] = set()
    try:
        table: symtable.SymbolTable | None = symtable.symtable(text, "<cell>", "exec")
    except SyntaxError:
        table = None

    def loads(node: ast.AST) -> set[str]:
        return _loads_with_calls(node, known_funcs, imported)[0]

    def stores(stmt: ast.stmt) -> set[str]:
        return scan(stmt, known_funcs, imported).stores

    for stmt in tree.body:
        for node in ast.walk(stmt):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    if alias.name != "*":
                        imported.add((alias.asname or alias.name).split(".")[0])
        info.imported = set(imported)
        made = function_effects(stmt, table, known_funcs, imported)
        is_def = isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or bool(
            made)
        scanner = Scanner(known_funcs, imported)
        if is_def:  # a def, a class or `f = lambda ...`: its body runs when called
            name = next(iter(made)) if made else getattr(stmt, "name", "")
            reads = set(made[name].def_reads) if made else set()
            stores_ = {name}
            flow_reads, after = reads - definite, definite | stores_
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            stores_ = {(a.asname or a.name).split(".")[0] for a in stmt.names if a.name != "*"}
            if isinstance(stmt, ast.ImportFrom) and any(a.name == "*" for a in stmt.names):
                stores_.add(f"*{stmt.module}")  # names unknown here: copied to later steps
            reads, flow_reads, after = set(), set(), definite | stores_
        else:
            reads, scanner = _loads_with_calls(stmt, known_funcs, imported)
            stores_ = scanner.stores
            flow_reads, after = reads_before_bound([stmt], definite, loads, stores)
        extra_writes: set[str] = set()
        mutated = set(scanner.mutated)
        for f in {n for n in reads if n in known_funcs}:
            extra_writes |= known_funcs[f].writes
            mutated |= known_funcs[f].mutates
        for f in _called_closure(reads, known_funcs):
            mutated |= known_funcs[f].mutates
        mutated = {m for m in mutated if m not in imported or m in stores_}
        aug = {n.target.id for n in ast.walk(stmt)
               if isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Name)}
        mutated -= aliases.immutable  # numbers, strings...: `n += 1` rebinds, never changes
        # alias bookkeeping before expanding changes: rebinding leaves a group, then the
        # statement's own links (`for d in data:` ...) join groups
        linked = links(stmt, aliases.copies, aliases.arrays)
        for name in stores_ - aug:
            aliases.unlink(name)
        for left, right in linked:
            aliases.link(left, right)
        # a function held by a changed container is not changed itself
        mutated |= {n for n in aliases.expand(mutated) if n not in known_funcs}
        mutated -= aliases.immutable
        _track_kinds(stmt, stores_ - aug, aliases)
        if not is_def:
            _track_code(stmt, stores_ - aug, scanner.mutated, linked, aliases, known_funcs,
                        imported)
        if is_def or isinstance(stmt, (ast.Import, ast.ImportFrom)):
            mutated -= stores_
        info.inputs |= flow_reads | {m for m in mutated - reads if m not in definite}
        info.mutated |= mutated
        writes = stores_ | extra_writes | mutated
        info.writes |= writes
        info.literals |= scanner.literals
        info.written_literals |= scanner.written
        info.folder_literals |= scanner.folders
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            # an import in a step reaches later steps as a copy of the statement
            seg = ast.get_source_segment(text, stmt)
            for name in stores_:
                info.code_defs.add(name)
                if seg is not None:
                    info.def_sources[name] = seg
        elif is_def:
            # defs, classes and `f = lambda ...` reach later steps as a copy of their source,
            # so they read their globals where they are called, as in one kernel
            info.code_defs.add(name)
            decorators = getattr(stmt, "decorator_list", [])
            start = decorators[0].lineno if decorators else stmt.lineno
            assert stmt.end_lineno is not None
            info.def_sources[name] = "\n".join(text.split("\n")[start - 1: stmt.end_lineno])
        else:
            info.code_defs -= stores_ | mutated
            for n in stores_ | mutated:
                info.def_sources.pop(n, None)
        definite = after
    return info


def _called_closure(reads: set[str], known: dict[str, FuncInfo]) -> set[str]:
    out: set[str] = set()
    queue = [n for n in reads if n in known]
    while queue:
        f = queue.pop()
        if f not in out:
            out.add(f)
            queue.extend(n for n in known[f].reads if n in known)
    return out


def _track_kinds(stmt: ast.stmt, rebound: set[str], aliases: AliasGroups) -> None:
    """Remember which names now hold immutable values or builtin sequences (whose slices
    are copies, not views)."""
    for name in rebound:
        aliases.immutable.discard(name)
        aliases.copies.discard(name)
        aliases.arrays.discard(name)
        aliases.array_modules.discard(name)
    if isinstance(stmt, ast.Import):
        aliases.array_modules |= {a.asname or a.name for a in stmt.names
                                  if a.name in ("pandas", "numpy")}
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 \
            and isinstance(stmt.targets[0], ast.Name):
        name, value = stmt.targets[0].id, stmt.value
        if _immutable(value, aliases.immutable):
            aliases.immutable.add(name)
        elif _array_call(value, aliases):
            aliases.arrays.add(name)
        elif isinstance(value, (ast.List, ast.ListComp, ast.Tuple, ast.Constant)) or (
                isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                and value.func.id in ("list", "sorted", "tuple", "str")):
            aliases.copies.add(name)


def _array_call(node: ast.AST, aliases: AliasGroups) -> bool:
    """Whether an expression makes a new pandas/numpy object: `pd.read_csv(...)`,
    `np.zeros(...)`, or a copying method of one (`df.dropna()`)."""
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
        return False
    root = node.func.value
    while isinstance(root, ast.Attribute):
        root = root.value
    if isinstance(root, ast.Name) and root.id in aliases.array_modules:
        return True
    return (isinstance(node.func.value, ast.Name) and node.func.value.id in aliases.arrays
            and node.func.attr in ("copy", "dropna", "fillna", "drop", "rename", "astype",
                                   "reset_index", "sort_values", "assign", "merge"))


def _track_code(stmt: ast.stmt, rebound: set[str], changed: set[str],
                linked: list[tuple[str, str]], aliases: AliasGroups,
                known: dict[str, FuncInfo], imported: set[str]) -> None:
    """Remember which names may now hold functions or lambdas the notebook made: a later
    step that loads them must also get what that code reads when it is called."""
    for name in rebound:
        aliases.holds.pop(name, None)
        aliases.lambdas.discard(name)
    reads: set[str] = set()
    has_lambda = False
    called = {id(n.func) for n in ast.walk(stmt) if isinstance(n, ast.Call)}
    for node in ast.walk(stmt):
        if isinstance(node, ast.Lambda):
            has_lambda = True
            params = {a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg)}
            reads |= _loads_with_calls(node.body, known, imported)[0] - params
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) \
                and node.id in known and id(node) not in called:
            reads |= {node.id} | _called_closure({node.id}, known) | {
                r for f in _called_closure({node.id}, known) for r in known[f].reads}
    for _left, right in linked:
        if right in aliases.holds:
            reads |= aliases.holds[right]
            has_lambda |= right in aliases.lambdas
    if not reads and not has_lambda:
        return
    for name in rebound | changed:
        aliases.holds.setdefault(name, set()).update(reads)
        if has_lambda:
            aliases.lambdas.add(name)
