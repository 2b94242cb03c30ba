"""Leaving a process without Python's final garbage collections.

At exit, Python tears its modules down and runs the garbage collector over everything still
alive. With pandas and scikit-learn loaded that takes about 0.3 s, with Ploomber's imports or
the fast runner's (IPython, pyarrow, skops) 0.5-0.9 s: wall time of every command, spent
freeing memory the operating system takes back anyway. Freezing the heap (gc.freeze) in an
exit handler leaves those objects out of the final collections, which then take about 0.05 s.

Nothing else changes: the other exit handlers still run (logs are flushed and closed, temporary
files removed), objects are still freed by reference counting as modules are cleared, and
Python never promised to finalize objects caught in reference cycles at exit.
"""

from __future__ import annotations

import atexit
import gc


def skip_final_collection() -> None:
    """Freeze the heap when this process exits (idempotent: registered once)."""
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
