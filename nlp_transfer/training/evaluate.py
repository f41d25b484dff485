"""Scoring a split during training, and the datasets/collators the loaders are built from."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from nlp_transfer.model import TASKS
from nlp_transfer.tasks.common import EvalScores, stack_outputs, task_metrics

#: Columns a tokenised split hands to the model (the rest: text, length... stay behind).
MODEL_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "label")


class FeatureDataset(torch.utils.data.Dataset):
    """Cached features (a memory-mapped array) + labels, fetched a whole batch at a time.

    ``__getitems__`` lets the DataLoader slice the memmap once per batch instead of
    building one tensor per row, so 1M cached rows cost no per-row Python objects."""

    def __init__(self, x: np.ndarray, y: np.ndarray, label_dtype: torch.dtype, idx: np.ndarray | None = None) -> None:
        self.x, self.y, self.label_dtype = x, y, label_dtype
        self.idx = np.arange(len(y)) if idx is None else np.asarray(idx)

    def __len__(self) -> int:
        return len(self.idx)

    def __getitems__(self, positions: list[int]) -> dict[str, torch.Tensor]:
        rows = self.idx[np.asarray(positions)]
        return {"features": torch.from_numpy(np.array(self.x[rows], dtype=np.float32)),
                "labels": torch.as_tensor(self.y[rows], dtype=self.label_dtype)}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([i])


def default_collator(tokenizer: Any) -> Any:
    """Dynamic padding of sequence-level batches (tasks may bring their own collator)."""
    from transformers import DataCollatorWithPadding
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=None)


def model_inputs(ds: Any) -> Any:
    """The columns of a tokenised split that the model takes."""
    return ds.select_columns([c for c in MODEL_COLUMNS if c in ds.column_names])


def evaluate(accelerator: Any, model: torch.nn.Module, loader: DataLoader, task: str,
             metric_names: list[str], desc: str, show: bool, *, label_names: list[str] | None = None,
             extra: dict[str, Any] | None = None, keep_outputs: bool = False,
             compute_metrics: Callable[[np.ndarray, np.ndarray], dict[str, float]] | None = None) -> EvalScores:
    """Score one split: gather logits and labels, then the task's ``compute_metrics`` hook
    (tasks/common.py). ``gather_for_metrics`` drops the samples Accelerate duplicated to
    even out the last batch, so every example counts exactly once on any process count;
    token-level outputs are first padded to one length across processes (labels with -100).
    Non-scalar reports (per-class, confusion matrix) are in ``scores.details``; ``compute_metrics``
    (the user's, Trainer-style) adds its values next to the named metrics."""
    spec = TASKS[task]
    model.eval()
    all_logits, all_refs, losses = [], [], []
    with torch.inference_mode():
        for batch in tqdm(loader, desc=desc, disable=not show, leave=False):
            out = model(**batch)
            logits, refs = out["logits"].detach(), batch["labels"]
            if spec.token_level:
                logits = accelerator.pad_across_processes(logits, dim=1, pad_index=-100)
                refs = accelerator.pad_across_processes(refs, dim=1, pad_index=-100)
            logits, refs, loss = accelerator.gather_for_metrics(
                (logits, refs, out["loss"].detach().float().repeat(len(refs))))
            all_logits.append(logits.float().cpu().numpy())
            all_refs.append(refs.cpu().numpy())
            losses.append(loss.cpu().numpy())
    logits = stack_outputs(all_logits, 0.0)
    refs = stack_outputs(all_refs, -100)
    scores = task_metrics(spec, metric_names, logits, refs, label_names, extra)
    if compute_metrics is not None:
        scores.update(compute_metrics(logits, refs))
    scores["loss"] = float(np.concatenate(losses).mean())
    scores["n"] = int(len(refs))
    if keep_outputs:
        scores.logits, scores.labels = logits, refs
    return scores
