"""Train only the word-embedding rows of tokens the training data contains (``train.skip_unseen_embeddings``).

A full fine-tune of MiniLM trains a 30,522 x 384 word-embedding table, yet 4,000 SST-2 sentences
use 6,604 of its rows. The other rows get a zero gradient in every step, so AdamW's moments for
them stay zero and its update is 0 / (0 + eps): the only thing that moves them is decoupled weight
decay, ``w *= 1 - lr_t * wd`` each step. Autograd still writes the whole 47 MB dense gradient each
step, the optimizer reads and writes all 11.7M weights and their two moments, and the gradient
clip sums them. :class:`SeenRowsEmbedding` trains the seen rows as a small parameter and reads the
others from the frozen table, scaled by the product of those decay factors (:func:`unseen_decay`,
1 without weight decay): the same weights in exact arithmetic, with a fraction of the embedding's
memory traffic (benchmarks/levers.py ``seen_rows``).

Why by hand: ``nn.Embedding(sparse=True)`` gives sparse gradients, but ``torch.optim.AdamW`` and
``clip_grad_norm_`` refuse them, and ``SparseAdam`` is a different update (no weight decay, lazy
moments) from the AdamW the run configures.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class SeenRowsEmbedding(nn.Module):
    """A drop-in for an ``nn.Embedding`` whose trainable rows are ``seen``; the rest stay frozen.

    ``weight`` is the original (frozen) table, so code that reads ``.weight`` still works;
    ``rows`` holds the trained copies of the seen rows. :meth:`merged` writes them back."""

    def __init__(self, embedding: nn.Embedding, seen: torch.Tensor) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = embedding.num_embeddings, embedding.embedding_dim
        self.padding_idx = embedding.padding_idx
        seen = torch.unique(seen.to(torch.long))
        if self.padding_idx is not None:  # its gradient is zero by definition: it never moves
            seen = seen[seen != self.padding_idx]
        self.__dict__["original"] = embedding  # not a submodule: its weight is ours, registered once
        self.weight = embedding.weight
        self.weight.requires_grad_(False)
        index = torch.full((self.num_embeddings,), -1, dtype=torch.long, device=self.weight.device)
        index[seen.to(index.device)] = torch.arange(len(seen), device=index.device)
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("seen", seen.to(self.weight.device), persistent=False)
        self.rows = nn.Parameter(self.weight.detach()[self.seen].clone())
        #: What weight decay has made of the other rows so far (set by the trainer before it evaluates).
        self.register_buffer("unseen_scale", torch.ones((), dtype=self.weight.dtype, device=self.weight.device),
                             persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        pos = self.index[input_ids]
        trained = F.embedding(pos.clamp(min=0), self.rows)
        # Ids outside the training data (held-out text) read the frozen table; no host sync.
        frozen = F.embedding(input_ids, self.weight, self.padding_idx) * self.unseen_scale
        return torch.where((pos >= 0).unsqueeze(-1), trained, frozen)

    def merged(self, unseen_scale: float = 1.0) -> nn.Embedding:
        """The original embedding module with the other rows scaled by ``unseen_scale`` (weight
        decay) and the trained rows written in, trainable again."""
        original = self.__dict__["original"]
        with torch.no_grad():
            if unseen_scale != 1.0:
                original.weight.mul_(unseen_scale)
            original.weight[self.seen] = self.rows.detach().to(original.weight.dtype)
        original.weight.requires_grad_(True)
        return original

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, trained rows={len(self.seen)}"


def token_ids_in(id_lists: Iterable[np.ndarray], vocab_size: int) -> torch.Tensor:
    """The distinct token ids in ``id_lists`` (flat integer arrays), as a sorted long tensor."""
    present = np.zeros(vocab_size, dtype=bool)
    for ids in id_lists:
        ids = np.asarray(ids)
        if ids.size:
            present[ids[(ids >= 0) & (ids < vocab_size)]] = True
    return torch.from_numpy(np.flatnonzero(present)).to(torch.long)


def why_not_seen_rows(encoder: nn.Module, groups: list[dict], skipped_steps: bool = False) -> str | None:
    """Why the encoder's word embedding cannot be trained as seen rows exactly (None: it can).

    ``groups`` are the optimizer's parameter groups. Under weight decay the other rows shrink by a
    known factor per optimizer step, unless steps can be skipped (``skipped_steps``: fp16's
    gradient scaler skips the steps that overflow, so the count of decays is not known)."""
    emb = encoder.get_input_embeddings() if hasattr(encoder, "get_input_embeddings") else None
    if type(emb) is not nn.Embedding:
        return f"the input embedding is {type(emb).__name__}, not a plain nn.Embedding"
    if not emb.weight.requires_grad:
        return "the word embedding does not train"
    if emb.sparse or emb.max_norm is not None or emb.scale_grad_by_freq:
        return "the embedding uses sparse, max_norm or scale_grad_by_freq"
    out = encoder.get_output_embeddings() if hasattr(encoder, "get_output_embeddings") else None
    if out is not None and getattr(out, "weight", None) is emb.weight:
        return "the word embedding is tied to the output layer"
    group = next((g for g in groups if any(p is emb.weight for p in g["params"])), None)
    if group is None:
        return "the word embedding is in no optimizer group"
    if group.get("weight_decay", 0.0) and skipped_steps:
        return (f"under fp16 the gradient scaler may skip steps, so weight decay {group['weight_decay']} shrinks the "
                f"other rows an unknown number of times (train.weight_decay=0 or bf16 allows it)")
    return None


def unseen_decay(optimizer: Any, scheduler: Any, rows: nn.Parameter) -> Callable[[int], float]:
    """The factor by which AdamW's decoupled weight decay has shrunk a row with an always-zero
    gradient after ``t`` optimizer steps: prod over s < t of (1 - lr_s * wd), with lr_s from the
    LR schedule (a ``LambdaLR``: transformers' schedules). 1 when the group has no weight decay."""
    gi = next(i for i, g in enumerate(optimizer.param_groups) if any(p is rows for p in g["params"]))
    wd = float(optimizer.param_groups[gi].get("weight_decay", 0.0))
    if not wd:
        return lambda t: 1.0
    if not hasattr(scheduler, "lr_lambdas"):
        raise TypeError(f"seen-row training under weight decay needs a LambdaLR schedule, got {type(scheduler).__name__}")
    lam, base = scheduler.lr_lambdas[gi], float(scheduler.base_lrs[gi])
    factors = [1.0]  # factors[t]: after t steps, extended on demand (float64 products)

    def at(t: int) -> float:
        while len(factors) <= t:
            factors.append(factors[-1] * (1.0 - base * float(lam(len(factors) - 1)) * wd))
        return factors[t]
    return at


def train_seen_rows(encoder: nn.Module, groups: list[dict], seen: torch.Tensor) -> SeenRowsEmbedding:
    """Swap the encoder's word embedding for a :class:`SeenRowsEmbedding` of ``seen`` and put its
    ``rows`` in the optimizer group of the full table (call :func:`why_not_seen_rows` first)."""
    emb = encoder.get_input_embeddings()
    module = SeenRowsEmbedding(emb, seen)
    for g in groups:
        g["params"] = [module.rows if p is emb.weight else p for p in g["params"]]
    encoder.set_input_embeddings(module)
    return module


def train_seen_rows_if_exact(encoder: nn.Module, groups: list[dict], id_lists: Iterable[np.ndarray],
                             skipped_steps: bool = False) -> tuple[SeenRowsEmbedding | None, str]:
    """``train.skip_unseen_embeddings`` for one training loop (the engine's, contrastive's pair phase):
    train only the rows of the token ids in ``id_lists`` (read lazily, only when it applies) where
    :func:`why_not_seen_rows` finds it the same update. Returns the module (None: every row trains)
    and one line saying which happened, for the loop's log."""
    why = why_not_seen_rows(encoder, groups, skipped_steps=skipped_steps)
    if why is not None:
        return None, f"every word-embedding row trains: {why}"
    vocab = encoder.get_input_embeddings().num_embeddings
    module = train_seen_rows(encoder, groups, token_ids_in(id_lists, vocab))
    return module, (f"{len(module.seen):,} of {vocab:,} word-embedding rows occur in the training data and train; "
                    "the others only follow weight decay (train.skip_unseen_embeddings)")


def merge_seen_rows(encoder: nn.Module, unseen_scale: float = 1.0) -> bool:
    """Put a plain embedding with the trained rows back in the encoder (the other rows scaled by
    ``unseen_scale``); False when there was none."""
    emb = encoder.get_input_embeddings() if hasattr(encoder, "get_input_embeddings") else None
    if not isinstance(emb, SeenRowsEmbedding):
        return False
    encoder.set_input_embeddings(emb.merged(unseen_scale))
    return True
