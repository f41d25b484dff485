"""After the loop: the best weights back, the final per-task passes (the task's finalize hook,
the test split), the metrics, and the output folder written atomically."""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from nlp_transfer.config.objects import is_in_memory
from nlp_transfer.strategies import restore_trainable, write_json
from nlp_transfer.tasks.common import write_artifacts
from nlp_transfer.training.evaluate import evaluate
from nlp_transfer.training.output import FORMAT_VERSION, format_table, library_versions, write_atomically
from nlp_transfer.training.result import RunResult
from nlp_transfer.training.runs import TaskRun

#: The functions below read the stages' results off the ``Engine`` (engine.py) that calls them.
Engine = Any


def _without_n(scores: Any) -> dict[str, Any]:
    return {k: v for k, v in (scores or {}).items() if k != "n"}


def task_metrics(e: Engine, r: "TaskRun") -> tuple[dict[str, Any], dict[str, Any]]:
    """The best evaluation of one task, its per-class details, finalize hook (e.g. multi-label
    thresholds tuned on the held-out outputs of the best weights) and test scores.
    Returns (metrics, finalize result)."""
    acc = e.accelerator
    s = e.best["scores"][r.name]
    where = f" {r.name}" if e.plan.multi else ""
    kw = {"label_names": r.label_names, "extra": r.extra, "compute_metrics": e.compute_metrics}
    details, fin = getattr(s["held_out"], "details", None), {}
    if r.spec.finalize is not None or details is None:  # one more held-out pass only when needed
        final = evaluate(acc, e.trained, r.loaders["held_out"], r.entry.task, r.metric_names,
                         f"eval{where} held-out (best)", e.show, keep_outputs=True, **kw)
        details = final.details
        if r.spec.finalize is not None:
            fin = r.spec.finalize(final.logits, final.labels, r.label_names) or {}
            r.extra.update(fin.get("extra", {}))
    m: dict[str, Any] = {"held_out": _without_n(s["held_out"]), "train_sample": _without_n(s["train_sample"]),
                         "gap": s["gap"], "gap_metric": r.best_metric}
    if details:  # per-class P/R/F1 + confusion matrix, per-label or per-entity-type scores
        m["held_out_details"] = details
    if r.loaders.get("test") is not None:
        te = evaluate(acc, e.trained, r.loaders["test"], r.entry.task, r.metric_names, f"eval{where} test", e.show,
                      **kw)
        m["test"] = _without_n(te)
        if te.details:
            m["test_details"] = te.details
    m.update(fin.get("metrics", {}))
    return m, fin


def common_metrics(e: Engine) -> dict[str, Any]:
    b = e.best
    return {"best_epoch": b["epoch"], "best_step": b["step"],
            "epochs_run": e.history[-1]["epoch"] if e.history else 0, "stopped_early": e.stopped_early,
            "trainable_params": e.trainable, "total_params": e.total, "wall_s": round(time.time() - e.t0, 2),
            "strategy": e.strategy.name, "pooling": e.pooling, "num_processes": e.accelerator.num_processes,
            "hyperparameters": e.hp, "history": e.history, "resumed_from": e.resumed_from,
            # setup: data, tokenisation, model, feature cache; train: the loop minus its evaluations
            "timing": {"setup_s": round(e.timing["setup_s"], 3), "loop_s": round(e.timing["loop_s"], 3),
                       "eval_s": round(e.timing["eval_s"], 3),
                       "train_s": round(e.timing["loop_s"] - e.timing["eval_s"], 3)},
            **e.plan.extra_metrics}


def single_task_view(e: Engine, per_task: dict[str, Any], fins: dict[str, Any]) -> tuple[dict, dict]:
    """metrics.json and nlp_transfer.json of a single-task folder."""
    (n, r), = e.runs.items()
    m, fin = per_task[n], fins[n]
    metrics = {"held_out": m["held_out"], "train_sample": m["train_sample"], "gap": m["gap"],
               "gap_metric": m["gap_metric"], "task": r.entry.task, **common_metrics(e),
               "data": {**r.data.stats, "train_sample_size": int(len(r.sample_idx))}}
    metrics.update({k: v for k, v in m.items() if k not in metrics})
    if e.class_weights:
        metrics["class_weights"] = e.class_weights
    cfg = e.cfg
    meta = {"format_version": FORMAT_VERSION, "task": r.entry.task, "strategy": e.strategy.name,
            "base_model": e.base_ref, "pooling": e.pooling, "max_length": cfg.model.max_length,
            "label_names": r.label_names, "text_pair": r.has_pair,
            "head": {"type": "native", "auto_class": r.spec.auto_class, "num_outputs": r.spec.num_outputs(r.num_labels)}
            if e.pooling == "native" else {"type": r.spec.head, "num_outputs": r.spec.num_outputs(r.num_labels),
                                           "dropout": cfg.model.head_dropout},
            "trust_remote_code": cfg.model.trust_remote_code, "versions": library_versions(), **fin.get("meta", {})}
    return metrics, meta


def multi_task_view(e: Engine, per_task: dict[str, Any], fins: dict[str, Any]) -> tuple[dict, dict]:
    """metrics.json and nlp_transfer.json of a multi-task folder: per-task sections, flat
    ``task/metric`` tables and the combination that drove early stopping."""
    runs, cfg = e.runs, e.cfg
    for n, r in runs.items():
        per_task[n]["data"] = r.data.stats

    def flat(which: str) -> dict[str, float]:
        return {f"{n}/{k}": v for n, m in per_task.items() for k, v in m[which].items() if k != "loss"}

    combined_tr = (e.best.get("record") or {}).get("combined_train_sample", float("nan"))
    metrics: dict[str, Any] = {
        "held_out": {**flat("held_out"), "combined": e.best["value"]},
        "train_sample": {**flat("train_sample"), "combined": combined_tr},
        "gap": combined_tr - e.best["value"], "gap_metric": "combined", "task": "multi_task", **common_metrics(e),
        "data": {"train_size": sum(len(r.train_tok) for r in runs.values()),
                 "held_out_size": sum(len(r.held_tok) for r in runs.values()),
                 "duplicates_dropped": sum(r.data.stats.get("duplicates_dropped", 0) for r in runs.values()),
                 "leaked_dropped": sum(r.data.stats.get("leaked_dropped", 0) for r in runs.values())},
        "sampling": {"mode": e.plan.sampling.sampling, "temperature": e.plan.sampling.temperature,
                     "probabilities": e.probs},
        "loss_weights": {n: float(r.entry.loss_weight) for n, r in runs.items()},
        "combine_weights": {n: float(r.entry.combine_weight) for n, r in runs.items()}, "tasks": per_task}
    if per_task and all("test" in m for m in per_task.values()):
        metrics["test"] = flat("test")
    tasks_meta = {n: {"task": r.entry.task, "label_names": r.label_names, "text_pair": r.has_pair,
                      "num_outputs": r.spec.num_outputs(r.num_labels), "metric_for_best": r.best_metric,
                      **fins[n].get("meta", {})} for n, r in runs.items()}
    meta = {"format_version": FORMAT_VERSION, "task": "multi_task", "strategy": e.strategy.name,
            "base_model": e.base_ref, "pooling": e.pooling, "max_length": cfg.model.max_length, "tasks": tasks_meta,
            "head": {"type": "multi", "dropout": cfg.model.head_dropout,
                     "heads": {n: {"type": runs[n].spec.head, "num_outputs": tasks_meta[n]["num_outputs"]}
                               for n in runs}},
            "trust_remote_code": cfg.model.trust_remote_code, "versions": library_versions()}
    return metrics, meta


def write_held_out_sample(rows: list[dict[str, Any]], folder: Path) -> None:
    """``held_out.jsonl``: the first held-out rows (``TaskRun.held_rows``), columns as the task's reader
    made them (``text``, ``text_pair``, ``label``; token tasks: their token and tag lists)."""
    import json
    if not rows:
        return
    with open(folder / "held_out.jsonl", "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")


def write_folder(e: Engine, tmp: Path, metrics: dict[str, Any], meta: dict[str, Any]) -> None:
    """Weights (as the strategy saves them), confusion matrices, tokenizer, resolved config, metadata."""
    unwrapped = e.accelerator.unwrap_model(e.trained)
    meta.update(e.strategy.save(unwrapped, tmp))
    if is_in_memory(e.cfg.model.name) and e.strategy.needs_base_model(meta):  # the folder loads without the object
        shutil.copytree(e.resolved, tmp / "base_model")
        meta["base_model"] = {**meta["base_model"], "path": "base_model"}
    if e.plan.multi:
        for n, m in metrics["tasks"].items():
            cm = (m.get("held_out_details") or {}).get("confusion_matrix")
            if cm:
                sub = tmp / "confusion_matrices"
                sub.mkdir(exist_ok=True)
                write_artifacts({"confusion_matrix": cm}, sub)
                (sub / "confusion_matrix.png").rename(sub / f"{n}.png")
    else:
        write_artifacts(metrics.get("held_out_details", {}), tmp)  # confusion_matrix.png
        write_held_out_sample(next(iter(e.runs.values())).held_rows, tmp)
    e.tokenizer.save_pretrained(tmp)
    (tmp / "recipe.yaml").write_text(e.plan.source.to_yaml())
    write_json(tmp / "nlp_transfer.json", meta)
    metrics["wall_s"] = round(time.time() - e.t0, 2)
    write_json(tmp / "metrics.json", metrics)  # last: its presence marks a complete folder


def finish_run(e: Engine) -> RunResult:
    acc = e.accelerator
    unwrapped = acc.unwrap_model(e.trained)
    if e.best["weights"] is not None:
        restore_trainable(unwrapped, e.best["weights"])
    # train.skip_unseen_embeddings: one plain table again, as of the step of the weights kept
    e.merge_embedding_rows(e.best["step"] if e.best["weights"] is not None else e.step)
    per_task, fins = {}, {}
    for n, r in e.runs.items():
        per_task[n], fins[n] = task_metrics(e, r)
    view = multi_task_view if e.plan.multi else single_task_view
    metrics, meta = view(e, per_task, fins)
    if e.main:  # main process only; written to a temporary folder, then moved in
        write_atomically(e.out_dir, lambda tmp: write_folder(e, tmp, metrics, meta))
        e.say(format_table(metrics, metrics["gap_metric"]))
        e.say(f"[nlp_transfer] saved to {e.out_dir}")
    acc.wait_for_everyone()
    acc.end_training()
    return RunResult(output_dir=e.out_dir, metrics=metrics, config=e.plan.source, history=e.history,
                     model=unwrapped)
