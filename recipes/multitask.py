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
import sys
from pathlib import Path

from nlp_transfer.multitask import (compare_with_single_task, comparison_table, load_multitask_config,
                                    train_multitask)

PRESET = Path(__file__).parent / "configs" / "multitask_sst2_trec.yaml"

if __name__ == "__main__":
    args = sys.argv[1:]
    preset = PRESET
    if "--config" in args:
        i = args.index("--config")
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
