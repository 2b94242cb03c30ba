"""The pipeline as plain frozen data, built from parsed notebooks, and its validation.

Data flow follows notebook order: a step's input `x` comes from the last earlier step of the
same notebook that binds or changes `x`, which is what a top-to-bottom run would see. Explicit
`prev:` tags add edges, across notebooks too. Steps are listed in a topological order that
keeps notebook order where the edges allow, so generated files are stable.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from pathlib import Path

from mlops_nb.errors import NotebookError
from mlops_nb.notebook import analysis, namecheck, sections
from mlops_nb.notebook.aliasing import AliasGroups
from mlops_nb.notebook.randomness import seeds_global_random
from mlops_nb.notebook.tags import Cell, ParsedNotebook
from mlops_nb.pipeline import draft, randomchain
from mlops_nb.pipeline.order import toposort
from mlops_nb.pipeline.testcells import TestSpec, spec_of_test

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NotebookSpec:
    path: str  # project-relative, posix
    stem: str
    imports: str
    functions: str
    params: tuple[tuple[str, str], ...]  # name, literal source, in cell order
    kernelspec: tuple[tuple[str, str], ...]

    @property
    def folder(self) -> str:
        parent = Path(self.path).parent.as_posix()
        return "" if parent == "." else parent


@dataclass(frozen=True)
class StepSpec:
    name: str
    notebook: str  # NotebookSpec.path
    cells: tuple[Cell, ...]
    inputs: tuple[tuple[str, str], ...]  # (variable, producing step)
    outputs: tuple[str, ...]  # artifact names: a variable, or a bundle "a+b" (see below)
    params: tuple[str, ...]
    upstream: tuple[str, ...]
    data_deps: tuple[str, ...]  # project-relative files read by literal path
    metrics: tuple[str, ...]
    copied_defs: tuple[tuple[str, str], ...]  # (name, source) of earlier steps' defs
    # outputs that may share objects (`data = [train_df, test_df]`) are saved together as one
    # artifact, so a later step gets them back sharing the same objects, as in one kernel
    bundles: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # copied defs whose defaults read a loaded input: made after the loading (the others
    # before it, since unpickling may need them)
    late_defs: tuple[str, ...] = ()
    # inputs that may hold lambdas or closures: their functions are given this step's
    # globals once loaded, so they read globals when called, as in one kernel
    rebind: tuple[str, ...] = ()
    # project files the step writes by literal path (not under outputs/): a side effect that
    # only a shared filesystem carries to a later step
    writes: tuple[str, ...] = ()

    def artifact_for(self, var: str) -> str | None:
        """The output artifact that holds `var`, or None if this step does not hand it on."""
        for name, members in self.bundles:
            if var in members:
                return name
        return var if var in self.outputs else None


@dataclass(frozen=True)
class PipelineSpec:
    notebooks: tuple[NotebookSpec, ...]
    steps: tuple[StepSpec, ...]
    tests: tuple[TestSpec, ...] = ()

    def step(self, name: str) -> StepSpec:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def notebook(self, path: str) -> NotebookSpec:
        return next(n for n in self.notebooks if n.path == path)

    def fingerprint_plan(self, name: str) -> dict[str, list]:
        """What a step's fingerprint reads besides its notebook and parameters: the output
        folders it loads (producer, artifact; one per input name), the data files it reads,
        and its order-only upstream steps. Stored in the step notebook's metadata, so a step
        that DVC or Ploomber ran can record its fingerprint without recompiling."""
        step = self.step(name)
        inputs = [[p, a] for v, p in step.inputs if (a := self.step(p).artifact_for(v))]
        producers = {p for _, p in step.inputs}
        return {"inputs": inputs, "data_deps": list(step.data_deps),
                "after": [u for u in step.upstream if u not in producers]}


def build_spec(notebooks: list[ParsedNotebook], root: Path) -> PipelineSpec:
    """Turn parsed notebooks into a validated pipeline spec."""
    owner: dict[str, tuple[str, int]] = {}
    for nb in notebooks:
        for decl in nb.steps:
            if decl.name in owner:
                other, cell = owner[decl.name]
                raise NotebookError(
                    nb.path,
                    f"step '{decl.name}' is also defined in {other} cell {cell};"
                    " step names must be unique in the project: rename one",
                    decl.first_cell,
                )
            owner[decl.name] = (nb.path, decl.first_cell)

    groups: dict[str, str] = {}
    for nb in notebooks:
        if nb.stem in groups:
            raise NotebookError(nb.path, f"its parameter group '{nb.stem}' is also that of"
                                         f" {groups[nb.stem]}; rename one of the notebooks")
        groups[nb.stem] = nb.path
    drafts: dict[str, draft.Draft] = {}
    tests: list[TestSpec] = []
    nb_specs = []
    writers: dict[str, str] = {}  # project-relative path -> step writing it
    params_by_nb: dict[str, tuple[tuple[str, str], ...]] = {}
    seeded: dict[str, list[draft.Draft]] = {}  # notebooks that seed a global generator: steps
    for nb in notebooks:
        params = params_by_nb[nb.path] = draft.parameters(nb)
        param_names = {p for p, _ in params}
        funcs: dict = {}
        aliases = AliasGroups()
        aliases.immutable |= {p for p, lit in params if sections.immutable_literal(lit)}
        imported: set[str] = set()
        pre = draft.analyse(nb, nb.imports + nb.functions, funcs, aliases, imported)
        lenient = namecheck.dynamic(nb.imports + nb.functions + tuple(
            c for decl in nb.steps for c in decl.cells))
        later = {n: ("", c.index) for c in reversed(nb.exploration)
                 for n in namecheck.bound_names(c.source)}
        for decl in reversed(nb.steps):
            for c in decl.cells:
                for n in namecheck.bound_names(c.source):
                    later[n] = (decl.name, c.index)
        global_params = pre.inputs & param_names
        nb_specs.append(NotebookSpec(nb.path, nb.stem, draft.block(nb.imports),
                                     draft.block(nb.functions), params, nb.kernelspec))
        nb_dir = (root / nb.path).parent
        order: list[draft.Draft] = []
        if seeds_global_random([c.source for c in sorted(
                nb.imports + nb.functions + tuple(c for s in nb.steps for c in s.cells),
                key=lambda c: c.index)]):
            seeded[nb.path] = order
        class_defs: dict[str, str] = {}
        all_defs: dict[str, str] = {}
        for decl in nb.steps:
            holds = {k: set(v) for k, v in aliases.holds.items()}
            lambdas = set(aliases.lambdas)
            info = draft.analyse(nb, decl.cells, funcs, aliases, imported)
            d = draft.Draft(decl.name, nb, decl.cells, info, {}, set(), set(global_params),
                       set(), set(), [], {})
            needed = set(info.inputs)
            for var in info.inputs & set(holds):  # code it holds reads its globals when called
                needed |= holds[var] - info.writes
                if var in lambdas:
                    d.rebind.add(var)
            # a copied def or class brings what it reads when it is made (defaults, bases)
            for var in sorted(info.inputs | set(class_defs)):
                if var in funcs and any(var in o.info.code_defs for o in order):
                    needed |= funcs[var].def_reads - info.writes
            unresolved = set()
            for var in sorted(needed):
                producer = next((o for o in reversed(order) if var in o.info.writes), None)
                if var in param_names:
                    # a parameter is injected into every step that reads it (Kale's rule)
                    d.params.add(var)
                    if producer is not None:
                        log.warning("%s: step '%s' reads parameter '%s', which step '%s'"
                                    " rebinds or changes; it gets the parameter's value, as"
                                    " in Kale: give the new value another name to hand it"
                                    " on", nb.path, decl.name, var, producer.name)
                elif producer is not None:
                    d.inputs[var] = producer.name
                    d.upstream.add(producer.name)
                    if var in producer.info.code_defs:
                        d.copied[var] = producer.info.def_sources.get(var, "")
                    else:
                        producer.outputs.add(var)
                elif var not in pre.writes and not var.startswith("*"):
                    unresolved.add(var)
            if unresolved:
                defined = (pre.writes | param_names | analysis.BUILTINS
                           | {w for o in order for w in o.info.writes})
                namecheck.check_reads(nb.path, decl.name, decl.cells, unresolved, defined,
                                      {k: v for k, v in later.items() if v[0] != decl.name},
                                      lenient or any(w.startswith("*") for o in order
                                                     for w in o.info.writes))
            # classes of earlier steps: needed to load their instances
            d.copied.update({k: v for k, v in class_defs.items() if k not in info.writes})
            for k in list(d.copied):
                if not d.copied[k]:
                    d.copied[k] = all_defs.get(k, "")
            loaded = {v for v in d.inputs if v not in d.copied}
            d.late = {k for k in d.copied if k in funcs and funcs[k].def_reads & loaded}
            for prev, cell in zip(decl.prev, decl.prev_cells, strict=True):
                if prev not in owner:
                    near = difflib.get_close_matches(prev, list(owner), n=1, cutoff=0.5)
                    hint = f" (did you mean 'prev:{near[0]}'?)" if near else ""
                    raise NotebookError(nb.path, f"'prev:{prev}' names no step{hint}", cell)
                d.upstream.add(prev)
            folders = info.folder_literals | pre.folder_literals
            for lit in sorted(info.literals | pre.literals):
                rel = draft.project_file(root, nb_dir, lit, lit in folders)
                if rel is None:
                    continue
                if lit in info.written_literals:
                    writers.setdefault(rel, decl.name)
                    d.writes.add(rel)
                else:
                    d.data_deps.add(rel)
            for name in info.writes:
                all_defs.pop(name, None)
                class_defs.pop(name, None)
            for name in info.code_defs:
                src = info.def_sources.get(name, "")
                all_defs[name] = src
                if name.startswith("*") or (src.lstrip().startswith(("class ", "@"))
                                            and "class " in src):
                    class_defs[name] = src
            d.groups = {n: frozenset(aliases.members(n)) for n in info.writes}
            order.append(d)
            drafts[decl.name] = d
        for mcell in nb.metrics:
            for m in sections.metric_names(mcell.source):
                producer = next((o for o in reversed(order) if m in o.info.writes), None)
                if producer is None and m in param_names and order:
                    producer = order[-1]  # a parameter as a metric: recorded by the last step
                    producer.params.add(m)
                if producer is None:
                    raise NotebookError(
                        nb.path, f"metric '{m}' is neither set by a step of this notebook nor"
                                 " a parameter",
                        mcell.index)
                if m not in producer.metrics:
                    producer.metrics.append(m)
        tests += [spec_of_test(nb, t.step, t.cell, order, funcs, aliases, imported, param_names)
                  for t in nb.tests]

    # files one step writes by literal path and another reads: an edge, not a dependency
    for d in drafts.values():
        for rel in list(d.data_deps):
            w = writers.get(rel)
            if w or not (root / rel).exists():
                d.data_deps.discard(rel)
            if w and w != d.name:
                d.upstream.add(w)
    for path, order in seeded.items():  # the global generators' state, in notebook order
        randomchain.chain(order, drafts, path)

    ordered = toposort(drafts)
    steps = tuple(
        StepSpec(
            name=d.name,
            notebook=d.nb.path,
            cells=d.cells,
            inputs=tuple(sorted(d.inputs.items())),
            outputs=tuple(sorted(draft.artifacts(d))),
            params=tuple(p for p, _ in params_by_nb[d.nb.path] if p in d.params),
            upstream=tuple(sorted(d.upstream)),
            data_deps=tuple(sorted(d.data_deps)),
            metrics=tuple(d.metrics),
            bundles=draft.bundles(d),
            late_defs=tuple(sorted(d.late & {k for k, v in d.copied.items() if v})),
            rebind=tuple(sorted(d.rebind & set(d.inputs))),
            writes=tuple(sorted(d.writes)),
            copied_defs=tuple(sorted(((k, v) for k, v in d.copied.items() if v),
                                     key=lambda kv: (not kv[1].startswith(("import", "from")),
                                                     kv[0]))),
        )
        for d in ordered
    )
    return PipelineSpec(tuple(nb_specs), steps, tuple(tests))


