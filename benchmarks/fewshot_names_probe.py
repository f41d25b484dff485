"""Do class names carry information a few-shot set lacks? A probe on the *pretrained* encoder.

    python benchmarks/fewshot_names_probe.py --datasets emotion,sst2 --k 8 --seeds 8

For each dataset: zero-shot accuracy of the nearest class-name sentence ("This sentence is <class>",
cosine of sentence-transformers embeddings, unit length), then, per k and seed (the k-shot rows of
``benchmarks/fewshot.py``'s draw, its report set), scikit-learn's ``LogisticRegression(C=1)`` on
the k rows' frozen embeddings, with and without two copies of each class-name sentence added
(SetFit's ``get_templated_dataset``), paired by seed. No encoder is tuned: it only says whether the
names are worth adding (what they gain in ``contrastive``: ``fewshot.py --ours-set data.label_examples=0``
against the default). Needs sentence-transformers and scikit-learn (installed with setfit).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import common, fewshot  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="emotion,sst2")
    p.add_argument("--k", default="8")
    p.add_argument("--seeds", type=int, default=8, help="seeds 0..N-1")
    p.add_argument("--max-eval", type=int, default=1000)
    args = p.parse_args(argv)
    import numpy as np
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression

    model = SentenceTransformer(common.minilm_path(), device="cpu")

    def embed(texts: list[str]) -> np.ndarray:
        return model.encode(texts, batch_size=64, normalize_embeddings=True)

    for name in args.datasets.split(","):
        pool, report = fewshot.load_dataset(name)
        report = fewshot.stratified_subsample(report, args.max_eval)
        labels = sorted({r["label"] for r in pool})
        x_rep = embed([r["text"] for r in report])
        y_rep = np.array([labels.index(r["label"]) for r in report])
        names = embed([fewshot.LABEL_TEMPLATE.format(lab) for lab in labels])
        zero_shot = 100 * np.mean((x_rep @ names.T).argmax(1) == y_rep)
        print(f"{name}: zero-shot, nearest class-name sentence: {zero_shot:.1f}")
        for k in (int(x) for x in args.k.split(",")):
            diffs, plain, named = [], [], []
            for seed in range(args.seeds):
                rows = fewshot.draw_k_per_class(pool, k, seed)
                x, y = embed([r["text"] for r in rows]), np.array([labels.index(r["label"]) for r in rows])
                a = LogisticRegression(C=1, max_iter=1000).fit(x, y).score(x_rep, y_rep)
                ids = np.arange(len(labels))
                b = LogisticRegression(C=1, max_iter=1000).fit(np.vstack([x, names, names]),
                                                               np.concatenate([y, ids, ids])).score(x_rep, y_rep)
                plain.append(100 * a)
                named.append(100 * b)
                diffs.append(100 * (b - a))
            se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
            print(f"{name} k={k}, {len(diffs)} seeds: frozen head {statistics.mean(plain):.1f}, with class names "
                  f"{statistics.mean(named):.1f}, paired {statistics.mean(diffs):+.1f} +- {se:.1f}, "
                  f"higher on {sum(d > 0 for d in diffs)}/{len(diffs)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
