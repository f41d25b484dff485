"""``partial``: the encoder frozen except its top-k layers; the head trains."""
from __future__ import annotations

from typing import Any

from torch import nn

from nlp_transfer.errors import ModelError
from nlp_transfer.model import TransferModel
from nlp_transfer.strategies.base import find_layers
from nlp_transfer.strategies.full import FullStrategy


class PartialStrategy(FullStrategy):
    """Encoder frozen except its top-k layers (default 2); head trains."""
    name = "partial"
    defaults = {"epochs": 4, "lr": 1e-4, "head_lr": 1e-3, "patience": 2}
    step_budget = True
    freezes_parameters = True
    uses_unfreeze_top_k = True

    def apply(self, model: TransferModel) -> nn.Module:
        k = self.cfg.unfreeze_top_k if self.cfg.unfreeze_top_k is not None else 2
        for p in model.parameters():
            p.requires_grad = False
        _, layers = find_layers(model.encoder)
        if k > len(layers):
            raise ModelError("strategy.unfreeze_top_k", expected=f"at most {len(layers)} (the model's layers)",
                             found=str(k), fix=f"pass strategy.unfreeze_top_k<={len(layers)} or strategy=full")
        for layer in list(layers)[len(layers) - k:]:
            for p in layer.parameters():
                p.requires_grad = True
        for p in model.head.parameters():
            p.requires_grad = True
        self.k = k
        return model

    @classmethod
    def push_description(cls, merged: bool) -> str:
        return "partially fine-tuned model"

    @classmethod
    def card_settings(cls, settings: dict[str, Any]) -> dict[str, Any]:
        return {"unfreeze_top_k": settings["unfreeze_top_k"]} if settings.get("unfreeze_top_k") is not None else {}

    @classmethod
    def describe(cls, details: dict[str, Any], merged: bool = False) -> str:
        return (f"**Partial fine-tuning**: the top {details.get('unfreeze_top_k') or 2} encoder layers and the task "
                "head were trained; the layers below stayed frozen.")
