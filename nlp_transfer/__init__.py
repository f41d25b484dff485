"""nlp_transfer: transfer a pretrained transformer to your labelled data three ways
(full fine-tune, frozen features + head, LoRA/hybrid) through Accelerate, with held-out
overfitting checks and output folders that reload and predict.

    from nlp_transfer import Recipe, train, load
    result = train(Recipe(data="bbc_news", strategy="frozen", output="outputs/bbc"))
    predict = load(result.output_dir)
    predict(["Arsenal won again"])   # [{"label": "sport", "score": 0.97}]
"""
from __future__ import annotations

from typing import Any

from nlp_transfer.config import Recipe, RecipeConfig, load_config
from nlp_transfer.errors import ConfigError, DataError, ModelError, NLPTransferError
from nlp_transfer.registry import TaskSpec, register_task, unregister_task, unregister_strategy
# Importing these registers the built-in strategies (full, frozen, lora, partial, auto) and tasks
# (sequence_classification, regression, token_classification, multi_label): config validation,
# saving, loading, pushing and model cards read the registries.
from nlp_transfer import strategies, tasks  # noqa: E402,F401
from nlp_transfer.strategies import Strategy, register_strategy
from nlp_transfer.version import __version__  # noqa: F401

__all__ = ["Recipe", "RecipeConfig", "load_config", "train", "load", "ConfigError", "DataError", "ModelError",
           "NLPTransferError", "Strategy", "TaskSpec", "register_strategy", "register_task", "unregister_strategy",
           "unregister_task"]


def train(cfg: RecipeConfig | None = None, **kwargs: Any):  # noqa: ANN201 - see recipe.TrainResult
    """Run a recipe. ``train(Recipe(...))`` or ``train(model=..., data=..., strategy=...)``."""
    from nlp_transfer.recipe import train as _train
    if cfg is None:
        cfg = RecipeConfig(**kwargs)
    return _train(cfg)


def load(path_or_repo: str, **kwargs: Any):  # noqa: ANN201 - see predict.Predictor
    """Load a trained output folder (or Hub repo id) as a predictor."""
    from nlp_transfer.predict import load as _load
    return _load(path_or_repo, **kwargs)
