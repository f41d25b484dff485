"""The sequence-level built-in tasks' pieces: losses, the regression predictor, card decoding.

``sequence_classification`` (softmax / cross-entropy) and ``regression`` (one output, MSE) are
registered in :mod:`nlp_transfer.tasks` from these."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy on class ids (-100 ignored), optionally class-weighted."""
    return nn.functional.cross_entropy(logits.float(), labels.long(), ignore_index=-100,
                                       weight=None if weight is None else weight.float())


def mse(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the single output against float targets."""
    return nn.functional.mse_loss(logits.float().squeeze(-1), labels.float())


def predict_values(predictor: Any, texts: list[str], text_pairs: list[str] | None, batch_size: int) -> list[dict]:
    """Regression predictions: ``[{"value": float}, ...]``."""
    z = predictor.logits(texts, text_pairs, batch_size)
    return [{"value": float(v)} for v in z.reshape(-1)]


def decode_values(labels: str | None) -> str:
    """Card snippet: the regression output as numbers."""
    return "print(logits.squeeze(-1).tolist())"


def softmax(z: np.ndarray) -> np.ndarray:
    """Class probabilities of single-label logits (last axis)."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)
