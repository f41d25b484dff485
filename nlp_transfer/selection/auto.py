"""``strategy: auto``: measure the signals of a recipe and resolve it to a concrete strategy.

:func:`measure_signals` turns a :class:`~nlp_transfer.config.RecipeConfig` into the
:class:`~nlp_transfer.selection.decide.Signals` that :func:`~nlp_transfer.selection.decide.decide_strategy` reads:

* ``n_train``, per-class counts (``n_classes``, ``min_per_class``) and the majority-class
  chance level, from the prepared training split (after dedup and ``max_train_samples``);
* ``probe_score``: a 5-fold logistic-regression probe (accuracy; Spearman for regression) on
  frozen features of a stratified sample of at most ``probe_sample`` training examples,
  extracted with the pooling the frozen strategy would use and stored in the recipe's
  feature cache (when the sample is the whole split, a following ``frozen`` run reuses it);
* ``model_params``: the encoder's parameters;
* ``device`` and ``gpu_memory_gb`` (free accelerator memory) of this process;
* with a time budget only: ``est_full_epoch_s``, from a few timed full fine-tuning steps
  (forward, backward, AdamW) on random training batches, times the batches per epoch.

:func:`resolve_auto` returns the recipe with ``strategy.name`` replaced by the decision, and
an :class:`AutoDecision` whose :meth:`~AutoDecision.to_dict` is what ``metrics.json``
(``metrics["auto"]``) and the model card record. The hook in ``recipe.train`` is::

    if cfg.strategy.name == "auto":
        cfg, decision = resolve_auto(cfg)
    ...  metrics["auto"] = decision.to_dict()
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nlp_transfer.errors import is_main_process
from nlp_transfer.log import configure as configure_logging
from nlp_transfer.selection.decide import Decision, Signals, decide_strategy, explain
from nlp_transfer.config import RecipeConfig, eval_batch_size
from nlp_transfer.errors import ConfigError

__all__ = ["AutoDecision", "measure_signals", "class_counts", "probe_frozen_features", "resolve_auto", "device_info",
           "estimate_full_epoch_seconds",
           "PROBE_SAMPLE", "TIMING_STEPS"]

#: Training examples the linear probe is fitted on (stratified sample; all of them if fewer).
PROBE_SAMPLE = 1000
#: Timed fine-tuning steps for the epoch estimate (after one untimed warm-up step).
TIMING_STEPS = 3
AUTO_TASKS = ("sequence_classification", "regression")


@dataclass
class AutoDecision(Decision):
    """A :class:`~nlp_transfer.selection.decide.Decision` plus what was measured to reach it."""
    measurements: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form for ``metrics["auto"]``; ``decision`` is the chosen strategy (the model
        card reads that key), ``explanation`` the printed text."""
        d = asdict(self)
        d["decision"] = self.strategy
        d["explanation"] = explain(self)
        return d


# --------------------------------------------------------------------------- measurements

def device_info() -> dict[str, Any]:
    """The device training would use here, and its free memory (GB) when it is an accelerator."""
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        return {"device": "cuda", "gpu_memory_gb": round(free / 1e9, 2), "gpu_total_gb": round(total / 1e9, 2),
                "gpu_name": torch.cuda.get_device_name(0)}
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return {"device": "mps", "gpu_memory_gb": None}
    return {"device": "cpu", "gpu_memory_gb": None}


def _collator(tokenizer: Any) -> Any:
    from transformers import DataCollatorWithPadding
    return DataCollatorWithPadding(tokenizer)


def estimate_full_epoch_seconds(cfg: RecipeConfig, train_tok: Any, tokenizer: Any, num_labels: int | None,
                                device: torch.device, steps: int = TIMING_STEPS, seed: int = 0) -> dict[str, Any]:
    """Time ``steps`` full fine-tuning steps (after one warm-up) on random batches of the
    tokenised train split; return the per-step time and the estimate for one epoch."""
    from nlp_transfer.data import MODEL_INPUTS
    from nlp_transfer.model import TASKS, build_model

    model, _, _ = build_model(cfg.model.name, cfg.task, num_labels, cfg.model.pooling, cfg.model.head_dropout,
                              cfg.model.revision, cfg.model.trust_remote_code, strategy="full")
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    bs = cfg.train.batch_size
    rng = np.random.default_rng(seed)
    collate = _collator(tokenizer)
    keep = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in train_tok.column_names]
    view = train_tok.select_columns(keep + ["label"])
    label_dtype = TASKS[cfg.task].label_dtype or torch.long
    times = []
    for i in range(steps + 1):
        idx = rng.choice(len(view), size=min(bs, len(view)), replace=False)
        rows = [view[int(j)] for j in idx]
        labels = torch.as_tensor([r.pop("label") for r in rows], dtype=label_dtype, device=device)
        batch = {k: v.to(device) for k, v in collate(rows).items() if k in MODEL_INPUTS}
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model(**batch)
        loss = TASKS[cfg.task].loss(out["logits"], labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step pays for allocation and kernel selection
            times.append(time.perf_counter() - t0)
    per_step = float(np.median(times))
    batches = math.ceil(len(train_tok) / bs)
    del model, opt
    return {"step_s": round(per_step, 4), "batches_per_epoch": batches, "timed_steps": len(times),
            "est_full_epoch_s": round(per_step * batches, 2)}


def class_counts(y_all: np.ndarray, label_names: list[str] | None) -> tuple[int, int, float, dict[str, Any]]:
    """``(n_classes, min_per_class, chance, record)`` of integer labels: the smallest class and
    the majority-class accuracy are what the rules' data thresholds and the probe's floor read."""
    names = label_names or [str(i) for i in range(int(y_all.max()) + 1)]
    counts = np.bincount(y_all, minlength=len(names))
    chance = float(counts.max() / len(y_all))
    record = {"class_counts": {n: int(c) for n, c in zip(names, counts)}, "chance": chance}
    return int(len(names)), int(counts.min()), chance, record


def probe_frozen_features(cfg: RecipeConfig, sample: Any, y: np.ndarray, model: Any, tokenizer: Any,
                          resolved: str, pooling: str, device: torch.device) -> tuple[float | None, dict[str, Any]]:
    """The linear probe on frozen features of ``sample`` (features from the recipe's cache when
    it has them); ``(probe_score, record)``, the score ``None`` when a class of the sample has
    fewer than 2 examples (no stratified folds)."""
    from nlp_transfer.data import tokenize
    from nlp_transfer.model.features import cached_features, default_cache_dir, process_state
    from nlp_transfer.model import weights_sha256
    from nlp_transfer.selection.transferability import linear_probe

    regression = cfg.task == "regression"
    if not (regression or (len(np.unique(y)) >= 2 and np.bincount(y)[np.bincount(y) > 0].min() >= 2)):
        return None, {"probe": {"skipped": "fewer than 2 examples in a class of the sample"}}
    sample_tok = tokenize(sample, tokenizer, cfg.model.max_length)
    cache_dir = None
    if cfg.strategy.cache_features:
        cache_dir = Path(cfg.output.cache_dir) if cfg.output.cache_dir else default_cache_dir()
    key = {"model_id": resolved, "revision": cfg.model.revision,
           "weights_sha": weights_sha256(resolved) if Path(resolved).is_dir() else None,
           "pooling": pooling, "max_length": cfg.model.max_length}
    model.to(device)
    t_f = time.perf_counter()
    ebs = eval_batch_size(cfg.eval.batch_size, process_state().num_processes, device.type != "cpu")
    feats, hit = cached_features(model, sample_tok, _collator(tokenizer), ebs, device, key,
                                 cache_dir, "auto: probe features", cfg.output.progress_bars)
    record: dict[str, Any] = {"probe_features_s": round(time.perf_counter() - t_f, 2),
                              "probe_features_cached": bool(hit)}
    probe = linear_probe(np.asarray(feats), y, regression=regression, seed=cfg.data.seed)
    record["probe"] = {"metric": probe["metric"], "mean": probe["mean"], "std": probe["std"],
                       "folds": probe["folds"], "sample": int(len(y)), "pooling": pooling}
    return float(np.clip(probe["mean"], 0.0, 1.0)), record


def measure_signals(cfg: RecipeConfig, probe_sample: int = PROBE_SAMPLE, time_budget_s: float | None = None,
                    timing_steps: int = TIMING_STEPS, data: Any = None) -> tuple[Signals, dict[str, Any]]:
    """Measure everything :func:`~nlp_transfer.selection.decide.decide_strategy` looks at.

    Returns ``(signals, measurements)``; ``measurements`` keeps the details (class counts,
    probe folds, feature time, timing steps) for the record.
    """
    from transformers import AutoTokenizer

    from nlp_transfer.data import prepare_data, tokenize
    from nlp_transfer.model.features import process_state
    from nlp_transfer.model import build_model, count_params
    from nlp_transfer.selection.rank import stratified_indices

    if cfg.task not in AUTO_TASKS:
        raise ConfigError("strategy=auto", expected=f"a task among {list(AUTO_TASKS)}", found=f"task={cfg.task}",
                          fix="choose strategy=frozen, lora or full for this task")
    if probe_sample < 10:
        raise ConfigError("auto probe_sample", expected="at least 10", found=str(probe_sample),
                          fix="use the default (1000)")
    t0 = time.perf_counter()
    data = data if data is not None else prepare_data(cfg.data, cfg.task)
    regression = cfg.task == "regression"
    y_all = np.asarray(data.train["label"][:])
    n_train = int(len(y_all))
    meas: dict[str, Any] = {"n_train": n_train}
    n_classes = min_per_class = None
    chance = 0.0
    if not regression:
        n_classes, min_per_class, chance, counts = class_counts(y_all, data.label_names)
        meas.update(counts)

    # ---- frozen features of a stratified sample -> linear probe
    model, resolved, pooling = build_model(cfg.model.name, cfg.task, n_classes, cfg.model.pooling,
                                           cfg.model.head_dropout, cfg.model.revision, cfg.model.trust_remote_code,
                                           strategy="frozen")
    _, total = count_params(model.encoder)
    tokenizer = AutoTokenizer.from_pretrained(resolved, revision=cfg.model.revision,
                                              trust_remote_code=cfg.model.trust_remote_code)
    dev = device_info()
    state = process_state()  # on N processes the probe's features are extracted in shards
    device = state.device if dev["device"] == "cuda" else torch.device("mps" if dev["device"] == "mps" else "cpu")
    idx = stratified_indices(None if regression else y_all, n_train, probe_sample, cfg.data.seed)
    sample = data.train if len(idx) == n_train else data.train.select(idx)
    probe_score, probe_record = probe_frozen_features(cfg, sample, y_all[idx], model, tokenizer, resolved,
                                                      pooling, device)
    meas.update(probe_record)
    model.to("cpu")
    del model

    # ---- compute
    meas["device"] = dev
    est = lengths = None
    if time_budget_s is not None:
        train_tok = tokenize(data.train, tokenizer, cfg.model.max_length)
        timing = estimate_full_epoch_seconds(cfg, train_tok, tokenizer, n_classes, device, timing_steps,
                                             seed=cfg.train.seed)
        lengths = run_lengths(cfg, timing["batches_per_epoch"])
        meas["timing"] = {**timing, **lengths}
        est = timing["est_full_epoch_s"]
    meas["measure_s"] = round(time.perf_counter() - t0, 2)
    signals = Signals(n_train=n_train, n_classes=n_classes, min_per_class=min_per_class, probe_score=probe_score,
                      probe_chance=chance, model_params=int(total), device=dev["device"],
                      gpu_memory_gb=dev.get("gpu_memory_gb"), time_budget_s=time_budget_s, est_full_epoch_s=est,
                      pairable=pairable(cfg, n_classes, min_per_class),
                      **(lengths or {}))
    return signals, meas


def run_lengths(cfg: RecipeConfig, batches_per_epoch: int) -> dict[str, float]:
    """What the time rule multiplies the epoch estimate by: the epochs a fine-tuning run trains
    (an explicit ``train.epochs``; else the epochs the step budget ``train.min_steps`` asks for,
    200 steps over 2 batches per epoch being 100; the rule never goes below ``min_epochs``) and
    the contrastive pair phase in full-epoch equivalents (``pair_rounds`` x 2 pairs per example,
    two sentences each, ``pair_epochs`` passes)."""
    t = cfg.train
    if t.epochs is not None:
        epochs = t.epochs
    else:
        epochs = max(1, math.ceil(t.min_steps / math.ceil(batches_per_epoch / t.gradient_accumulation_steps)))
    s = cfg.strategy
    return {"run_epochs": float(epochs), "contrastive_epochs": float(4 * s.pair_rounds * s.pair_epochs)}


def pairable(cfg: RecipeConfig, n_classes: int | None, min_per_class: int | None) -> bool:
    """Contrastive pairs are possible: a task the contrastive strategy supports, 2+ classes, 2+
    examples in every class."""
    from nlp_transfer.strategies.contrastive import SUPPORTED_TASKS
    return cfg.task in SUPPORTED_TASKS and bool(n_classes and n_classes >= 2 and (min_per_class or 0) >= 2)


def _budget_from(cfg: RecipeConfig) -> float | None:
    """A time budget configured on the recipe (``strategy.time_budget_s`` or ``train.time_budget_s``
    when the config has such a field)."""
    for section in (cfg.strategy, cfg.train):
        value = getattr(section, "time_budget_s", None)
        if value is not None:
            return float(value)
    return None


def resolve_auto(cfg: RecipeConfig, time_budget_s: float | None = None, thresholds: dict[str, float] | None = None,
                 probe_sample: int = PROBE_SAMPLE, verbose: bool = True, data: Any = None
                 ) -> tuple[RecipeConfig, AutoDecision]:
    """Measure the signals of ``cfg``, decide, and return ``(cfg with the chosen strategy, decision)``.

    ``cfg`` itself is not modified. ``strategy.unfreeze_top_k`` is kept only when the choice is
    ``lora`` (where it means the hybrid). ``verbose`` prints :func:`~nlp_transfer.selection.decide.explain`."""
    if cfg.strategy.name != "auto":
        raise ConfigError("resolve_auto", expected="a recipe with strategy=auto", found=f"strategy={cfg.strategy.name}",
                          fix="call resolve_auto only for strategy=auto")
    budget = time_budget_s if time_budget_s is not None else _budget_from(cfg)
    if thresholds is None:
        thresholds = getattr(cfg.strategy, "auto_thresholds", None)
    signals, meas = measure_signals(cfg, probe_sample=probe_sample, time_budget_s=budget, data=data)
    from nlp_transfer.model.features import process_state
    if process_state().num_processes > 1:  # timings differ per process: all follow the main's measurements
        from accelerate.utils import broadcast_object_list
        box = [(signals, meas)]
        broadcast_object_list(box, from_process=0)
        signals, meas = box[0]
    base = decide_strategy(signals, thresholds)
    decision = AutoDecision(**{k: getattr(base, k) for k in base.__dataclass_fields__}, measurements=meas)
    new = copy.deepcopy(cfg)
    new.strategy.name = decision.strategy
    if decision.strategy != "lora" and new.strategy.unfreeze_top_k:
        decision.reasons.append(f"strategy.unfreeze_top_k={new.strategy.unfreeze_top_k} dropped: it applies to "
                                f"lora (hybrid) and partial, not {decision.strategy}")
        new.strategy.unfreeze_top_k = None
    new.strategy.__post_init__()  # re-validate the concrete choice
    if verbose and is_main_process():  # through the run's logger: output.verbosity / --quiet apply
        configure_logging(cfg.output.verbosity).info(
            "[nlp_transfer] " + explain(decision).replace("\n", "\n[nlp_transfer] "))
    return new, decision
