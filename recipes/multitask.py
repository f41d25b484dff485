"""Multi-task learning: one shared encoder, one head per task (default: SST-2 + TREC).

    python recipes/multitask.py                                  # configs/multitask_sst2_trec.yaml
    python recipes/multitask.py --compare                        # + single-task baselines, same budget
    python recipes/multitask.py --config recipes/configs/multitask_sentiment_ner.yaml
    python recipes/multitask.py multitask.sampling=temperature tasks.sentiment.loss_weight=2

One model answers every task, or one::

    from nlp_transfer import load
    p = load("outputs/multitask_sst2_trec")
    p(["What is the capital of Peru?"])              # [{"sentiment": {...}, "question": {...}}]
    p(["a gorgeous, witty film"], task="sentiment")  # [{"label": "1", "score": ...}]

Overrides: the usual ``strategy=...``, ``train.*``, ``model.*``, plus ``multitask.<key>`` and
``tasks.<name>.<key>`` / ``tasks.<name>.data.<key>``.
"""
import json
from pathlib import Path

from nlp_transfer.cli import run_recipe
from nlp_transfer.errors import ConfigError
from nlp_transfer.multitask import (compare_with_single_task, comparison_table, load_multitask_config,
                                    train_multitask)

PRESET = Path(__file__).parent / "configs" / "multitask_sst2_trec.yaml"


def main(argv: list[str]) -> None:
    args = list(argv)
    preset = PRESET
    if "--config" in args:
        i = args.index("--config")
        if i + 1 == len(args):
            raise ConfigError("--config", expected="a multi-task YAML preset after it", found="nothing",
                              fix="pass --config recipes/configs/multitask_<preset>.yaml")
        preset = Path(args[i + 1])
        del args[i:i + 2]
    if "--compare" in args:
        args.remove("--compare")
        cfg = load_multitask_config(preset, args)
        rows = compare_with_single_task(cfg)
        table = comparison_table(rows)
        print(table)
        out = Path(cfg.base.output.dir)
        (out / "comparison.json").write_text(json.dumps(rows, indent=2) + "\n")
        (out / "comparison.md").write_text(table + "\n")
    else:
        train_multitask(load_multitask_config(preset, args))


if __name__ == "__main__":
    run_recipe(main)  # errors: one line and the CLI's exit code, like `nlp-transfer train`
