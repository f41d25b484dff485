"""The built-in tasks, registered in the task registry (:mod:`nlp_transfer.registry`) on import:

- ``sequence_classification`` (softmax head) and ``regression`` (one output, MSE): :mod:`.basic`;
  per-class precision/recall/F1 and a confusion matrix (:func:`.common.sequence_classification_metrics`)
  and class-imbalance options (:mod:`.imbalance`);
- ``token_classification`` (NER): :mod:`.ner.task`; frozen strategy via :mod:`.token_features`;
- ``multi_label``: :mod:`.multilabel.task` (sigmoid/BCE head, tuned per-label thresholds).

Each task is a :class:`~nlp_transfer.registry.TaskSpec` whose optional hooks (prepare, tokenize,
collator, compute_metrics, predict, finalize) the training loop calls and whose descriptive fields
(pipeline tag, card words, problem type) the model card and the Hub push read. Add your own with
:func:`register_task`. Heavy libraries are imported inside the hooks, so importing this package
stays cheap.
"""
from __future__ import annotations

import torch

from nlp_transfer.registry import TASKS, TaskSpec, get_task, register_task, unregister_task  # noqa: F401
from nlp_transfer.tasks import basic, common
from nlp_transfer.tasks.multilabel import task as multilabel_task
from nlp_transfer.tasks.ner import task as ner_task


def _decode_multilabel(labels: str | None) -> str:
    return f"labels = {labels}\nprint([[l for l, p in zip(labels, row) if p >= 0.5] for row in logits.sigmoid()])"


def _decode_tokens(labels: str | None) -> str:
    return f"labels = {labels}\nprint([[labels[i] for i in row] for row in logits.argmax(-1).tolist()])"


register_task(TaskSpec(
    name="sequence_classification", head="linear", token_level=False,
    num_outputs=lambda n: int(n or 2), loss=basic.cross_entropy, predictions=lambda z: z.argmax(-1),
    default_metrics=["accuracy", "f1", "precision", "recall", "matthews_correlation"],
    metric_for_best="accuracy", pipeline_tag="text-classification", supports_class_weights=True,
    compute_metrics=common.sequence_classification_metrics, card_words="text classification", named_labels=True,
    probabilities=basic.softmax, exclusive_labels=True, auto_class="AutoModelForSequenceClassification"))

register_task(TaskSpec(
    name="regression", head="linear", token_level=False,
    num_outputs=lambda n: 1, loss=basic.mse, predictions=lambda z: z.squeeze(-1).float(),
    default_metrics=["pearsonr", "spearmanr"], metric_for_best="pearsonr",
    pipeline_tag="text-classification", label_dtype=torch.float32, predict=basic.predict_values,
    card_words="text regression", problem_type="regression", card_decode=basic.decode_values,
    auto_class="AutoModelForSequenceClassification"))

register_task(TaskSpec(
    name="token_classification", head="linear", token_level=True,
    num_outputs=lambda n: int(n or 2), loss=ner_task.token_ce, predictions=lambda z: z.argmax(-1),
    default_metrics=["seqeval"], metric_for_best="f1", pipeline_tag="token-classification",
    prepare=ner_task.prepare_ner, tokenize=ner_task.tokenize_ner, collator=ner_task.token_collator,
    compute_metrics=ner_task.ner_metrics, predict=ner_task.predict_entities, supports_class_weights=True,
    card_words="token classification", card_decode=_decode_tokens, auto_class="AutoModelForTokenClassification"))

register_task(TaskSpec(
    name="multi_label", head="linear", token_level=False,
    num_outputs=lambda n: int(n or 2), loss=multilabel_task.bce,
    predictions=lambda z: (torch.sigmoid(z.float()) >= 0.5).long(),
    default_metrics=["multilabel"], metric_for_best="micro_f1", pipeline_tag="text-classification",
    prepare=multilabel_task.prepare_multilabel, compute_metrics=multilabel_task.multilabel_metrics,
    predict=multilabel_task.predict_labels, finalize=multilabel_task.tune, label_dtype=torch.float32,
    card_words="multi-label text classification", card_decode=_decode_multilabel,
    probabilities=multilabel_task.sigmoid, problem_type="multi_label_classification",
    auto_class="AutoModelForSequenceClassification"))

__all__ = ["basic", "common", "ner_task", "multilabel_task", "register_task", "unregister_task", "get_task",
           "TaskSpec", "TASKS"]
