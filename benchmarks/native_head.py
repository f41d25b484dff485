"""Held-out accuracy of ``model.head=native`` (the architecture's own head) vs ``pooled`` (the
checkpoint's pooling + our linear head), for ``full`` and ``lora``, on the presets' data.

    python benchmarks/native_head.py [--datasets sst2,bbc_news] [--seeds 0,1] [--out benchmarks/results/native_head.jsonl]

SST-2: the ``sst2`` preset with ``data.max_train_samples=4000`` (GLUE dev as held-out); BBC: the
``bbc_news`` preset (max_length 128, 20% held-out). ``lora`` uses its own rate (``train.lr=5e-4``:
the sst2 preset pins 5e-5 for full). Everything else is the preset's. One record per run is appended
to ``--out`` (``--out`` rows already there are skipped, so an interrupted grid continues).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="sst2,bbc_news")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "native_head.jsonl"))
    args = ap.parse_args(argv)
    import nlp_transfer
    from nlp_transfer.config import load_config

    out = Path(args.out)
    done = {json.dumps(json.loads(line)["key"]) for line in out.read_text().splitlines()} if out.exists() else set()
    for dataset in args.datasets.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            for strategy in ("full", "lora"):
                for head in ("native", "pooled"):
                    key = [dataset, seed, strategy, head]
                    if json.dumps(key) in done:
                        continue
                    with tempfile.TemporaryDirectory() as tmp:
                        over = [f"strategy={strategy}", f"model.head={head}", f"train.seed={seed}", f"output.dir={tmp}",
                                "output.overwrite=true", "output.report_to=[none]", "output.progress_bars=false"]
                        if dataset == "sst2":
                            over.append("data.max_train_samples=4000")
                            if strategy == "lora":
                                over.append("train.lr=5e-4")
                        t = time.time()
                        r = nlp_transfer.train(load_config(dataset, over))
                    rec = {"key": key, "accuracy": r.metrics["held_out"]["accuracy"], "best_epoch": r.metrics["best_epoch"],
                           "epochs_run": r.metrics["epochs_run"], "hp": r.metrics["hyperparameters"],
                           "pooling": r.metrics["pooling"], "wall_s": round(time.time() - t, 1)}
                    print(rec, flush=True)
                    with out.open("a") as fh:
                        fh.write(json.dumps(rec) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
