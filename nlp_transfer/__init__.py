"""nlp_transfer: transfer a pretrained transformer to your labelled data three ways
(full fine-tune, frozen features + head, LoRA/hybrid) through Accelerate, with held-out
overfitting checks and output folders that reload and predict.

    from nlp_transfer import Recipe, train, load
    result = train(Recipe(data="bbc_news", strategy="frozen", output="outputs/bbc"))
    predict = load(result.output_dir)
    predict(["Arsenal won again"])   # [{"label": "sport", "score": 0.97}]
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nlp_transfer.config import Recipe, RecipeConfig, load_config
from nlp_transfer.errors import ConfigError, DataError, ModelError, NLPTransferError
from nlp_transfer.registry import TaskSpec, register_task, unregister_task, unregister_strategy
# Importing these registers the built-in strategies (full, frozen, lora, partial, contrastive, auto) and tasks
# (sequence_classification, regression, token_classification, multi_label): config validation,
# saving, loading, pushing and model cards read the registries.
from nlp_transfer import strategies, tasks  # noqa: E402,F401
from nlp_transfer.strategies import Strategy, register_strategy
from nlp_transfer.training.callbacks import Callback
from nlp_transfer.version import __version__  # noqa: F401

if TYPE_CHECKING:  # return types only: importing these at run time would load torch and the trainer
    from nlp_transfer.predict import MultiTaskPredictor, Predictor
    from nlp_transfer.recipe import TrainResult

__all__ = ["Recipe", "RecipeConfig", "load_config", "train", "load", "Callback", "ConfigError", "DataError", "ModelError",
           "NLPTransferError", "Strategy", "TaskSpec", "register_strategy", "register_task", "unregister_strategy",
           "unregister_task"]


def train(cfg: RecipeConfig | None = None, **kwargs: Any) -> TrainResult:
    """Run a recipe. ``train(Recipe(...))`` or ``train(model=..., data=..., strategy=...)``.

    ``callbacks=[...]`` (:class:`nlp_transfer.training.callbacks.Callback` objects or
    ``transformers.TrainerCallback`` instances) and ``compute_metrics=fn`` (Trainer's
    ``EvalPrediction`` in, a dict out) go with either form."""
    from nlp_transfer.recipe import train as _train
    callbacks, compute_metrics = kwargs.pop("callbacks", None), kwargs.pop("compute_metrics", None)
    if cfg is None:
        cfg = RecipeConfig(**kwargs)
    return _train(cfg, callbacks=callbacks, compute_metrics=compute_metrics)


def load(path_or_repo: str, **kwargs: Any) -> Predictor | MultiTaskPredictor:
    """Load a trained output folder (or Hub repo id) as a predictor."""
    from nlp_transfer.predict import load as _load
    return _load(path_or_repo, **kwargs)
