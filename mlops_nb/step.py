"""`python -m mlops_nb.step NAME`: the command generated dvc.yaml files give each stage.

A stable name kept for those files (and projects compiled by earlier versions); the stage's
work is execute/stage.py's.
"""

import sys

from mlops_nb.execute.stage import main

if __name__ == "__main__":
    sys.exit(main())
