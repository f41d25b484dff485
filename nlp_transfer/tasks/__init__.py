"""Tasks beyond single-sequence classification/regression, registered in ``models.TASKS``.

- ``token_classification`` (NER): :mod:`.ner_task`; frozen strategy via :mod:`.token_features`;
- ``multi_label``: :mod:`.multilabel_task` (sigmoid/BCE head, tuned per-label thresholds);
- ``sequence_classification`` gains per-class precision/recall/F1 and a confusion matrix
  (:func:`.common.sequence_classification_metrics`) and class-imbalance options
  (:mod:`.imbalance`).

Each task is a :class:`~nlp_transfer.models.TaskSpec` whose optional hooks (prepare, tokenize,
collator, compute_metrics, predict, finalize) the one training loop in ``recipe.py`` calls.
Heavy libraries are imported inside the hooks, so importing this package stays cheap.
"""
from __future__ import annotations

import torch

from ..models import TASKS, TaskSpec
from . import common, multilabel_task, ner_task

TASKS["sequence_classification"].compute_metrics = common.sequence_classification_metrics

TASKS["token_classification"] = TaskSpec(
    name="token_classification", head="linear", token_level=True,
    num_outputs=lambda n: int(n or 2), loss=ner_task.token_ce, predictions=lambda z: z.argmax(-1),
    default_metrics=["seqeval"], metric_for_best="f1", pipeline_tag="token-classification",
    prepare=ner_task.prepare_ner, tokenize=ner_task.tokenize_ner, collator=ner_task.token_collator,
    compute_metrics=ner_task.ner_metrics, predict=ner_task.predict_entities, supports_class_weights=True)

TASKS["multi_label"] = TaskSpec(
    name="multi_label", head="linear", token_level=False,
    num_outputs=lambda n: int(n or 2), loss=multilabel_task.bce,
    predictions=lambda z: (torch.sigmoid(z.float()) >= 0.5).long(),
    default_metrics=["multilabel"], metric_for_best="micro_f1", pipeline_tag="text-classification",
    prepare=multilabel_task.prepare_multilabel, compute_metrics=multilabel_task.multilabel_metrics,
    predict=multilabel_task.predict_labels, finalize=multilabel_task.tune, label_dtype=torch.float32)

__all__ = ["common", "ner_task", "multilabel_task"]
