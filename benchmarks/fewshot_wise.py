"""Does the original encoder still help after the pair phase? Weight-space ensembling and feature
concatenation on the same contrastively tuned encoders.

    python benchmarks/fewshot_wise.py --datasets sst2 --k 32 --seeds 8,9,10,11,12,13,14,15

For every dataset x k x seed (the rows and report set of ``benchmarks/fewshot.py``): one
``contrastive`` run gives a tuned encoder (theta_1); the pretrained MiniLM is theta_0. Then, all
with SetFit's head (scikit-learn ``LogisticRegression(C=1)`` on unit-length mean-pooled features,
which scores as our head does: ``benchmarks/fewshot_head.py``):

- ``alpha=a``: the encoder (1 - a) theta_0 + a theta_1, weight by weight (WiSE-FT, Wortsman et al.
  2022, "Robust fine-tuning of zero-shot models"): one model, no inference cost. ``alpha=1`` is the
  tuned encoder, ``alpha=0`` the pretrained one (``frozen``'s features);
- ``concat``: the tuned and the pretrained features side by side (two encoders at inference).

Prints one row per variant: mean accuracy over seeds and each seed's.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402
from benchmarks.fewshot import ours_recipe, run_rows  # noqa: E402  (also sets the offline env)
from benchmarks.fewshot_head import grid_arguments, seed_grid, unit  # noqa: E402

ALPHAS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def interpolate(tuned: dict[str, Any], base: dict[str, Any], alpha: float) -> dict[str, Any]:
    """(1 - alpha) base + alpha tuned for every floating-point tensor both hold; anything else
    (integer buffers such as ``position_ids``, tensors only the tuned one has) stays tuned."""
    return {name: alpha * t + (1 - alpha) * base[name]
            if name in base and t.is_floating_point() and t.shape == base[name].shape else t
            for name, t in tuned.items()}


def variants(spec: dict[str, Any]) -> dict[str, float]:
    """Train ``contrastive`` on the spec's rows; the report accuracy of every variant."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModel

    from nlp_transfer import Recipe, load, train
    from nlp_transfer.predict import token_count_batches

    train_rows, report = run_rows(spec)
    out = tempfile.mkdtemp(prefix="fewshot_wise_")
    try:
        recipe = ours_recipe({**spec, "ours_strategy": "contrastive"}, train_rows, report, out).to_dict()
        predictor = load(train(Recipe(**recipe)).output_dir)
        encoder = predictor.model.encoder
        tuned = {k: v.clone() for k, v in encoder.state_dict().items()}
        base = AutoModel.from_pretrained(common.minilm_path()).state_dict()
        names = sorted({r["label"] for r in train_rows})
        y = np.array([names.index(r["label"]) for r in train_rows])
        y_report = np.array([names.index(r["label"]) for r in report])

        def feats(texts: list[str]) -> np.ndarray:
            rows = np.zeros((len(texts), encoder.config.hidden_size), np.float32)
            with torch.inference_mode():
                for idx, batch in token_count_batches(predictor.tokenizer, texts, None, recipe["model"]["max_length"]):
                    rows[idx] = predictor.model.encode(**batch).float().numpy()
            return unit(rows)

        def accuracy(x: np.ndarray, x_report: np.ndarray) -> float:
            head = LogisticRegression(C=1.0, max_iter=3000).fit(x, y)
            return float((head.predict(x_report) == y_report).mean())

        features = {}
        for alpha in ALPHAS:
            encoder.load_state_dict(interpolate(tuned, base, alpha))
            features[alpha] = (feats([r["text"] for r in train_rows]), feats([r["text"] for r in report]))
        result = {f"alpha={a:g}": accuracy(*features[a]) for a in ALPHAS}
        result["concat"] = accuracy(np.hstack([features[1.0][0], features[0.0][0]]),
                                    np.hstack([features[1.0][1], features[0.0][1]]))
        return result
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = grid_arguments(__doc__.split("\n\n")[0], "sst2", "32", "8,9,10,11,12,13,14,15").parse_args(argv)
    seed_grid(args, variants)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
