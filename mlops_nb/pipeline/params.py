"""params.yaml: the one source of parameter values, grouped by notebook file stem.

`seed` adds parameters that are missing and never changes a value the user set (round-trip
YAML keeps comments and order). `read` parses strictly and fails with file, line and column.
"""

from __future__ import annotations

import ast
import io
from pathlib import Path
from typing import Any

from mlops_nb.errors import ConfigError


def _yaml() -> Any:
    from ruamel.yaml import YAML

    y = YAML()  # round-trip
    y.indent(mapping=2, sequence=4, offset=2)
    y.preserve_quotes = True
    y.width = 4096
    return y


def _mark_error(path: Path, exc: Exception) -> ConfigError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is not None:
        return ConfigError(str(path), f"invalid YAML: {problem}; fix this line",
                           mark.line + 1, mark.column + 1)
    return ConfigError(str(path), f"invalid YAML: {problem}")


def read(path: Path, display: str | None = None) -> dict[str, Any]:
    """Load params.yaml as plain data; a missing or empty file is an empty mapping."""
    shown = display or str(path)
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8")
    if "\t" in text:
        line = text[: text.index("\t")].count("\n") + 1
        col = text.index("\t") - (text.rfind("\n", 0, text.index("\t")) + 1) + 1
        raise ConfigError(shown, "a tab character: YAML indents with spaces only", line, col)
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    y = YAML(typ="safe", pure=True)
    y.allow_duplicate_keys = False
    try:
        data = y.load(text)
    except YAMLError as exc:
        raise _mark_error(Path(shown), exc) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(shown, "must be a mapping of notebook name to parameters"
                                 " (e.g. `iris: {N_ESTIMATORS: 100}`)", 1, 1)
    return data


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


def is_empty(text: str) -> bool:
    """True when the YAML text holds no value at all (empty, or comments only)."""
    return _yaml().load(text) is None


def seed(existing: str | None, groups: dict[str, list[tuple[str, str]]]) -> str | None:
    """New params.yaml text with missing defaults added, or None when nothing is missing."""
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
        for name, literal in params:
            if name not in section:
                value = ast.literal_eval(literal)
                section[name] = list(value) if isinstance(value, tuple) else value
                changed = True
    if not changed:
        return None
    buf = io.StringIO()
    y.dump(doc, buf)
    text = buf.getvalue()
    if existing and existing.strip() and existing.lstrip().startswith("#") \
            and not text.startswith("#"):
        text = existing.split("\n", 1)[0] + "\n" + text
    return text
