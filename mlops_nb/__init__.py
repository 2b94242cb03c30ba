"""mlops_nb: tagged notebooks in, reproducible papermill / Ploomber / DVC pipelines out.

The package keeps import time small: nothing heavy is imported here, so the CLI and the
generated step notebooks start fast.
"""

from mlops_nb.errors import MlopsNbError

__all__ = ["MlopsNbError", "log_metric"]
__version__ = "0.1.0"


def log_metric(name: str, value: float) -> None:
    """Record a metric from inside a running step; it lands in the step's DVC metrics file."""
    from mlops_nb.execute import runtime

    runtime.log_metric(name, value)
