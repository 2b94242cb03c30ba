"""`from mlops_nb import runtime`: what generated step notebooks call (begin, load, save, end).

A stable name kept for those notebooks (and projects compiled by earlier versions). The
module is execute/runtime.py itself, not a copy: it holds the running step's context, so
both names must reach the same module object.
"""

import sys

from mlops_nb.execute import runtime as _runtime

sys.modules[__name__] = _runtime
