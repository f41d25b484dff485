"""Subcommands that live in their own modules (push, rank-models, compare, ...).

Each module listed in ``MODULES`` exposes ``add_subcommand(subparsers)``; keeping the
list here lets features land independently without editing ``cli.py``."""
from __future__ import annotations

import argparse
import importlib

MODULES = ("nlp_transfer.hub", "nlp_transfer.rank", "nlp_transfer.compare", "nlp_transfer.preflight")


def register(sub: "argparse._SubParsersAction") -> None:  # noqa: F821
    for name in MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue  # feature not installed in this build
            raise
        if hasattr(mod, "add_subcommand"):
            mod.add_subcommand(sub)
