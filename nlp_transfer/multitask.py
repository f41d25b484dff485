"""Multi-task learning: one shared encoder, one head per task, trained together.

A multi-task recipe is the usual recipe sections (model, strategy, train, eval, output, hub)
plus ``tasks`` (name -> task type + data) and ``multitask`` (sampling and combination)::

    model: {name: minilm, max_length: 64}
    strategy: {name: lora}
    multitask: {sampling: temperature, temperature: 2.0}
    tasks:
      sentiment: {task: sequence_classification, data: {name: ../shared/data/sst2, text_column: sentence}}
      question:  {task: sequence_classification, reader: trec, data: {name: ../shared/data/trec}}

How it trains:

- every step draws one task, with probability proportional to its number of training
  batches (``proportional``), to that number to the power 1/T (``temperature``; T=1 is
  proportional, large T tends to uniform) or equally (``uniform``), and takes one batch of it;
  an epoch is as many steps as all tasks have batches together;
- the task's loss is multiplied by its ``loss_weight``;
- every strategy works as for one task (frozen: each task's features are cached once; lora:
  the heads are PEFT ``modules_to_save``); the encoder is shared by all heads;
- each evaluation scores every task's held-out split and train sample with that task's
  metrics (per-task gap and overfitting warning); early stopping and the best epoch follow
  the *combination*: the ``combine_weight``-weighted mean of each task's ``metric_for_best``
  (sign-flipped for losses);
- the output folder holds one model (encoder or adapter + every head); :func:`load_multitask`
  (through ``nlp_transfer.load``) returns a predictor answering every task or one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

# The pieces of a multi-task run live in their layers; these names stay importable from here.
from nlp_transfer.config.multitask import (SAMPLING, MultiTaskConfig, MultiTaskSettings, TaskEntry,  # noqa: F401
                                           apply_multitask_overrides, is_multitask_config, load_multitask_config)
from nlp_transfer.model.multitask import MultiHead, MultiTaskModel, TaskView  # noqa: F401
from nlp_transfer.predict import MultiTaskPredictor, load_multitask  # noqa: F401
from nlp_transfer.data.readers import READERS, read_trec  # noqa: F401
from nlp_transfer.predict.rebuild import rebuild_model
from nlp_transfer.recipe import TrainResult, is_main_process, push_if_configured
from nlp_transfer.training import RunPlan, run_plan
from nlp_transfer.training.sampling import combine_scores, task_probabilities, task_schedule  # noqa: F401


def train_multitask(cfg: MultiTaskConfig, callbacks: Any = None, compute_metrics: Any = None) -> TrainResult:
    """Train one shared encoder with a head per task through the engine (the same loop, checkpoints,
    resume and atomic output as a single-task recipe); push when ``hub.push`` is set."""
    from nlp_transfer.training.preflight import check as preflight_check

    preflight_check(cfg.base)  # launch setup, batch/process counts, precision: before anything is written
    result = TrainResult.of(run_plan(RunPlan.multitask(cfg), callbacks, compute_metrics))
    push_if_configured(result, cfg.base.hub, is_main_process())
    return result


# --------------------------------------------------------------------------- load / predict

def load_multitask_model(path: str | Path, device: str | torch.device | None = None, allow_pickle: bool = False,
                         trust_remote_code: bool = False) -> tuple[MultiTaskModel, Any, dict[str, Any], Path]:
    """Rebuild the trained multi-task model (LoRA merged): see nlp_transfer.predict.rebuild.rebuild_model."""
    return rebuild_model(path, device, allow_pickle, trust_remote_code, expect_multi_task=True)


def compare_with_single_task(cfg: MultiTaskConfig) -> dict[str, Any]:
    """Train the multi-task model, then one single-task model per task with the same settings
    (same epochs: each single-task model sees the same batches of its task as the multi-task
    model does in expectation, so the total budget is equal). Returns per-task held-out (and
    test) metrics side by side, with wall times."""
    rows: dict[str, Any] = {"multi_task": {}, "single_task": {}, "wall_s": {}}
    res = train_multitask(cfg)
    rows["wall_s"]["multi_task"] = res.metrics["wall_s"]
    for n, m in res.metrics["tasks"].items():
        rows["multi_task"][n] = {"held_out": m["held_out"], "test": m.get("test"), "metric": m["gap_metric"]}
    base_dir = Path(cfg.base.output.dir)
    single_wall = 0.0
    for n in cfg.tasks:
        single = cfg.only(n, str(base_dir.parent / f"{base_dir.name}_single_{n}"))
        r = train_multitask(single)
        single_wall += r.metrics["wall_s"]
        m = r.metrics["tasks"][n]
        rows["single_task"][n] = {"held_out": m["held_out"], "test": m.get("test"), "metric": m["gap_metric"]}
    rows["wall_s"]["single_task_total"] = round(single_wall, 2)
    return rows


def comparison_table(rows: dict[str, Any]) -> str:
    """Markdown table of :func:`compare_with_single_task` results."""
    lines = ["| task | metric | single-task held-out | multi-task held-out | single-task test | multi-task test |",
             "|---|---|---|---|---|---|"]
    for n, mt in rows["multi_task"].items():
        st = rows["single_task"][n]
        metric = mt["metric"]

        def f(x: Any) -> str:
            return "-" if x is None else f"{x.get(metric, float('nan')):.4f}"
        lines.append(f"| {n} | {metric} | {st['held_out'][metric]:.4f} | {mt['held_out'][metric]:.4f} | "
                     f"{f(st['test'])} | {f(mt['test'])} |")
    lines.append(f"\nwall time: multi-task {rows['wall_s']['multi_task']:.0f} s, single-task models together "
                 f"{rows['wall_s']['single_task_total']:.0f} s")
    return "\n".join(lines)
