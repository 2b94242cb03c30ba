"""RESULTS.md holds several benchmarks' sections: each between `<!-- NAME:start -->` and
`<!-- NAME:end -->` lines is owned by one benchmark, which replaces only its own; the
execution benchmark (run_bench.py) writes the text outside them and keeps them all."""

from __future__ import annotations

import re
from pathlib import Path

_BLOCK = re.compile(r"<!-- ([\w-]+):start -->\n.*?<!-- \1:end -->\n", re.S)


def blocks(text: str) -> list[str]:
    return [m.group(0) for m in _BLOCK.finditer(text)]


def keep_sections(path: Path, text: str) -> str:
    """`text` followed by the marked sections the file at `path` holds now."""
    old = path.read_text() if path.exists() else ""
    kept = blocks(old)
    return text.rstrip("\n") + "\n" + "".join("\n" + b for b in kept) if kept else text


def write_section(path: Path, name: str, body: str) -> None:
    """Replace (or append) section `name` of `path`, leaving the rest as it is."""
    block = f"<!-- {name}:start -->\n{body.rstrip()}\n<!-- {name}:end -->\n"
    old = path.read_text() if path.exists() else ""
    pattern = re.compile(rf"<!-- {re.escape(name)}:start -->\n.*?<!-- {re.escape(name)}:end -->\n",
                         re.S)
    new = pattern.sub(lambda _: block, old) if pattern.search(old) else \
        old.rstrip("\n") + "\n\n" + block
    path.write_text(new)
