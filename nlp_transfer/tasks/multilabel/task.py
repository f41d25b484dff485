"""Multi-label classification as a task of the recipe: a sigmoid/BCE head, per-label decision
thresholds tuned on held-out data after training (saved in ``nlp_transfer.json`` and used by
``load()``), micro/macro F1 and per-label scores.

Data (``data.name``):

- the GoEmotions folder (``train/dev/test.tsv`` + ``emotions.txt``), read with
  :func:`nlp_transfer.tasks.multilabel.labels.read_goemotions` (tab-split, no CSV quoting: 2.5% of its texts
  start with a double quote);
- any file/folder/Hub dataset the core reads, whose ``data.label_column`` holds lists
  (``["joy", "love"]``), list strings, or delimiter-separated strings (``"joy,love"``; the
  delimiter is ``data.label_delimiter`` or detected among ``,`` ``;`` ``|``). Rows without a
  label are allowed (all-zero targets).

During training, the held-out scores (which pick the best epoch) use a 0.5 threshold. After
training, thresholds are tuned per label on the held-out logits of the best weights; the
held-out scores with tuned thresholds are optimistic (tuned and scored on the same data) and
reported as such; the test split (``eval.use_test=true``) gives the honest figure.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from nlp_transfer.tasks.multilabel import labels as ml
from nlp_transfer.errors import DataError


def _is_goemotions(path: Path) -> bool:
    return path.is_dir() and (path / "emotions.txt").is_file() and (path / "train.tsv").is_file()


def _read_splits(cfg: Any) -> tuple[dict[str, tuple[list[str], list[list[str]]]], list[str] | None]:
    """``{split: (texts, label lists)}`` and the label names the source declares (if any)."""
    path = Path(cfg.name).expanduser()
    if _is_goemotions(path):
        out: dict[str, tuple[list[str], list[list[str]]]] = {}
        names = None
        for split, fname in (("train", "train"), ("validation", "dev"), ("test", "test")):
            if (path / f"{fname}.tsv").is_file():
                rows, names = ml.read_goemotions(path, fname)
                out[split] = ([r["text"] for r in rows], [r["labels"] for r in rows])
        return out, names
    from nlp_transfer.data import VALIDATION_NAMES, canonical_columns, load_raw
    raw = load_raw(cfg)
    out = {}
    for split, ds in raw.items():
        try:
            ds = canonical_columns(ds, cfg, split)
        except DataError:
            if split == cfg.train_split:
                raise
            continue  # unlabelled test split
        key = "validation" if split in VALIDATION_NAMES else split
        out[key] = (list(ds["text"][:]), ml.parse_label_lists(ds["label"][:], cfg.label_delimiter))
    return out, None


def _hash(t: str) -> bytes:
    return hashlib.blake2b((t or "").strip().encode("utf-8"), digest_size=8).digest()


def prepare_multilabel(cfg: Any) -> Any:
    """Texts + multi-hot ``label`` (float32 lists) for train / held-out / test."""
    from datasets import Dataset, Sequence, Value

    from nlp_transfer.data import PreparedData, split_rows

    splits, declared = _read_splits(cfg)
    if "train" not in splits:
        raise DataError("train split", expected="a split named 'train'", found=f"splits {list(splits)}",
                        fix="name the training file train.<ext>")
    stats: dict[str, Any] = {"dataset": cfg.name, "empty_dropped": 0, "duplicates_dropped": 0, "leaked_dropped": 0}

    def clean(texts: list[str], labels: list[list[str]]) -> tuple[list[str], list[list[str]]]:
        keep = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
        stats["empty_dropped"] += len(texts) - len(keep)
        return [texts[i] for i in keep], [labels[i] for i in keep]

    train_t, train_l = clean(*splits["train"])
    if not train_t:
        raise DataError("training data", expected="non-empty texts", found="an empty dataset",
                        fix=f"check data.text_column ('{cfg.text_column}')")
    held = clean(*splits["validation"]) if "validation" in splits else None
    test = clean(*splits["test"]) if "test" in splits else None
    rows, held_rows, split_stats = split_rows(list(zip(train_t, train_l)), list(zip(*held)) if held else None,
                                              lambda row: _hash(row[0]), cfg)
    stats.update(split_stats)
    train_t, train_l = [t for t, _ in rows], [ls for _, ls in rows]
    held = ([t for t, _ in held_rows], [ls for _, ls in held_rows])

    if cfg.label_names:
        names = [str(n) for n in cfg.label_names]
    elif declared:
        names = list(declared)
    else:
        names = ml.infer_label_names(train_l)
    if len(names) < 2:
        raise DataError("multi-label names", expected="at least 2 labels", found=f"{names}",
                        fix="check data.label_column")
    known = set(names)
    unseen = sorted({lab for labels in held[1] for lab in labels} - known)
    if unseen:
        raise DataError("held-out labels", expected="only labels that occur in training",
                        found=f"{unseen[:10]} never seen in training",
                        fix="add training examples of those labels, pass data.label_names, or drop those rows")

    feats = {"text": Value("string"), "label": Sequence(Value("float32"))}

    def to_ds(part: tuple[list[str], list[list[str]]] | None, split: str) -> Any:
        if part is None:
            return None
        texts, labels = part
        if split == "test":  # labels unknown to training cannot be scored: drop them, say so
            labels = [[x for x in ls if x in known] for ls in labels]
        y = ml.encode(labels, names)
        from datasets import Features
        return Dataset.from_dict({"text": texts, "label": y.tolist()}, features=Features(feats))

    train_y = ml.encode(train_l, names)
    stats.update(train_size=len(train_t), held_out_size=len(held[0]), test_size=len(test[0]) if test else 0,
                 labels_per_example=round(float(train_y.sum(1).mean()), 3),
                 label_counts={n: int(c) for n, c in zip(names, train_y.sum(0))})
    return PreparedData(train=to_ds((train_t, train_l), "train"), held_out=to_ds(held, "held_out"),
                        test=to_ds(test, "test"), label_names=names, stats=stats)


# --------------------------------------------------------------------------- loss / metrics

def bce(logits: Any, labels: Any) -> Any:
    import torch
    return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float())


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def thresholds_array(thresholds: Any, label_names: list[str] | None, n: int) -> np.ndarray | float:
    """Thresholds as an ``(L,)`` array from a {label: thr} mapping / list, or 0.5."""
    if thresholds is None:
        return 0.5
    if isinstance(thresholds, dict):
        if not label_names:
            raise DataError("multi-label thresholds", expected="label names", found="none",
                            fix="save the model with its label names")
        return np.asarray([float(thresholds.get(name, 0.5)) for name in label_names])
    arr = np.asarray(thresholds, dtype=np.float64)
    return arr if arr.ndim else float(arr)


def multilabel_metrics(metric_names: list[str], logits: np.ndarray, labels: np.ndarray,
                       label_names: list[str] | None, extra: dict[str, Any]) -> dict[str, Any]:
    """Micro/macro precision, recall and F1, subset accuracy; per-label scores in ``_details``.
    Uses ``extra["thresholds"]`` when present (after tuning), else 0.5."""
    probs = sigmoid(logits)
    y = (np.asarray(labels) > 0.5).astype(np.int64)
    thr = thresholds_array(extra.get("thresholds"), label_names, probs.shape[-1])
    preds = ml.apply_thresholds(probs, thr)
    rep = ml.f1_report(preds, y, label_names)
    per_label = rep.pop("per_label")
    rep["subset_accuracy"] = float((preds == y).all(1).mean()) if len(y) else 0.0
    rep["_details"] = {"per_label": per_label}
    return rep


def tune(logits: np.ndarray, labels: np.ndarray, label_names: list[str] | None) -> dict[str, Any]:
    """The finalize hook: per-label thresholds maximising held-out F1 (saved with the model),
    and the held-out scores they give (optimistic: tuned on the same split)."""
    probs = sigmoid(logits)
    y = (np.asarray(labels) > 0.5).astype(np.int64)
    thr = ml.tune_thresholds(probs, y)
    names = list(label_names) if label_names else [str(i) for i in range(y.shape[1])]
    mapping = {n: float(t) for n, t in zip(names, thr)}
    tuned = multilabel_metrics([], logits, labels, names, {"thresholds": thr})
    tuned.pop("_details")
    return {"meta": {"thresholds": mapping},
            "extra": {"thresholds": thr},
            "metrics": {"held_out_tuned_thresholds": tuned, "thresholds": mapping}}


# --------------------------------------------------------------------------- predict

def predict_labels(predictor: Any, texts: list[str], text_pairs: list[str] | None = None,
                   batch_size: int = 64) -> list[dict[str, Any]]:
    """``{"labels": [names over their threshold, most probable first], "scores": {name: prob}}``
    per text, with the thresholds saved at training time (0.5 when none were saved)."""
    z = predictor.logits(texts, text_pairs, batch_size)
    probs = sigmoid(z)
    names = predictor.label_names or [str(i) for i in range(probs.shape[-1])]
    thr = thresholds_array(predictor.meta.get("thresholds"), names, probs.shape[-1])
    on = ml.apply_thresholds(probs, thr) if len(probs) else np.zeros((0, len(names)), int)
    out = []
    for p, row in zip(probs, on):
        chosen = sorted(np.flatnonzero(row), key=lambda j: -p[j])
        out.append({"labels": [names[j] for j in chosen],
                    "scores": {names[j]: round(float(p[j]), 6) for j in range(len(names))}})
    return out
