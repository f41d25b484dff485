"""Registration point for subcommands added by later features (push, rank-models, compare)."""
from __future__ import annotations

import argparse


def register(sub: "argparse._SubParsersAction") -> None:  # noqa: F821
    """Add optional subcommands; each lives in its own module."""
    return None
