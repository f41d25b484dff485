"""``auto``: a request to choose a strategy, resolved before training."""
from __future__ import annotations

from torch import nn

from nlp_transfer.errors import ConfigError
from nlp_transfer.model import TransferModel
from nlp_transfer.strategies.base import Strategy


class AutoStrategy(Strategy):
    """``strategy=auto``: not a way to train but a request to choose one. ``recipe.train`` resolves
    it (:func:`nlp_transfer.selection.auto.resolve_auto`) to a concrete strategy before training."""
    name = "auto"
    concrete = False
    streams = False  # its probe needs every training row up front
    freezes_parameters = True  # it may pick frozen, lora or partial

    def apply(self, model: TransferModel) -> nn.Module:
        raise ConfigError("strategy=auto", expected="a concrete strategy by training time",
                          found="auto unresolved", fix="train through nlp_transfer.train (it resolves auto first)")
