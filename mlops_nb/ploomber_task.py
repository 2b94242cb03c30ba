"""`mlops_nb.ploomber_task.run_step` (and `check_compiled`, the on_render hook, or
`check_compiled_and_lock` for Ploomber's parallel executor): the names generated pipeline.yaml
files use.

A stable name kept for those files (and projects compiled by earlier versions); the task is
execute/ploomber_task.py's.
"""

from mlops_nb.execute.ploomber_task import check_compiled, check_compiled_and_lock, run_step

__all__ = ["check_compiled", "check_compiled_and_lock", "run_step"]
