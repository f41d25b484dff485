"""Multi-label emotion classification on GoEmotions (28 labels, tuned per-label thresholds).

    python recipes/multilabel.py                             # frozen MiniLM + BCE head
    python recipes/multilabel.py data.max_train_samples=5000 # a quicker run
    python recipes/multilabel.py data.name=my.csv data.label_column=tags   # your data ("a,b" or lists)

Predictions use the thresholds tuned on held-out data after training::

    from nlp_transfer import load
    load("outputs/goemotions")(["Thanks so much, this made my day!"])
    # [{"labels": ["gratitude", "joy"], "scores": {"admiration": 0.04, ...}}]

``key=value`` arguments override ``configs/multilabel.yaml``.
"""
import sys
from pathlib import Path

from nlp_transfer.config import load_config
from nlp_transfer.recipe import train

PRESET = Path(__file__).parent / "configs" / "multilabel.yaml"

if __name__ == "__main__":
    train(load_config(PRESET, sys.argv[1:]))
