"""SST-2 sentiment (binary) from a local GLUE folder or the Hub.

    accelerate launch recipes/sst2.py                       # preset configs/sst2.yaml
    accelerate launch recipes/sst2.py strategy=frozen       # any key=value overrides it

The recipe itself (config -> accelerator -> data -> model + strategy -> optimizer ->
loop -> evaluate -> save -> push) is :func:`nlp_transfer.recipe.train`.
"""
from pathlib import Path

from nlp_transfer.cli import run_recipe
from nlp_transfer.config import load_config
from nlp_transfer.recipe import train

PRESET = Path(__file__).parent / "configs" / "sst2.yaml"


def main(argv: list[str]) -> None:
    train(load_config(PRESET, argv))


if __name__ == "__main__":
    run_recipe(main)  # errors: one line and the CLI's exit code, like `nlp-transfer train`
