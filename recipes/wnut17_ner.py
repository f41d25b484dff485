"""Named-entity recognition on WNUT-17 (emerging and rare entities in social media).

    python recipes/wnut17_ner.py                               # frozen MiniLM, cached token features
    python recipes/wnut17_ner.py strategy=lora train.epochs=5  # adapt the encoder (LoRA)
    accelerate launch recipes/wnut17_ner.py strategy=full      # on GPUs

Predict entity spans with character offsets::

    from nlp_transfer import load
    load("outputs/wnut17_ner")(["Ada Lovelace met Charles Babbage in London"])
    # [{"entities": [{"entity": "person", "text": "Ada Lovelace", "start": 0, "end": 12, "score": ...}, ...]}]

``key=value`` arguments override ``configs/wnut17_ner.yaml``.
"""
from pathlib import Path

from nlp_transfer.cli import run_recipe
from nlp_transfer.config import load_config
from nlp_transfer.recipe import train

PRESET = Path(__file__).parent / "configs" / "wnut17_ner.yaml"


def main(argv: list[str]) -> None:
    train(load_config(PRESET, argv))


if __name__ == "__main__":
    run_recipe(main)  # errors: one line and the CLI's exit code, like `nlp-transfer train`
