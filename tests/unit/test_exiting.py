"""A process that called skip_final_collection exits with its heap frozen, and only then."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import atexit, gc
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count() > 0))  # runs last
from mlops_nb.execute.exiting import skip_final_collection
skip_final_collection()
skip_final_collection()  # registered once: the exit still works and the output shows it once
print("frozen before exit:", gc.get_freeze_count() > 0)
"""


def test_the_heap_is_frozen_only_when_the_process_exits():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         check=True).stdout
    assert out.splitlines() == ["frozen before exit: False", "frozen at exit: True"]
