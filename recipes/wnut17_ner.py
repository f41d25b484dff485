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
import sys
from pathlib import Path

from nlp_transfer.config import load_config
from nlp_transfer.recipe import train

PRESET = Path(__file__).parent / "configs" / "wnut17_ner.yaml"

if __name__ == "__main__":
    train(load_config(PRESET, sys.argv[1:]))
