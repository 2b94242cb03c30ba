"""Each step notebook carries only the helpers it uses (issue 11, item 3)."""

from __future__ import annotations

from mlops_nb.compile.helpers import FunctionsCell

CELL = '''import math

# scale a value
def scale(v):
    return v * FACTOR


FACTOR = 3


def norm(v):
    return math.sqrt(scale(v))


def unused(v):
    return v


class Box:
    pass


warnings_off = None
print("functions cell ran")
'''


def test_a_step_gets_what_it_reads_and_what_that_reads():
    cell = FunctionsCell(CELL)
    text = cell.text_for(cell.needed({"norm", "x"}))
    assert "def norm" in text and "def scale" in text and "FACTOR = 3" in text
    assert "# scale a value" in text  # the comment above a definition goes with it
    assert "def unused" not in text and "warnings_off" not in text
    # always carried: imports, classes, statements with effects
    assert "import math" in text and "class Box" in text and 'print("functions' in text


def test_a_step_that_reads_no_helper_gets_no_definition():
    cell = FunctionsCell(CELL)
    text = cell.text_for(cell.needed({"y"}))
    assert "def " not in text and "FACTOR" not in text and "class Box" in text


def test_statements_sharing_a_line_or_bad_syntax_keep_the_cell_whole():
    for source in ("a = 1; b = 2\ndef f():\n    return a\n", "def f(:\n"):
        cell = FunctionsCell(source)
        assert cell.text_for(cell.needed(set())) == source.strip("\n")
