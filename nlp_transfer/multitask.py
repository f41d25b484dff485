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
from typing import Any, Iterable

import torch

from .config import _closest
from .errors import ModelError
# The pieces of a multi-task run live in their layers; these names stay importable from here.
from .multitask_config import (SAMPLING, MultiTaskConfig, MultiTaskSettings, TaskEntry,  # noqa: F401
                               apply_multitask_overrides, is_multitask_config, load_multitask_config)
from .multitask_model import MultiHead, MultiTaskModel, TaskView  # noqa: F401
from .readers import READERS, read_trec  # noqa: F401
from .recipe import TrainResult, is_main_process, push_if_configured
from .training import RunPlan, run_plan
from .training.sampling import combine_scores, task_probabilities, task_schedule  # noqa: F401


def train_multitask(cfg: MultiTaskConfig) -> TrainResult:
    """Train one shared encoder with a head per task through the engine (the same loop, checkpoints,
    resume and atomic output as a single-task recipe); push when ``hub.push`` is set."""
    from .preflight import check as preflight_check

    preflight_check(cfg.base)  # launch setup, batch/process counts, precision: before anything is written
    result = TrainResult.of(run_plan(RunPlan.multitask(cfg)))
    push_if_configured(result, cfg.base.hub, is_main_process())
    return result


# --------------------------------------------------------------------------- load / predict

def load_multitask_model(path: str | Path, device: str | torch.device | None = None, allow_pickle: bool = False,
                         trust_remote_code: bool = False) -> tuple[MultiTaskModel, Any, dict[str, Any], Path]:
    """Rebuild the trained multi-task model (LoRA merged), its tokenizer and metadata, with the
    same safety checks as :func:`nlp_transfer.predict.load_model`."""
    from .models import HEADS, load_encoder, load_tokenizer
    from .predict import _attach_trained_weights, _device, _encoder_source, _read_checked_meta, resolve_output

    out = resolve_output(path)
    meta, remote = _read_checked_meta(out, allow_pickle, trust_remote_code)
    if meta.get("task") != "multi_task":
        raise ModelError(f"folder {out}", expected="a multi-task output folder", found=f"task={meta.get('task')}",
                         fix="use nlp_transfer.load() for single-task folders")
    encoder = load_encoder(_encoder_source(meta) or str(out), trust_remote_code=remote, allow_pickle=allow_pickle)
    h = meta["head"]
    heads = {n: HEADS[spec["type"]](encoder.config.hidden_size, spec["num_outputs"], h.get("dropout", 0.0))
             for n, spec in h["heads"].items()}
    model = MultiTaskModel(encoder, MultiHead(heads), meta["pooling"], {n: t["task"] for n, t in meta["tasks"].items()})
    model = _attach_trained_weights(model, out, meta)
    tokenizer = load_tokenizer(str(out), trust_remote_code=remote)
    model.to(_device(device)).eval()
    return model, tokenizer, meta, out


class MultiTaskPredictor:
    """Answers every task of a multi-task model, or one: ``p(texts)`` ->
    ``[{"sentiment": {...}, "question": {...}}, ...]``; ``p(texts, task="sentiment")`` -> that
    task's usual predictions. Each task runs its own pass through the shared encoder."""

    def __init__(self, model: MultiTaskModel, tokenizer: Any, meta: dict[str, Any], path: Path) -> None:
        from .predict import Predictor
        self.model, self.tokenizer, self.meta, self.path = model, tokenizer, meta, path
        self.tasks = list(meta["tasks"])
        self.predictors = {n: Predictor(TaskView(model, n), tokenizer, {**meta, **t}, path)
                           for n, t in meta["tasks"].items()}

    def __call__(self, texts: str | Iterable[str], text_pairs: str | Iterable[str] | None = None,
                 batch_size: int = 64, *, task: str | None = None) -> list[dict[str, Any]]:
        texts = [texts] if isinstance(texts, str) else list(texts)
        if task is not None:
            if task not in self.predictors:
                raise ModelError("task", expected=f"one of {self.tasks}", found=repr(task)
                                 + _closest(str(task), self.tasks), fix=f"pass task=<one of {self.tasks}>")
            return self.predictors[task](texts, text_pairs, batch_size)
        answers: dict[str, list[dict[str, Any]]] = {}
        for n, p in self.predictors.items():
            if p.meta.get("text_pair") and text_pairs is None:
                continue  # a pair task needs text_pairs: skipped when none are given
            answers[n] = p(texts, text_pairs if p.meta.get("text_pair") else None, batch_size)
        return [{n: answers[n][i] for n in answers} for i in range(len(texts))]


def load_multitask(path: str | Path, device: str | None = None, allow_pickle: bool = False,
                   trust_remote_code: bool = False) -> MultiTaskPredictor:
    """A multi-task output folder as a :class:`MultiTaskPredictor`."""
    return MultiTaskPredictor(*load_multitask_model(path, device, allow_pickle, trust_remote_code))


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
