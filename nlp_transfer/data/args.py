"""Command-line data options shared by the advisor commands (``compare``, ``rank-models``)."""
from __future__ import annotations

import argparse
from typing import Any


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """Data options shared by ``compare`` and ``rank-models``."""
    p.add_argument("--data", required=True, help="'bbc_news', a file or a folder (train/dev files), or a Hub id")
    p.add_argument("--text-column", default="text")
    p.add_argument("--text-pair-column", default=None)
    p.add_argument("--label-column", default="label")
    p.add_argument("--label-names", nargs="+", default=None, help="names of integer labels, in id order")
    p.add_argument("--data-seed", type=int, default=42, help="seed of the held-out carve and the subsets")


def data_config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The ``data`` section of a recipe from :func:`add_data_arguments`' options."""
    return {"name": args.data, "text_column": args.text_column, "text_pair_column": args.text_pair_column,
            "label_column": args.label_column, "label_names": args.label_names, "seed": args.data_seed}
