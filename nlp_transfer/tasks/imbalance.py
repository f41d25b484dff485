"""Class imbalance: per-class loss weights (``train.class_weights``) and a balanced sampler
(``train.balanced_sampler``).

``auto`` weights follow scikit-learn's "balanced" rule, ``w_c = n / (k * n_c)`` over the
training labels, so a class with half the average frequency counts twice as much in the
loss; the weights average to 1 over training examples, which keeps the loss scale (and the
learning rate that suits it) unchanged.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from nlp_transfer.errors import ConfigError

IGNORE_INDEX = -100


def _labels_of(labels: Any) -> Any:
    """The label column of a tokenised ``Dataset`` (read only when needed), or ``labels`` as given."""
    return labels["label"][:] if hasattr(labels, "column_names") else labels


def _flat_label_ids(labels: Any) -> np.ndarray:
    """Integer label ids of a column (ints, or lists of ints for token labels), -100 dropped."""
    labels = _labels_of(labels)
    if len(labels) and isinstance(labels[0], (list, tuple, np.ndarray)):
        flat = np.concatenate([np.asarray(x, dtype=np.int64) for x in labels]) if len(labels) else np.zeros(0, int)
    else:
        flat = np.asarray(labels, dtype=np.int64)
    return flat[flat != IGNORE_INDEX]


def class_weight_vector(setting: str | dict[str, float] | None, labels: Any,
                        label_names: Sequence[str]) -> np.ndarray | None:
    """The per-class weights for ``train.class_weights`` (None for ``none``).

    Args:
        setting: ``"none"``/None, ``"auto"`` or ``{label name: weight}`` (others weigh 1).
        labels: training label ids (or lists of ids for token classification; -100 ignored), or
            the tokenised training ``Dataset`` (its ``label`` column).
        label_names: class names, index = id.

    Raises:
        ConfigError: a mapping names a label that is not a class.
    """
    if setting is None or setting == "none":
        return None
    k = len(label_names)
    if setting == "auto":
        ids = _flat_label_ids(labels)
        counts = np.bincount(ids, minlength=k).astype(np.float64)
        w = np.zeros(k)
        seen = counts > 0
        w[seen] = len(ids) / (seen.sum() * counts[seen])
        return w.astype(np.float32)
    w = np.ones(k, dtype=np.float32)
    index = {str(n): i for i, n in enumerate(label_names)}
    for name, value in setting.items():
        if str(name) not in index:
            raise ConfigError(f"train.class_weights label '{name}'", expected=f"one of the labels {list(label_names)}",
                              found=repr(name), fix="use the label names printed at the start of training")
        w[index[str(name)]] = float(value)
    return w


def apply_class_weights(model: Any, spec: Any, setting: Any, labels: Any,
                        label_names: Sequence[str] | None) -> dict[str, float] | None:
    """Set ``model.class_weights`` (a TransferModel buffer used by the loss).

    Returns ``{label: weight}`` for logging/metrics.json, or None when no weighting.

    Raises:
        ConfigError: class weights asked for a task whose loss does not take them.
    """
    if setting is None or setting == "none":
        return None
    if not getattr(spec, "supports_class_weights", False) or not label_names:
        raise ConfigError("train.class_weights", expected="task=sequence_classification or token_classification",
                          found=f"task={spec.name}", fix="remove train.class_weights for this task")
    w = class_weight_vector(setting, labels, label_names)
    model.class_weights = torch.as_tensor(w, dtype=torch.float32)
    return {str(n): round(float(v), 4) for n, v in zip(label_names, w)}


def balanced_sampler(labels: Any, generator: torch.Generator | None = None,
                     num_samples: int | None = None) -> torch.utils.data.WeightedRandomSampler:
    """Sample rows with replacement so that each class is drawn equally often in expectation
    (weight of a row = 1 / count of its class); an epoch keeps ``len(labels)`` draws."""
    ids = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(ids)
    w = 1.0 / counts[ids]
    return torch.utils.data.WeightedRandomSampler(torch.as_tensor(w, dtype=torch.double),
                                                  num_samples=num_samples or len(ids), replacement=True,
                                                  generator=generator)


def train_sampler(cfg: Any, spec: Any, labels: Any, generator: torch.Generator) -> torch.utils.data.Sampler | None:
    """The balanced sampler when ``train.balanced_sampler`` is on, else None (keep the default).

    Raises:
        ConfigError: a balanced sampler asked for a task without one class per example.
    """
    if not getattr(cfg.train, "balanced_sampler", False):
        return None
    if spec.name != "sequence_classification":
        raise ConfigError("train.balanced_sampler", expected="task=sequence_classification",
                          found=f"task={spec.name}",
                          fix="set train.balanced_sampler=false (use train.class_weights for token labels)")
    return balanced_sampler(np.asarray(_labels_of(labels)), generator)
