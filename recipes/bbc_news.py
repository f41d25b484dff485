"""BBC News topics with the embedded MiniLM encoder: the default recipe.

    accelerate launch recipes/bbc_news.py                      # frozen encoder + head (default)
    accelerate launch recipes/bbc_news.py strategy=lora        # or full / partial
    accelerate launch recipes/bbc_news.py strategy=lora strategy.unfreeze_top_k=2   # hybrid

Any ``key=value`` after the script overrides the preset ``configs/bbc_news.yaml``.
The recipe itself (config -> accelerator -> data -> model + strategy -> optimizer ->
loop -> evaluate -> save -> push) is :func:`nlp_transfer.recipe.train`.
"""
import sys
from pathlib import Path

from nlp_transfer.config import load_config
from nlp_transfer.recipe import train

PRESET = Path(__file__).parent / "configs" / "bbc_news.yaml"

if __name__ == "__main__":
    train(load_config(PRESET, sys.argv[1:]))
