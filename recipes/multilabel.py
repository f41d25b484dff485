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
from pathlib import Path

from nlp_transfer.cli import run_recipe
from nlp_transfer.config import load_config
from nlp_transfer.recipe import train

PRESET = Path(__file__).parent / "configs" / "multilabel.yaml"


def main(argv: list[str]) -> None:
    train(load_config(PRESET, argv))


if __name__ == "__main__":
    run_recipe(main)  # errors: one line and the CLI's exit code, like `nlp-transfer train`
