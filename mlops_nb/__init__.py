"""mlops_nb: tagged notebooks in, reproducible papermill / Ploomber / DVC pipelines out.

The package keeps import time small: nothing heavy is imported here, so the CLI and the
generated step notebooks start fast. The Jupyter hooks below import mlops_nb.widgets only
when Jupyter calls them.
"""

from typing import Any

from mlops_nb.errors import MlopsNbError

__all__ = ["MlopsNbError", "log_metric"]
__version__ = "0.1.0"


def log_metric(name: str, value: float) -> None:
    """Record a metric from inside a running step; it lands in the step's DVC metrics file.

    Outside a step (an interactive session) the value is kept and a warning says it is
    recorded only when the pipeline runs.
    """
    from mlops_nb.execute import runtime

    runtime.log_metric(name, value)


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext mlops_nb`: registers the %mlops magic."""
    from mlops_nb.widgets.magics import load_ipython_extension as load

    load(ipython)


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """Compile on save (mlops_nb.widgets.server_ext), enabled by installing the package."""
    return [{"module": "mlops_nb.widgets.server_ext"}]
