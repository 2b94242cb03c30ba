"""params.yaml: the one source of parameter values, grouped by notebook file stem.

`seed` adds parameters that are missing and merges three ways with what compile seeded last
time, so a value the user set is never lost and a changed notebook default is never ignored
(round-trip YAML keeps comments and order). `read` parses strictly and fails with file, line
and column (paramcheck.py, which also checks types against the notebooks for the runners).
"""

from __future__ import annotations

import ast
import io
from pathlib import Path
from typing import Any

from mlops_nb.errors import ConfigError
from mlops_nb.pipeline.paramcheck import SETTINGS


def ploomber_jobs(data: dict[str, Any]) -> int:
    """`mlops_nb: {ploomber_jobs: N}` in params.yaml: pipeline.yaml runs up to N independent
    tasks at once with Ploomber's parallel executor; 1 (the default) keeps its serial one."""
    settings = data.get(SETTINGS) or {}
    jobs = settings.get("ploomber_jobs", 1) if isinstance(settings, dict) else 1
    if type(jobs) is not int or jobs < 1:
        raise ConfigError("params.yaml", f"{SETTINGS}.ploomber_jobs must be a whole number"
                          f" of at least 1, not {jobs!r}")
    return jobs


def _yaml() -> Any:
    from ruamel.yaml import YAML

    y = YAML()  # round-trip
    y.indent(mapping=2, sequence=4, offset=2)
    y.preserve_quotes = True
    y.width = 4096
    return y


def read(path: Path, display: str | None = None) -> dict[str, Any]:
    """Load params.yaml as plain data, strictly (paramcheck.parse: an empty file, a
    duplicate key... are errors with line and column); a missing file is an empty mapping."""
    from mlops_nb.pipeline.paramcheck import parse

    parsed = parse(path, display or str(path))
    return {} if parsed is None else parsed.data


def group_values(data: dict[str, Any], group: str, names: list[str], shown: str
                 ) -> dict[str, Any]:
    """The values of `names` in one notebook's group, failing clearly on a missing one."""
    if not names:
        return {}
    section = data.get(group)
    if not isinstance(section, dict):
        raise ConfigError(shown, f"no mapping '{group}:' with the parameters of notebook"
                                 f" '{group}'; run `mlops-nb compile` to add it")
    missing = [n for n in names if n not in section]
    if missing:
        raise ConfigError(shown, f"'{group}' lacks {', '.join(missing)}; run"
                                 " `mlops-nb compile` to add defaults")
    return {n: section[n] for n in names}


def _same(a: Any, b: Any) -> bool:
    """Equal as YAML values: 100 and 100.0, or 1 and True, differ (ruamel's types and tuples
    become JSON's)."""
    import json

    def text(v: Any) -> str:
        return json.dumps(v, sort_keys=True, default=repr)

    return text(a) == text(b)


def _nearest(name: str, known: list[str]) -> str:
    import difflib

    near = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean '{near[0]}'?)" if near else f" (declared: {', '.join(known)})"


def seed(existing: str | None, groups: dict[str, list[tuple[str, str]]],
         base: dict[str, dict[str, str]] | None = None, notes: list[str] | None = None,
         replaced: set[tuple[str, str]] | None = None) -> str | None:
    """New params.yaml text, or None when nothing changes.

    A three-way merge per parameter between the notebook's literal, params.yaml's value and
    `base`, what compile seeded last time (literal sources; absent when unknown): a missing
    value is added; the notebook changed and params.yaml not -> the notebook's value, noted;
    params.yaml changed and the notebook not -> kept; both changed -> params.yaml's is kept,
    noted with both values. A key of a notebook's group that the notebook does not declare is
    noted with the nearest declared name. `notes` collects those messages; `replaced`, the
    (group, name) pairs whose value became the notebook's.
    """
    notes = notes if notes is not None else []
    base = base or {}
    y = _yaml()
    from ruamel.yaml.comments import CommentedMap

    doc = y.load(existing) if existing and existing.strip() else None
    if doc is None:
        doc = CommentedMap()
    if not isinstance(doc, dict):
        raise ConfigError("params.yaml", "must be a mapping of notebook name to parameters")
    changed = False
    for group, params in groups.items():
        if not params:
            continue
        section = doc.get(group)
        if section is None:
            section = doc[group] = CommentedMap()
            changed = True
        if not isinstance(section, dict):
            raise ConfigError("params.yaml", f"'{group}' must be a mapping of parameters")
        declared = [name for name, _ in params]
        for name, literal in params:
            value = ast.literal_eval(literal)
            value = list(value) if isinstance(value, tuple) else value
            if name not in section:
                section[name] = value
                changed = True
                continue
            current = section[name]
            if _same(current, value):
                continue
            key = f"{group}.{name}"
            before = base.get(group, {}).get(name)
            old = ast.literal_eval(before) if before is not None else None
            if before is not None and _same(current, old):
                section[name] = value
                changed = True
                if replaced is not None:
                    replaced.add((group, name))
                notes.append(f"params.yaml: {key} = {value!r}: the notebook's new value"
                             f" (was {current!r})")
            elif before is not None and _same(value, old):
                continue  # changed in params.yaml only: the user's value stays
            else:
                notes.append(f"params.yaml: {key} keeps {current!r}, but the notebook now"
                             f" says {value!r}; change one of them so they agree")
        for name in section:
            if name not in declared:
                notes.append(f"params.yaml: {group}.{name} is not a parameter of notebook"
                             f" '{group}'{_nearest(str(name), declared)}")
    if not changed:
        return None
    buf = io.StringIO()
    y.dump(doc, buf)
    text = buf.getvalue()
    if existing and existing.strip() and existing.lstrip().startswith("#") \
            and not text.startswith("#"):
        text = existing.split("\n", 1)[0] + "\n" + text
    return text
