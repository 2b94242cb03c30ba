"""`python -m mlops_nb` is the `mlops-nb` command."""

import sys

from mlops_nb.cli import main

sys.exit(main())
