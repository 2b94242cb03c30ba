"""`mlops_nb.ploomber_task.run_step`: the task source generated pipeline.yaml files name.

A stable name kept for those files (and projects compiled by earlier versions); the task is
execute/ploomber_task.py's.
"""

from mlops_nb.execute.ploomber_task import run_step

__all__ = ["run_step"]
