"""The order steps run in: topological, keeping notebook order where the edges allow, so
generated files are stable; a cycle is an error that lists its steps."""

from __future__ import annotations

from typing import Any

from mlops_nb.errors import PipelineError


def toposort(drafts: dict[str, Any]) -> list[Any]:
    """Drafts (with .name, .upstream, .nb.path) in run order; notebook order breaks ties."""
    position = {name: i for i, name in enumerate(drafts)}
    indeg = {n: 0 for n in drafts}
    children: dict[str, list[str]] = {n: [] for n in drafts}
    for d in drafts.values():
        for u in d.upstream:
            indeg[d.name] += 1
            children[u].append(d.name)
    ready = sorted((n for n, k in indeg.items() if k == 0), key=position.__getitem__)
    out: list[Any] = []
    while ready:
        n = ready.pop(0)
        out.append(drafts[n])
        for c in children[n]:
            indeg[c] -= 1
            if indeg[c] == 0:
                ready.append(c)
                ready.sort(key=position.__getitem__)
    if len(out) < len(drafts):
        raise PipelineError(f"dependency cycle between steps: {' -> '.join(_cycle(drafts))}"
                            "; remove a 'prev:' tag or move code so data flows one way")
    return out


def _cycle(drafts: dict[str, Any]) -> list[str]:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for u in sorted(drafts[n].upstream):
            if state.get(u) == 1:
                return stack[stack.index(u):] + [u]
            if u not in state:
                found = visit(u)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in drafts:
        if n not in state:
            found = visit(n)
            if found:
                where = [f"{s} ({drafts[s].nb.path})" for s in reversed(found)]
                return where
    return []
