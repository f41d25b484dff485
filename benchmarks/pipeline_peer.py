"""The peer for inference: ``transformers.pipeline("text-classification")`` on a saved model.

What a user would write to serve a fine-tuned classifier::

    clf = pipeline("text-classification", model=saved_dir, device=...)
    clf(texts, batch_size=32, truncation=True, max_length=128)

Texts are fed in the order given (the pipeline does not sort by length), padded per batch. The
pipeline is built before the clock starts and warmed up on one batch, so ``samples_per_s`` is
steady-state throughput; ``load_s`` reports the construction time separately. The saved folder
must be a plain ``transformers`` model (for LoRA: the merged model).

    python benchmarks/pipeline_peer.py SAVED_DIR [--n 10000] [--batch-size 32]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import BATCH_SIZE, MAX_LENGTH, SEED, load_sst2, write_json  # noqa: E402


def repeat_to(texts: Sequence[str], n: int) -> list[str]:
    """``n`` texts by cycling through ``texts`` (10,000 inference texts from SST-2's sentences)."""
    if not texts:
        raise ValueError("no texts to repeat")
    return [texts[i % len(texts)] for i in range(n)]


def run_pipeline(model_dir: str, texts: Sequence[str], batch_size: int = BATCH_SIZE,
                 max_length: int = MAX_LENGTH, device: Any = None, warmup: bool = True) -> dict[str, Any]:
    """Classify ``texts`` with ``pipeline("text-classification")`` and time it.

    Returns ``{"wall_s", "load_s", "samples_per_s", "predictions" (label names), "scores" (top
    score each), "n", "batch_size", "max_length", "device"}``.
    """
    import torch
    import transformers
    from transformers import pipeline

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if device is None:
        device = 0 if torch.cuda.is_available() else -1
    t0 = time.perf_counter()
    clf = pipeline("text-classification", model=model_dir, tokenizer=model_dir, device=device)
    load_s = time.perf_counter() - t0
    kwargs = dict(batch_size=batch_size, truncation=True, max_length=max_length)
    texts = list(texts)
    if warmup and texts:
        clf(texts[:batch_size], **kwargs)
    t1 = time.perf_counter()
    out = clf(texts, **kwargs)
    wall_s = time.perf_counter() - t1
    return {
        "peer": "transformers.pipeline",
        "wall_s": wall_s,
        "load_s": load_s,
        "samples_per_s": len(texts) / wall_s if wall_s > 0 else float("inf"),
        "predictions": [o["label"] for o in out],
        "scores": [float(o["score"]) for o in out],
        "n": len(texts),
        "batch_size": batch_size,
        "max_length": max_length,
        "device": str(clf.device),
    }


def agreement(a: Sequence[Any], b: Sequence[Any]) -> float:
    """Fraction of positions where two prediction lists agree (1.0 = same predictions)."""
    if len(a) != len(b):
        raise ValueError(f"prediction lists differ in length: {len(a)} vs {len(b)}")
    return sum(x == y for x, y in zip(a, b)) / len(a) if a else 1.0


def main(argv: list[str] | None = None) -> int:
    """CLI: run the pipeline on N SST-2 sentences and print throughput (predictions omitted)."""
    ap = argparse.ArgumentParser(description="transformers.pipeline peer on SST-2 sentences.")
    ap.add_argument("model_dir")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    train, dev = load_sst2(None, SEED)
    texts = repeat_to(dev.texts + train.texts[:20_000], args.n)
    r = run_pipeline(args.model_dir, texts, args.batch_size)
    summary = {k: v for k, v in r.items() if k not in ("predictions", "scores")}
    print(json.dumps(summary, indent=2))
    if args.json:
        write_json(args.json, {"pipeline_peer": summary})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
