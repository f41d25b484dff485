"""Regression on sentence pairs (STS-B similarity, Pearson/Spearman).

    accelerate launch recipes/regression.py                       # preset configs/stsb.yaml
    accelerate launch recipes/regression.py strategy=frozen       # any key=value overrides it

The recipe itself (config -> accelerator -> data -> model + strategy -> optimizer ->
loop -> evaluate -> save -> push) is :func:`nlp_transfer.recipe.train`.
"""
import sys
from pathlib import Path

from nlp_transfer.config import load_config
from nlp_transfer.recipe import train

PRESET = Path(__file__).parent / "configs" / "stsb.yaml"

if __name__ == "__main__":
    train(load_config(PRESET, sys.argv[1:]))
