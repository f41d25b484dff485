"""``frozen``: feature extraction; the head trains on cached features of the frozen encoder."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from nlp_transfer.model import TransferModel
from nlp_transfer.strategies.base import Strategy, save_head


class FrozenStrategy(Strategy):
    """Feature extraction: encoder frozen and in eval mode, head trained on cached features."""
    name = "frozen"
    uses_feature_cache = True
    trains_encoder = False
    defaults = {"epochs": 30, "lr": 0.0, "head_lr": 2e-3, "patience": 5}

    def apply(self, model: TransferModel) -> nn.Module:
        for p in model.encoder.parameters():
            p.requires_grad = False
        for p in model.head.parameters():
            p.requires_grad = True
        model.encoder.eval()
        return model

    def save(self, model: nn.Module, out_dir: Path) -> dict[str, Any]:
        m = self.base(model)
        m.encoder.config.save_pretrained(out_dir)
        save_head(m, out_dir)
        return {"weights": {"head": "head.safetensors"}}

    @classmethod
    def push_description(cls, merged: bool) -> str:
        return "frozen-encoder model (encoder weights included)" if merged else "head (frozen encoder)"

    @classmethod
    def describe(cls, details: dict[str, Any], merged: bool = False) -> str:
        where = ("For this upload the unchanged encoder weights were stored next to the head (`--merge`), so the "
                 "repository does not need the base model.") if merged \
            else "The repository holds the head and an exact reference to the base model."
        return ("**Frozen encoder** (feature extraction): the pretrained encoder was not changed; only the task "
                "head was trained, on pooled sentence vectors. " + where)

    @classmethod
    def card_loading(cls, info: Any, ref: str, base: str, revision: str) -> tuple[str, list[str]] | None:
        return cls.head_loading(ref, f'"{base}"{revision}', stored=False)
