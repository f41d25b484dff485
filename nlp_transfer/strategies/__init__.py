"""Transfer strategies: objects that own everything about how pretrained weights transfer.

Each strategy is a :class:`Strategy` subclass registered with :func:`register_strategy` (like
PEFT's ``register_peft_method``) in ``STRATEGIES`` (:mod:`nlp_transfer.registry`). The class
knows, and nothing outside it branches on its name:

- training: which parameters train (:meth:`~Strategy.apply`, the only place trainability is
  set), their LR groups, default hyperparameters (``defaults``), its config checks
  (:meth:`~Strategy.check_config`), whether the head trains on cached features
  (``uses_feature_cache``) and whether the encoder changes (``trains_encoder``: pooling);
- saving and reloading: :meth:`~Strategy.save` writes the output folder;
  :meth:`~Strategy.needs_base_model` and :meth:`~Strategy.load_trained` rebuild it for
  inference (through :func:`nlp_transfer.predict.rebuild.rebuild_model`);
- publishing: the files a Hub push uploads (:meth:`~Strategy.weight_files`,
  :meth:`~Strategy.prepare_push`), its commit message, the model card's words, tags and plain
  loading snippet; preflight facts (``freezes_parameters``, ``saved_weights``).

One file per strategy (full.py, partial.py, frozen.py, lora.py, contrastive.py, auto.py) on the interface in base.py;
the registrations are the lines at the bottom. A new strategy (see tests/test_extensibility.py for a
complete BitFit)::

    @register_strategy
    class BitFit(Strategy):
        name = "bias_only"
        def apply(self, model): ...             # requires_grad on biases + head; returns the model
        def save(self, model, out_dir): ...     # writes weights, returns {"weights": {...}}
        @classmethod
        def load_trained(cls, model, out, meta, *, merge=True): ...   # the saved weights back on
        @classmethod
        def weight_files(cls, out): return ["bias.safetensors", "head.safetensors"]
"""
from __future__ import annotations

from nlp_transfer.registry import STRATEGIES, strategy_class, unregister_strategy  # noqa: F401  (the registry)
from nlp_transfer.strategies.auto import AutoStrategy
from nlp_transfer.strategies.base import (Strategy, TuneContext, decay_groups, encoder_weight_files, find_layers,  # noqa: F401
                                          get_strategy, is_head, is_unused_pooler, register_strategy,
                                          restore_trainable, save_head, snapshot_trainable, write_json)
from nlp_transfer.strategies.contrastive import ContrastiveStrategy
from nlp_transfer.strategies.frozen import FrozenStrategy
from nlp_transfer.strategies.full import FullStrategy
from nlp_transfer.strategies.lora import LoraStrategy
from nlp_transfer.strategies.partial import PartialStrategy

# The built-in strategies: a new one is a new file and a line here (or register_strategy from user code).
register_strategy(FullStrategy)
register_strategy(FrozenStrategy)
register_strategy(LoraStrategy)
register_strategy(PartialStrategy)
register_strategy(ContrastiveStrategy)
register_strategy(AutoStrategy)
