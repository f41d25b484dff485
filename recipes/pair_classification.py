"""Text-pair classification (MRPC paraphrase; RTE with the overrides in the preset).

    accelerate launch recipes/pair_classification.py                       # preset configs/mrpc.yaml
    accelerate launch recipes/pair_classification.py strategy=frozen       # any key=value overrides it

The recipe itself (config -> accelerator -> data -> model + strategy -> optimizer ->
loop -> evaluate -> save -> push) is :func:`nlp_transfer.recipe.train`.
"""
import sys
from pathlib import Path

from nlp_transfer.config import load_config
from nlp_transfer.recipe import train

PRESET = Path(__file__).parent / "configs" / "mrpc.yaml"

if __name__ == "__main__":
    train(load_config(PRESET, sys.argv[1:]))
