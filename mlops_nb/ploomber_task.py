"""`mlops_nb.ploomber_task.run_step` (and `check_compiled`, the on_render hook): the names
generated pipeline.yaml files use.

A stable name kept for those files (and projects compiled by earlier versions); the task is
execute/ploomber_task.py's.
"""

from mlops_nb.execute.ploomber_task import check_compiled, run_step

__all__ = ["check_compiled", "run_step"]
