"""`test` cells in the spec: what each reads, and from which step (issue 22)."""

from __future__ import annotations

from dataclasses import dataclass

from mlops_nb.notebook.aliasing import AliasGroups
from mlops_nb.notebook.tags import Cell, ParsedNotebook
from mlops_nb.pipeline.draft import Draft, analyse


@dataclass(frozen=True)
class TestSpec:
    """A `test` cell: run by `mlops-nb test` against the last run's outputs, never in a step.
    Its inputs are what it reads of the steps up to the one it tests, in notebook order (so
    they become those steps' outputs), as a top-to-bottom run would have them there."""

    notebook: str
    step: str
    cell: Cell
    inputs: tuple[tuple[str, str], ...]  # (variable, producing step)
    params: tuple[str, ...]
    copied_defs: tuple[tuple[str, str], ...]



def spec_of_test(nb: ParsedNotebook, step: str, cell: Cell, order: list[Draft], funcs: dict,
          aliases: AliasGroups, imported: set[str], param_names: set[str]) -> TestSpec:
    """What a test cell reads, from which step: the last one up to `step` that binds it."""
    upto = order[:next(i for i, o in enumerate(order) if o.name == step) + 1]
    info = analyse(nb, (cell,), funcs, aliases, imported)
    inputs: dict[str, str] = {}
    copied: dict[str, str] = {}
    for var in sorted(info.inputs - param_names):
        producer = next((o for o in reversed(upto) if var in o.info.writes), None)
        if producer is None:
            continue  # the imports or functions cell, a builtin, or a NameError at test time
        if var in producer.info.code_defs:
            copied[var] = producer.info.def_sources.get(var, "")
        else:
            producer.outputs.add(var)
            inputs[var] = producer.name
    return TestSpec(nb.path, step, cell, tuple(sorted(inputs.items())),
                    tuple(p for p in sorted(info.inputs & param_names)),
                    tuple(sorted((k, v) for k, v in copied.items() if v)))
