"""The recipe: preflight -> auto -> run -> push, top to bottom.

The training itself (accelerator, data, model + strategy, loop, evaluation, checkpoints,
best weights, atomic save) is the engine in ``nlp_transfer/training``; a recipe is a
one-task plan run through it, a multi-task config (``nlp_transfer.multitask``) an N-task one.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from nlp_transfer.config import RecipeConfig
from nlp_transfer.training import RunPlan, RunResult, run_plan


@dataclasses.dataclass
class TrainResult(RunResult):
    """What ``train()`` returns: where the model is, its metrics, and the trained module."""

    @classmethod
    def of(cls, run: RunResult) -> "TrainResult":
        return cls(**{f.name: getattr(run, f.name) for f in dataclasses.fields(RunResult)})

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        from nlp_transfer.publish.hub import push_to_hub
        return push_to_hub(self.output_dir, repo_id, **kwargs)

    def export(self, format: str = "onnx", out: Any = None, quantize: str | None = None, data: Any = None,
               **options: Any) -> dict[str, Any]:
        """Export the output folder (:func:`nlp_transfer.export.export`): ``format="onnx"`` (``quantize="int8"``
        optional, checked on the saved held-out rows or ``data``) or ``"transformers"`` (a native-head
        model as a plain transformers folder). Returns the report."""
        from nlp_transfer.export import export
        return export(self.output_dir, format, out, quantize, data, **options)


def push_if_configured(result: TrainResult, hub_cfg: Any, is_main: bool) -> None:
    """``hub.push=true``: upload the finished output folder (main process only)."""
    if hub_cfg.push and is_main:
        result.push_to_hub(hub_cfg.repo_id, private=hub_cfg.private, revision=hub_cfg.revision, merge=hub_cfg.merge,
                           base_model_id=hub_cfg.base_model_id)


def is_main_process() -> bool:
    from nlp_transfer.model.features import process_state
    return process_state().is_main_process


def train(cfg: RecipeConfig, callbacks: Any = None, compute_metrics: Any = None) -> TrainResult:
    """Run a recipe end to end and return where its output folder is.

    ``callbacks``: objects with ``on_*`` hooks or ``transformers.TrainerCallback`` instances;
    ``compute_metrics``: Trainer's ``EvalPrediction -> dict`` (its keys may be ``eval.metric_for_best``)."""
    from nlp_transfer.training.preflight import check as preflight_check

    # Known-bad launch/strategy combinations fail here, before anything is written. A custom
    # metric_for_best is checked by the engine, against what compute_metrics returns.
    checked = cfg if compute_metrics is None else \
        dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, metric_for_best=None))
    preflight_check(checked)
    plan = RunPlan.single(cfg)
    if cfg.strategy.name == "auto":
        # Measured, not guessed: examples per class, a linear probe of the frozen features,
        # model size vs the device, and the time budget decide (see nlp_transfer/selection/decide.py).
        from nlp_transfer.selection.auto import resolve_auto
        cfg, decision = resolve_auto(cfg)
        plan = RunPlan.single(cfg)
        plan.extra_metrics["auto"] = decision.to_dict()
    result = TrainResult.of(run_plan(plan, callbacks, compute_metrics))
    push_if_configured(result, cfg.hub, is_main_process())
    return result
