"""Level 2 (DESIGN section 8): tests that live in the notebook, CI, deploys and triggers.

`celltests` runs the notebook's `test` cells against the last run's outputs, each in a real
kernel of its own; `kernel_side` is what that kernel runs; `pytest_plugin` shows the same cells
as items of a pytest run.
"""
