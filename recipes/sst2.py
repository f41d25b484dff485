"""SST-2 sentiment (binary) from a local GLUE folder or the Hub.

    accelerate launch recipes/sst2.py                       # preset configs/sst2.yaml
    accelerate launch recipes/sst2.py strategy=frozen       # any key=value overrides it

The recipe itself (config -> accelerator -> data -> model + strategy -> optimizer ->
loop -> evaluate -> save -> push) is :func:`nlp_transfer.recipe.train`.
"""
import sys
from pathlib import Path

from nlp_transfer.config import load_config
from nlp_transfer.recipe import train

PRESET = Path(__file__).parent / "configs" / "sst2.yaml"

if __name__ == "__main__":
    train(load_config(PRESET, sys.argv[1:]))
