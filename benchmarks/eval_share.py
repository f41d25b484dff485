"""Evaluation's share of a training run (issue 16: held-out + train sample <= 10% of training time).

One epoch of ``full`` on the benchmark's 4,000 SST-2 sentences (dev: the 872 of ``dev.tsv``), our
recipe with the Trainer peer's hyper-parameters (``benchmarks/run.py``'s ``recipe_dict``), once per
``--eval-batch`` value, in this process, in the given order (alternate them for a fair reading):

    python benchmarks/eval_share.py --eval-batch 128,auto,128,auto

Prints one JSON line per run: train and evaluation seconds from ``metrics.json["timing"]``, their
ratio, and the dev accuracy (which the eval batch must not change).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402
from benchmarks.run import _quiet, recipe_dict, write_jsonl  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval-batch", default="128,auto", help="comma list of eval.batch_size values ('auto' = unset)")
    ap.add_argument("--strategy", default="full")
    args = ap.parse_args(argv)
    from nlp_transfer import Recipe, train

    _quiet()
    work = Path(tempfile.mkdtemp(prefix="nlpt_evalshare_"))
    tr, dev = common.load_sst2(common.TRAIN_SAMPLE)
    write_jsonl(tr, work / "d" / "train.jsonl")
    write_jsonl(dev, work / "d" / "dev.jsonl")
    for value in args.eval_batch.split(","):
        d = recipe_dict(args.strategy, str(work / "d"), common.minilm_path(), str(work / "o"), epochs=1)
        if value != "auto":
            d["eval"]["batch_size"] = int(value)
        m = train(Recipe(**d)).metrics
        t = m["timing"]
        print(json.dumps({"eval_batch": value, "train_s": t["train_s"],
                          "eval_s": t["eval_s"], "eval_share": round(t["eval_s"] / t["train_s"], 4),
                          "dev_accuracy": m["held_out"]["accuracy"]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
