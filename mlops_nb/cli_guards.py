"""CLI commands of the level-1 guards (validation, drift, registry, lineage).

Registered by cli.build_parser; imports nothing heavy at module level.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the guard commands to the `mlops-nb` parser."""
