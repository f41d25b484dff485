"""Pieces shared by the task hooks: evaluation results with details, stacking gathered
outputs, the per-class report + confusion matrix of single-label classification, and the
confusion-matrix PNG.

The training loop (``recipe._evaluate``) gathers raw logits and labels for a whole split and
hands them to :func:`task_metrics`, which calls the task's ``compute_metrics`` hook (or the
plain "argmax + metric modules" path). Everything that is not a scalar (per-class scores,
confusion matrices, per-entity-type scores) travels in ``EvalScores.details`` so the
printed table and the trackers only ever see floats.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

IGNORE_INDEX = -100


class EvalScores(dict):
    """Flat ``{metric: float}`` scores of one split, plus what does not fit in a table.

    Attributes:
        details: per-class / per-label / per-type reports and confusion matrices.
        logits, labels: the gathered outputs (kept only when asked: the final pass).
    """

    def __init__(self, scores: dict[str, float] | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(scores or {})
        self.details: dict[str, Any] = details or {}
        self.logits: np.ndarray | None = None
        self.labels: np.ndarray | None = None


def stack_outputs(chunks: Sequence[np.ndarray], pad_value: float) -> np.ndarray:
    """Concatenate per-batch arrays along axis 0, padding axis 1 (token-level outputs of
    different batches have different sequence lengths) with ``pad_value``."""
    chunks = [np.asarray(c) for c in chunks]
    if not chunks:
        return np.empty((0,), dtype=np.float32)
    if chunks[0].ndim < 2 or all(c.shape[1:] == chunks[0].shape[1:] for c in chunks):
        return np.concatenate(chunks)
    width = max(c.shape[1] for c in chunks)
    out = []
    for c in chunks:
        if c.shape[1] < width:
            pad = [(0, 0)] * c.ndim
            pad[1] = (0, width - c.shape[1])
            c = np.pad(c, pad, constant_values=pad_value)
        out.append(c)
    return np.concatenate(out)


def task_metrics(spec: Any, metric_names: list[str], logits: np.ndarray, labels: np.ndarray,
                 label_names: list[str] | None, extra: dict[str, Any] | None) -> EvalScores:
    """Scores of one split through the task's ``compute_metrics`` hook (default: predictions ->
    our metric modules)."""
    if spec.compute_metrics is not None:
        res = dict(spec.compute_metrics(metric_names, logits, labels, label_names, extra or {}))
    else:
        import torch

        from nlp_transfer.metrics import compute
        preds = spec.predictions(torch.from_numpy(np.asarray(logits))).numpy()
        res = dict(compute(metric_names, predictions=preds, references=labels))
    details = res.pop("_details", {})
    return EvalScores({k: float(v) for k, v in res.items()}, details)


# --------------------------------------------------------------------------- classification

def classification_report(preds: np.ndarray, refs: np.ndarray, label_names: Sequence[str] | None,
                          num_labels: int | None = None) -> dict[str, Any]:
    """Per-class precision/recall/F1/support and the confusion matrix (rows: true label,
    columns: predicted label), as JSON-ready dicts."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    n = len(label_names) if label_names else int(num_labels or (max(preds.max(initial=0), refs.max(initial=0)) + 1))
    names = list(label_names) if label_names else [str(i) for i in range(n)]
    ids = list(range(n))
    p, r, f, s = precision_recall_fscore_support(refs, preds, labels=ids, zero_division=0)
    cm = confusion_matrix(refs, preds, labels=ids)
    return {
        "per_class": {names[i]: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                                 "support": int(s[i])} for i in ids},
        "confusion_matrix": {"labels": names, "rows": "true", "columns": "predicted",
                             "matrix": cm.astype(int).tolist()},
    }


def sequence_classification_metrics(metric_names: list[str], logits: np.ndarray, labels: np.ndarray,
                                    label_names: list[str] | None, extra: dict[str, Any]) -> dict[str, Any]:
    """The usual metric modules on argmax predictions, plus per-class scores and the confusion
    matrix in ``_details``."""
    from nlp_transfer.metrics import compute

    logits = np.asarray(logits)
    preds = logits.argmax(-1)
    refs = np.asarray(labels).astype(np.int64)
    out: dict[str, Any] = dict(compute(metric_names, predictions=preds, references=refs))
    out["_details"] = classification_report(preds, refs, label_names, logits.shape[-1])
    return out


# --------------------------------------------------------------------------- artefacts

def plot_confusion_matrix(cm: dict[str, Any], path: str | Path, title: str = "held-out confusion matrix") -> Path | None:
    """Write ``cm`` (from :func:`classification_report`) as a PNG heat map with counts and
    row-normalised recall shading. Returns None when matplotlib is unavailable."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency of the card plots
        return None
    m = np.asarray(cm["matrix"], dtype=float)
    names = cm["labels"]
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    size = max(3.5, 0.55 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if len(names) <= 30:
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center",
                        color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_artifacts(details: dict[str, Any], out_dir: str | Path) -> list[str]:
    """Files derived from the final held-out details (today: ``confusion_matrix.png``)."""
    written = []
    cm = (details or {}).get("confusion_matrix")
    if cm:
        p = plot_confusion_matrix(cm, Path(out_dir) / "confusion_matrix.png")
        if p is not None:
            written.append(p.name)
    return written


# --------------------------------------------------------------------------- saved models

def evaluate_saved(predictor: Any, data_cfg: Any, split: str | None = None, batch_size: int = 64) -> dict[str, float]:
    """Score a saved model of a task with its own reader (``TaskSpec.prepare``) on one split of
    ``data_cfg`` ("test" by default when present, else "validation"/held-out, else "train"),
    with the metrics and saved thresholds of training. Used by ``nlp-transfer evaluate``."""
    import dataclasses

    import torch

    from nlp_transfer.errors import DataError
    from nlp_transfer.registry import TASKS

    spec = TASKS[predictor.task]
    data_cfg = dataclasses.replace(data_cfg, label_names=list(predictor.label_names or []) or None,
                                   max_train_samples=None)
    data = spec.prepare(data_cfg)
    parts = {"test": data.test, "validation": data.held_out, "dev": data.held_out, "held_out": data.held_out,
             "train": data.train}
    split = split or ("test" if data.test is not None else "validation")
    ds = parts.get(split)
    if ds is None:
        raise DataError(f"split '{split}'", expected="one of test, validation, train present in the data",
                        found=f"no {split} split", fix="pass --split validation (or train)")
    max_length = predictor.meta["max_length"]
    tok = spec.tokenize(ds, predictor.tokenizer, max_length, predictor.label_names, data_cfg) if spec.tokenize \
        else _default_tokenize(ds, predictor.tokenizer, max_length)
    if spec.collator is not None:
        collate = spec.collator(predictor.tokenizer)
    else:
        from transformers import DataCollatorWithPadding
        collate = DataCollatorWithPadding(predictor.tokenizer)
    keep = [c for c in ("input_ids", "attention_mask", "token_type_ids", "label") if c in tok.column_names]
    tok = tok.select_columns(keep)
    logits, labels = [], []
    with torch.inference_mode():
        for start in range(0, len(tok), batch_size):
            batch = collate([tok[i] for i in range(start, min(start + batch_size, len(tok)))])
            y = batch.pop("labels")
            inputs = {k: v.to(predictor.device) for k, v in batch.items()}
            logits.append(predictor.model(**inputs)["logits"].float().cpu().numpy())
            labels.append(y.numpy())
    z, y = stack_outputs(logits, 0.0), stack_outputs(labels, IGNORE_INDEX)
    extra = {"thresholds": predictor.meta["thresholds"]} if predictor.meta.get("thresholds") else {}
    scores = task_metrics(spec, list(spec.default_metrics), z, y, predictor.label_names, extra)
    out = dict(scores)
    out["n"] = len(y)
    return out


def _default_tokenize(ds: Any, tokenizer: Any, max_length: int) -> Any:
    from nlp_transfer.data import tokenize
    return tokenize(ds, tokenizer, max_length)
