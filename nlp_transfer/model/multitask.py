"""The multi-task model: one shared encoder, one head per task.

Same attribute names as ``TransferModel`` (``encoder``, ``head``, ``pooling``, ``config``), so
every strategy applies unchanged; ``TaskView`` shows one task as a single-task model.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nlp_transfer.errors import ModelError
from nlp_transfer.model import TASKS, pool, save_pooled


class MultiHead(nn.Module):
    """One head per task in a ``ModuleDict``; ``forward(x, task=name)`` runs that task's head.

    A single module (not the dict itself) so PEFT's ``modules_to_save=["head"]`` wraps and
    saves every head at once."""

    def __init__(self, heads: dict[str, nn.Module]) -> None:
        super().__init__()
        self.heads = nn.ModuleDict(heads)

    def forward(self, x: torch.Tensor, task: str) -> torch.Tensor:
        return self.heads[task](x)


class MultiTaskModel(nn.Module):
    """Shared encoder -> (pooling unless the task is token-level) -> the task's head.

    Same attribute names as ``TransferModel`` (``encoder``, ``head``, ``pooling``, ``config``),
    so every strategy (which parameters train, LR groups, saving) applies unchanged."""

    def __init__(self, encoder: nn.Module, head: MultiHead, pooling: str, tasks: dict[str, str]) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.pooling = pooling
        self.tasks = dict(tasks)  # name -> task type
        self.task = "multi_task"
        self.config = encoder.config

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               token_type_ids: torch.Tensor | None = None, token_level: bool = False) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**kwargs).last_hidden_state
        return hidden if token_level else pool(hidden, attention_mask, self.pooling)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                features: torch.Tensor | None = None, task: str | None = None, **_: Any) -> dict[str, torch.Tensor]:
        if task not in self.tasks:
            raise ModelError("multi-task forward", expected=f"task= one of {sorted(self.tasks)}", found=repr(task),
                             fix="pass task=<name>")
        spec = TASKS[self.tasks[task]]
        if features is None:
            features = self.encode(input_ids, attention_mask, token_type_ids, token_level=spec.token_level)
        logits = self.head(features, task=task)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = spec.loss(logits, labels)
        return out

    def save_weights(self, out_dir: Any) -> dict[str, str]:
        return save_pooled(self, out_dir)


class TaskView(nn.Module):
    """A multi-task model seen as a single-task one (``forward`` fixes ``task``), so the
    single-task ``Predictor`` and the task hooks work unchanged."""

    def __init__(self, model: MultiTaskModel, task: str) -> None:
        super().__init__()
        self.model = model
        self.task_name = task

    def forward(self, **kwargs: Any) -> dict[str, torch.Tensor]:
        return self.model(**kwargs, task=self.task_name)
