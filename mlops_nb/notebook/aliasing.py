"""Which names may refer to the same object, so a change through one changes the others.

The rule: may-alias groups, kept conservatively. `a = b`, `a = [b, c]` (a container holding
them), `a = b[k]` or `a = b.attr` (a part of b), `for a in b:`, `b.append(a)`, `b[k] = a` all
put a and b in one group; rebinding a name to a new object takes it out of its group. A change
to any member then counts as a change to every member: Kale's Titanic example changes
`train_df` through `for dataset in [train_df, test_df]: dataset[...] = ...`.
"""

from __future__ import annotations

import ast

CONTAINER_ADDS = frozenset({"append", "extend", "insert", "add", "update", "setdefault",
                            "appendleft", "extendleft"})


# numpy/pandas methods whose result may share memory with the receiver
VIEWS = ("view", "reshape", "ravel", "transpose", "squeeze", "swapaxes", "to_numpy")


class AliasGroups:
    """Mutable may-alias groups of names, carried in notebook order across cells."""

    def __init__(self) -> None:
        self._group: dict[str, set[str]] = {}
        self.immutable: set[str] = set()  # names bound to numbers, strings, tuples of them
        self.copies: set[str] = set()  # names bound to builtin sequences: a slice is a copy
        self.arrays: set[str] = set()  # pandas/numpy objects: `a[k] = v` copies v's values
        self.array_modules: set[str] = set()  # names of the pandas and numpy modules
        # names whose objects may hold functions the notebook made (`fs = {'f': f}`, a
        # lambda in a list): name -> what that code reads when called (the functions' names
        # included); `lambdas`: those holding lambdas or closures, pickled by value
        self.holds: dict[str, set[str]] = {}
        self.lambdas: set[str] = set()

    def members(self, name: str) -> set[str]:
        return set(self._group.get(name, {name}))

    def unlink(self, name: str) -> None:
        group = self._group.pop(name, None)
        if group is not None:
            group.discard(name)

    def link(self, a: str, b: str) -> None:
        if a == b:
            return
        ga = self._group.get(a) or {a}
        gb = self._group.get(b) or {b}
        if ga is gb:
            return
        merged = ga | gb
        for n in merged:
            self._group[n] = merged

    def expand(self, names: set[str]) -> set[str]:
        out: set[str] = set()
        for n in names:
            out |= self.members(n)
        return out


def names_in(node: ast.AST, copies: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Names whose objects an expression may hand over by reference (not computed values).

    A slice of a name in `copies` (a list, tuple or string) is a new object, as is anything
    a call returns but `d.items()`/`values()`/`keys()`, numpy views (`a.reshape(...)`) and
    `np.asarray(a)`: `x.copy()`, `df.dropna()`..."""
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [n for e in node.elts for n in names_in(e, copies)]
    if isinstance(node, ast.Dict):
        return [n for v in node.values for n in names_in(v, copies)]
    if isinstance(node, ast.Starred):
        return names_in(node.value, copies)
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice) \
            and isinstance(node.value, ast.Name) and node.value.id in copies:
        return []
    if isinstance(node, (ast.Subscript, ast.Attribute)):
        return names_in(node.value, copies)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr in ("items", "values", "keys", "__iter__") + VIEWS:
            return names_in(node.func.value, copies)
        if node.func.attr in ("asarray", "asanyarray") and node.args:  # np.asarray(a) is a
            return names_in(node.args[0], copies)
    return []


def _base(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def links(stmt: ast.stmt, copies: frozenset[str] | set[str] = frozenset(),
          arrays: frozenset[str] | set[str] = frozenset(),
          loops: bool = True) -> list[tuple[str, str]]:
    """The (name, name) pairs a top-level statement may make share an object.

    `arrays`: names bound to pandas or numpy objects, whose item assignment copies the values
    in (`df['t'] = iris.target` does not make df hold iris). `loops`: with False, a `for`
    target is not paired with what it iterates over (see loop_parts)."""
    pairs: list[tuple[str, str]] = []
    if isinstance(stmt, ast.Assign):
        for target in stmt.targets:
            if isinstance(target, (ast.Tuple, ast.List)) and isinstance(stmt.value, (
                    ast.Tuple, ast.List)) and len(target.elts) == len(stmt.value.elts):
                for t, v in zip(target.elts, stmt.value.elts, strict=True):
                    pairs += [(n, m) for n in names_in(t, copies) if isinstance(t, ast.Name)
                              for m in names_in(v, copies)]
            elif isinstance(target, ast.Name):
                pairs += [(target.id, m) for m in names_in(stmt.value, copies)]
            elif isinstance(target, (ast.Tuple, ast.List)):  # `a, b = pair`: its members
                pairs += [(t.id, m) for t in ast.walk(target) if isinstance(t, ast.Name)
                          for m in names_in(stmt.value, copies)]
            elif isinstance(target, (ast.Subscript, ast.Attribute)):
                base = _base(target)
                if base and not (isinstance(target, ast.Subscript) and base in arrays
                                 and isinstance(target.value, ast.Name)):
                    pairs += [(base, m) for m in names_in(stmt.value, copies)]
    for node in ast.walk(stmt):
        if loops and isinstance(node, (ast.For, ast.AsyncFor)) and isinstance(node.target, (
                ast.Name, ast.Tuple, ast.List)):
            targets = [t.id for t in ast.walk(node.target) if isinstance(t, ast.Name)]
            pairs += [(t, m) for t in targets for m in names_in(node.iter, copies)]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in CONTAINER_ADDS:
            base = _base(node.func.value)
            if base:
                pairs += [(base, m) for a in node.args for m in names_in(a, copies)]
    return pairs


def loop_parts(stmt: ast.stmt) -> list[tuple[str, str]]:
    """(loop variable, what it iterates over) pairs of the `for` loops in a statement: a
    one-way link, since a change through the variable changes the iterable, but a change of
    another iterable the same name walks later (`for key in KEYS: ...` then `for key in d:
    d[key] = 1`) does not reach the first one."""
    pairs: list[tuple[str, str]] = []
    for node in ast.walk(stmt):
        if isinstance(node, (ast.For, ast.AsyncFor)):
            targets = [t.id for t in ast.walk(node.target) if isinstance(t, ast.Name)]
            pairs += [(t, m) for t in targets for m in names_in(node.iter)]
    return pairs
