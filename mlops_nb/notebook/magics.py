"""IPython syntax in cells, rewritten to plain Python for analysis.

The rule: the rewrite keeps line numbers and the names a line binds (`files = !ls` still
binds `files`), so the analyser sees what the kernel will do and never crashes on `%`, `!` or
`?`. Cell magics whose body is Python (`%%time`) keep the body; others (`%%bash`) have none.
"""

from __future__ import annotations

import ast
import re

CELL_MAGIC_PYTHON = ("%%time", "%%timeit", "%%capture", "%%prun")


def strip_magics(source: str) -> str:
    """Rewrite IPython syntax to Python with the same name bindings, keeping line numbers."""
    lines = source.split("\n")
    if lines and lines[0].lstrip().startswith("%%"):
        if lines[0].strip().startswith(CELL_MAGIC_PYTHON):
            # `%%capture out` binds `out` (options such as --no-stderr come first)
            words = [w for w in lines[0].split()[1:] if not w.startswith("-")]
            captured = lines[0].strip().startswith("%%capture") and words and re.match(
                r"^[A-Za-z_]\w*$", words[0])
            lines[0] = f"{words[0]} = None" if captured else ""
        else:  # %%bash, %%writefile...: the cell is not Python
            return "\n" * (len(lines) - 1)
    out = []
    for line in lines:
        stripped = line.lstrip()
        indent = line[: len(line) - len(stripped)]
        m = re.match(r"^([A-Za-z_][\w, ]*)\s*=\s*[!%]", stripped)
        if m:
            out.append(f"{indent}{m.group(1).strip()} = None")
        elif stripped.startswith(("%time ", "%timeit ", "%prun ")):
            out.append(indent + stripped.split(" ", 1)[1])
        elif stripped.startswith(("%", "!")) or (stripped.endswith("?") and "#" not in stripped):
            out.append(indent + "pass")
        else:
            out.append(line)
    return "\n".join(out)


class TooDeep(SyntaxError):
    """Code nested deeper than the parser or the analysis can follow (a sum of thousands of
    terms, hundreds of `elif`s): a SyntaxError, so that code that only skims cells skips it;
    the analysis of a step refuses it with this message."""

    def __init__(self) -> None:
        super().__init__(
            "code nested too deeply to analyse (a chain of hundreds of operators such as"
            " `1 + 1 + ... + 1`, hundreds of `elif`s, or deeply nested brackets): split it"
            " into shorter statements (a long sum: `sum([...])`; a long `elif` chain: a dict"
            " lookup)")


def parse(source: str) -> ast.Module:
    try:
        return ast.parse(strip_magics(source))
    except (RecursionError, MemoryError):
        raise TooDeep() from None
