"""BBC News topics with the embedded MiniLM encoder: the default recipe.

    accelerate launch recipes/bbc_news.py                      # frozen encoder + head (default)
    accelerate launch recipes/bbc_news.py strategy=lora        # or full / partial
    accelerate launch recipes/bbc_news.py strategy=lora strategy.unfreeze_top_k=2   # hybrid

Any ``key=value`` after the script overrides the preset ``configs/bbc_news.yaml``.
The recipe itself (config -> accelerator -> data -> model + strategy -> optimizer ->
loop -> evaluate -> save -> push) is :func:`nlp_transfer.recipe.train`.
"""
from pathlib import Path

from nlp_transfer.cli import run_recipe
from nlp_transfer.config import load_config
from nlp_transfer.recipe import train

PRESET = Path(__file__).parent / "configs" / "bbc_news.yaml"


def main(argv: list[str]) -> None:
    train(load_config(PRESET, argv))


if __name__ == "__main__":
    run_recipe(main)  # errors: one line and the CLI's exit code, like `nlp-transfer train`
