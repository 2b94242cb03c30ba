"""Running compiled steps: `mlops-nb run` (run.py), the DVC stage (stage.py), Ploomber's task
(ploomber_task.py), the warm runners (fastrun.py, worker.py) and what a step notebook calls
(runtime.py). state.py holds what every runner records; it imports no runner.

Nothing heavy is imported here: a DVC stage and Ploomber's process import this package.
"""
