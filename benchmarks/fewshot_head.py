"""Which head on a contrastively tuned encoder: the measurement behind ``strategy.head_c`` and the
``+normalize`` pooling of ``contrastive``.

    python benchmarks/fewshot_head.py --datasets sst2,emotion --k 8 --seeds 0,1,2
    python benchmarks/fewshot_head.py --datasets sst2 --k 32

For every dataset x k x seed (the rows and report set of ``benchmarks/fewshot.py``): one
``contrastive`` run with ``model.pooling=mean`` (the pair phase is blind to normalisation: it
compares cosines) gives a tuned encoder; its raw mean-pooled features of the training rows and the
report set are then fitted by several heads, all on the *same* features:

- scikit-learn ``LogisticRegression(C)`` on L2-normalised features (SetFit 1.2's head);
- a linear head trained like our engine trains it (AdamW with weight decay 0.01, lr 1e-2 with 10%
  warm-up then linear decay, 100 epochs, batch 32, dropout 0.1) on normalised features, with the
  penalty ||W||^2 / (2 C n) for several C, and without;
- the same on raw features (what ``contrastive`` did before ``head_c`` and ``+normalize``).

Prints one row per head: mean accuracy over seeds and each seed's. This isolates the head from
the pair phase's seed-to-seed spread; ``benchmarks/fewshot.py`` then measures the shipped
defaults end to end against SetFit.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.fewshot import ours_recipe, run_rows  # noqa: E402  (also sets the offline env)

C_VALUES = (1.0, 2.0, 10.0)


def tuned_features(spec: dict[str, Any]) -> dict[str, np.ndarray]:
    """Train ``contrastive`` (mean pooling) on the spec's rows; features of its tuned encoder."""
    import torch

    from nlp_transfer import Recipe, load, train
    from nlp_transfer.predict import token_count_batches

    train_rows, report = run_rows(spec)
    out = tempfile.mkdtemp(prefix="fewshot_head_")
    try:
        d = ours_recipe({**spec, "ours_strategy": "contrastive"}, train_rows, report, out).to_dict()
        d["model"]["pooling"] = "mean"
        d["strategy"]["head_c"] = None
        result = train(Recipe(**d))
        predictor = load(result.output_dir)

        def feats(texts: list[str]) -> np.ndarray:
            rows = np.zeros((len(texts), predictor.model.encoder.config.hidden_size), np.float32)
            with torch.inference_mode():
                for idx, batch in token_count_batches(predictor.tokenizer, texts, None, d["model"]["max_length"]):
                    rows[idx] = predictor.model.encode(**batch).float().numpy()
            return rows
        names = sorted({r["label"] for r in train_rows})
        return {"x_train": feats([r["text"] for r in train_rows]), "x_report": feats([r["text"] for r in report]),
                "y_train": np.array([names.index(r["label"]) for r in train_rows]),
                "y_report": np.array([names.index(r["label"]) for r in report]),
                "engine": float(result.metrics["held_out"]["accuracy"])}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def engine_like_head(x: np.ndarray, y: np.ndarray, x_report: np.ndarray, c: float | None, seed: int = 0,
                     lr: float = 1e-2, epochs: int = 100, batch: int = 32, dropout: float = 0.1) -> np.ndarray:
    """A linear head trained as the engine trains contrastive's (AdamW, warm-up + linear decay,
    mini-batches, dropout), with the penalty of ``strategy.head_c`` (None: none)."""
    import torch

    from transformers import get_scheduler

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    lin = torch.nn.Linear(x.shape[1], int(y.max()) + 1)
    opt = torch.optim.AdamW([{"params": [lin.weight], "weight_decay": 0.01},
                             {"params": [lin.bias], "weight_decay": 0.0}], lr=lr)
    steps = epochs * -(-len(y) // batch)
    sched = get_scheduler("linear", opt, num_warmup_steps=int(0.1 * steps), num_training_steps=steps)
    xt, yt = torch.tensor(x), torch.tensor(y)
    l2 = 1.0 / (2 * c * len(y)) if c else 0.0
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), batch):
            idx = perm[i:i + batch]
            logits = lin(torch.nn.functional.dropout(xt[idx], dropout, True))
            loss = torch.nn.functional.cross_entropy(logits, yt[idx]) + l2 * lin.weight.pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        return lin(torch.tensor(x_report)).argmax(1).numpy()


#: The C grid a cross-validated choice searches (LogisticRegressionCV's Cs).
CV_C_VALUES = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


def cv_c(x: np.ndarray, y: np.ndarray) -> float:
    """C chosen on the training rows alone: scikit-learn's ``LogisticRegressionCV`` over
    :data:`CV_C_VALUES`, stratified folds (as many as the rarest class allows, at most 5)."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    folds = int(min(5, np.bincount(y).min()))
    cv = StratifiedKFold(folds, shuffle=True, random_state=0)
    return float(LogisticRegressionCV(Cs=list(CV_C_VALUES), cv=cv, max_iter=2000).fit(x, y).C_[0])


def heads() -> dict[str, Callable[[dict[str, np.ndarray]], np.ndarray]]:
    from sklearn.linear_model import LogisticRegression

    out: dict[str, Callable[[dict[str, np.ndarray]], np.ndarray]] = {}
    for c in C_VALUES:
        out[f"sklearn LogisticRegression(C={c:g}), normalised"] = lambda f, c=c: LogisticRegression(
            C=c, max_iter=2000).fit(unit(f["x_train"]), f["y_train"]).predict(unit(f["x_report"]))
    for c in C_VALUES:
        out[f"engine-like head, normalised, head_c={c:g}"] = lambda f, c=c: engine_like_head(
            unit(f["x_train"]), f["y_train"], unit(f["x_report"]), c)
    out["engine-like head, normalised, head_c=CV on train"] = lambda f: engine_like_head(
        unit(f["x_train"]), f["y_train"], unit(f["x_report"]), cv_c(unit(f["x_train"]), f["y_train"]))
    out["engine-like head, normalised, no penalty"] = lambda f: engine_like_head(
        unit(f["x_train"]), f["y_train"], unit(f["x_report"]), None)
    out["engine-like head, raw features, no penalty"] = lambda f: engine_like_head(
        f["x_train"], f["y_train"], f["x_report"], None)
    return out


def grid_arguments(description: str, datasets: str, k: str, seeds: str) -> argparse.ArgumentParser:
    """The options every same-encoder probe shares: which cells, and where the accuracies go."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--datasets", default=datasets)
    p.add_argument("--k", default=k)
    p.add_argument("--seeds", default=seeds)
    p.add_argument("--max-eval", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None, help="write the accuracies here")
    return p


def seed_grid(args: argparse.Namespace,
              per_seed: Callable[[dict[str, Any]], dict[str, float]]) -> dict[str, dict[str, list[float]]]:
    """``per_seed(spec)``'s accuracies (variant -> accuracy) for every dataset x k x seed of
    ``args``; prints each cell (mean over seeds, then each seed) and writes ``--json``."""
    import torch
    torch.set_num_threads(args.threads)
    results: dict[str, dict[str, list[float]]] = {}
    for ds in args.datasets.split(","):
        for k in map(int, args.k.split(",")):
            cell = f"{ds} k={k}"
            results[cell] = {}
            for seed in map(int, args.seeds.split(",")):
                spec = {"dataset": ds, "k": k, "seed": seed, "peer": "ours", "max_eval": args.max_eval,
                        "threads": args.threads}
                for name, acc in per_seed(spec).items():
                    results[cell].setdefault(name, []).append(acc)
            print(f"\n{cell} (accuracy %, mean over seeds, then each seed)")
            for name, accs in results[cell].items():
                print(f"  {name:48s} {100 * np.mean(accs):5.1f}  " + " ".join(f"{100 * a:5.1f}" for a in accs))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


def head_accuracies(spec: dict[str, Any], features_dir: Path | None) -> dict[str, float]:
    """Every head of :func:`heads` on one tuned encoder's features (kept in ``features_dir``)."""
    cached = features_dir / f"{spec['dataset']}_k{spec['k']}_s{spec['seed']}.npz" if features_dir else None
    if cached is not None and cached.is_file():
        f = {key: (v.item() if v.ndim == 0 else v) for key, v in np.load(cached).items()}
    else:
        f = tuned_features(spec)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cached, **f)
    out = {"engine run (raw features, no penalty)": f["engine"]}
    out.update({name: float((fit(f) == f["y_report"]).mean()) for name, fit in heads().items()})
    return out


def main(argv: list[str] | None = None) -> int:
    p = grid_arguments(__doc__.split("\n\n")[0], "sst2,emotion", "8", "0,1,2")
    p.add_argument("--features-dir", type=Path, default=None,
                   help="keep each tuned encoder's features here and reuse them (heads only on a re-run)")
    args = p.parse_args(argv)
    seed_grid(args, lambda spec: head_accuracies(spec, args.features_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
