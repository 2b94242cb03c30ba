"""Ploomber's process normalizes run_step's source once, not once per product (the rule in
execute/ploomber_task.py's docstring), and compares exactly what it compared before."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = """
import inspect, sys
import ploomber.codediffer as cd
original = cd.CodeDiffer.NORMALIZERS["py"]
import mlops_nb.ploomber_task as task
kept = cd.CodeDiffer.NORMALIZERS["py"]
assert kept is not original and kept.__wrapped__ is original
task_source = inspect.getsource(task.run_step)
edited = task_source.replace("_run(", "_run_other(")
differ = cd.CodeDiffer()
for _ in range(5):
    assert differ.is_different(task_source, task_source, {}, {}, "py")[0] is False
assert differ.is_different(task_source, edited, {}, {}, "py")[0] is True
assert kept(task_source) == original(task_source) and kept(edited) == original(edited)
assert kept.cache_info().misses == 2, kept.cache_info()
from mlops_nb.execute.ploomber_task import remember_normalized_code
remember_normalized_code()
assert cd.CodeDiffer.NORMALIZERS["py"] is kept  # never wrapped twice
print("ok")
"""


@pytest.mark.slow  # imports Ploomber (2 s)
def test_ploomber_process_normalizes_the_same_source_once_and_still_sees_an_edit():
    res = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_a_process_without_ploomber_imports_nothing_for_it():
    res = subprocess.run([sys.executable, "-c", "import sys, mlops_nb.ploomber_task\n"
                          "print(sorted(m for m in sys.modules if m.startswith(('ploomber',"
                          " 'autopep8', 'parso'))))"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr
