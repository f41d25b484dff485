"""A/B of one recipe setting on the benchmark's training run, each run in a fresh process.

The run is ``benchmarks/run.py``'s recipe (MiniLM, the seeded 4,000 SST-2 sentences, dev 872,
batch 32, max_length 128, the Trainer peer's hyper-parameters) for ``--epochs`` epochs of
``--strategy``. Each ``--variant KEY=VALUE[,KEY=VALUE...]`` is one variant (none: the defaults); variants run alternately (A B B A
...) so that the machine's drift hits them alike. Prints one JSON line per run: the loop's
training seconds (evaluations excluded), samples/s, evaluation seconds and dev accuracy; then the
median per variant, with its useful MFU: the matmul FLOPs of the real tokens trained
(``benchmarks/flops.py``, as ``run.py --cases efficiency`` counts ours) per second, over the dense
fp32 matmul peak measured before and after the runs at the same thread count.

    python benchmarks/engine_ab.py --variant train.heap_allocations=false --variant train.heap_allocations=true
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402
from benchmarks.run import _quiet, recipe_dict, write_jsonl  # noqa: E402


def one(job: dict) -> dict:
    """One training run in this process (the ``--_one`` worker)."""
    from nlp_transfer import Recipe, train
    from nlp_transfer.config import apply_overrides

    _quiet()
    work = Path(job["work"])
    d = recipe_dict(job["strategy"], str(work / "d"), common.minilm_path(), str(work / f"o{job['index']}"),
                    epochs=job["epochs"])
    m = train(Recipe(**apply_overrides(d, job["overrides"]))).metrics
    t = m["timing"]
    rows = m.get("data", {}).get("train_size") or common.TRAIN_SAMPLE
    import torch
    return {"variant": job["name"], "threads": torch.get_num_threads(), "train_s": t["train_s"], "eval_s": t["eval_s"],
            "samples_per_s": round(rows * job["epochs"] / t["train_s"], 2),
            "dev_accuracy": m["held_out"]["accuracy"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", action="append", default=[], help="comma list of KEY=VALUE overrides (repeatable)")
    ap.add_argument("--strategy", default="full")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--_one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._one:
        print("RESULT " + json.dumps(one(json.loads(args._one))), flush=True)
        return 0
    variants = {v: [x for x in v.split(",") if x] for v in args.variant} or {"defaults": []}
    work = Path(tempfile.mkdtemp(prefix="nlpt_ab_"))
    tr, dev = common.load_sst2(common.TRAIN_SAMPLE)
    write_jsonl(tr, work / "d" / "train.jsonl")
    write_jsonl(dev, work / "d" / "dev.jsonl")
    from benchmarks.flops import matmul_peak_flops

    peak_before = matmul_peak_flops()["peak_flops"]
    names = list(variants)
    results: dict[str, list[dict]] = {n: [] for n in names}
    index = 0
    for r in range(args.rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            job = {"name": name, "overrides": variants[name], "strategy": args.strategy, "epochs": args.epochs,
                   "work": str(work), "index": index}
            index += 1
            out = subprocess.run([sys.executable, __file__, "--_one", json.dumps(job)], capture_output=True,
                                 text=True, check=True).stdout
            rec = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
            results[name].append(rec)
            print(json.dumps(rec), flush=True)
    peak = max(peak_before, matmul_peak_flops()["peak_flops"])
    from transformers import AutoConfig

    from benchmarks.flops import encoder_train_flops
    from benchmarks.run import real_lengths

    lens = real_lengths(tr.texts, common.minilm_path())
    useful = encoder_train_flops(AutoConfig.from_pretrained(common.minilm_path()), None, lens * args.epochs,
                                 strategy=args.strategy, num_labels=2, pooler=False).total
    for name, recs in results.items():
        train_s = statistics.median(r["train_s"] for r in recs)
        print(json.dumps({"variant": name, "threads": recs[0]["threads"], "median_train_s": train_s,
                          "median_samples_per_s": statistics.median(r["samples_per_s"] for r in recs),
                          "useful_mfu": round(useful / train_s / peak, 4), "peak_gflops": round(peak / 1e9, 1),
                          "dev_accuracy": [r["dev_accuracy"] for r in recs]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
