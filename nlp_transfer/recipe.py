"""The recipe: one readable top-to-bottom training run.

config -> accelerator -> data -> model + strategy -> optimizer -> loop (with held-out
and train-sample evaluation, early stopping) -> best weights -> save -> push.

Why hand-written rather than ``transformers.Trainer``: Trainer cannot train a head on
cached frozen features, evaluates the train split only as a separate full pass, and
saves the last rather than the best adapter+head without extra callbacks. Everything
distributed (DDP/FSDP/DeepSpeed, mixed precision, gradient accumulation, exact gathered
metrics) comes from Accelerate.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from . import features as feats
from .config import RecipeConfig
from .data import PreparedData, column_numpy, prepare_data, tokenize
from .errors import ConfigError, NLPTransferError
from .loop import build_optimizer, clip_parameters, compiled_step_model, training_step
from .models import (DEFAULT_MODEL, TASKS, build_model, count_params, embedded_model_path, format_params,
                     weights_sha256)
from .strategies import get_strategy, restore_trainable, snapshot_trainable, write_json
from .tasks.common import EvalScores, stack_outputs, task_metrics, write_artifacts

FORMAT_VERSION = 1
#: Files a run may write at the top of its output folder (stale ones are removed on overwrite).
ARTIFACTS = {"model.safetensors", "head.safetensors", "adapter_model.safetensors", "adapter_config.json",
             "config.json", "nlp_transfer.json", "metrics.json", "recipe.yaml", "confusion_matrix.png",
             "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"}


@dataclass
class TrainResult:
    """What ``train()`` returns: where the model is, and its metrics."""
    output_dir: Path
    metrics: dict[str, Any]
    config: RecipeConfig
    history: list[dict[str, Any]] = field(default_factory=list)
    #: The trained module (best weights restored; PEFT-wrapped for lora), for inspection.
    model: Any = None

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        from .hub import push_to_hub
        return push_to_hub(self.output_dir, repo_id, **kwargs)


# --------------------------------------------------------------------------- helpers

class FeatureDataset(torch.utils.data.Dataset):
    """Cached features (a memory-mapped array) + labels, fetched a whole batch at a time.

    ``__getitems__`` lets the DataLoader slice the memmap once per batch instead of
    building one tensor per row, so 1M cached rows cost no per-row Python objects."""

    def __init__(self, x: np.ndarray, y: np.ndarray, label_dtype: torch.dtype, idx: np.ndarray | None = None) -> None:
        self.x, self.y, self.label_dtype = x, y, label_dtype
        self.idx = np.arange(len(y)) if idx is None else np.asarray(idx)

    def __len__(self) -> int:
        return len(self.idx)

    def __getitems__(self, positions: list[int]) -> dict[str, torch.Tensor]:
        rows = self.idx[np.asarray(positions)]
        return {"features": torch.from_numpy(np.array(self.x[rows], dtype=np.float32)),
                "labels": torch.as_tensor(self.y[rows], dtype=self.label_dtype)}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([i])


def _compute_metrics(names: list[str], preds: np.ndarray, refs: np.ndarray) -> dict[str, float]:
    from .metrics import compute
    return {k: float(v) for k, v in compute(names, predictions=preds, references=refs).items()}


def _collator(tokenizer: Any) -> Any:
    from transformers import DataCollatorWithPadding
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=None)


def _model_inputs(ds: Any) -> Any:
    keep = [c for c in ("input_ids", "attention_mask", "token_type_ids", "label") if c in ds.column_names]
    return ds.select_columns(keep)


def _evaluate(accelerator: Any, model: torch.nn.Module, loader: DataLoader, task: str,
              metric_names: list[str], desc: str, show: bool, *, label_names: list[str] | None = None,
              extra: dict[str, Any] | None = None, keep_outputs: bool = False) -> tuple[EvalScores, float]:
    """Score one split: gather logits and labels, then the task's ``compute_metrics`` hook
    (tasks/common.py). ``gather_for_metrics`` drops the samples Accelerate duplicated to
    even out the last batch, so every example counts exactly once on any process count;
    token-level outputs are first padded to one length across processes (labels with -100).
    Non-scalar reports (per-class, confusion matrix) are in ``scores.details``."""
    spec = TASKS[task]
    model.eval()
    all_logits, all_refs, losses = [], [], []
    with torch.inference_mode():
        for batch in tqdm(loader, desc=desc, disable=not show, leave=False):
            out = model(**batch)
            logits, refs = out["logits"].detach(), batch["labels"]
            if spec.token_level:
                logits = accelerator.pad_across_processes(logits, dim=1, pad_index=-100)
                refs = accelerator.pad_across_processes(refs, dim=1, pad_index=-100)
            logits, refs, loss = accelerator.gather_for_metrics(
                (logits, refs, out["loss"].detach().float().repeat(len(refs))))
            all_logits.append(logits.float().cpu().numpy())
            all_refs.append(refs.cpu().numpy())
            losses.append(loss.cpu().numpy())
    logits = stack_outputs(all_logits, 0.0)
    refs = stack_outputs(all_refs, -100)
    scores = task_metrics(spec, metric_names, logits, refs, label_names, extra)
    scores["loss"] = float(np.concatenate(losses).mean())
    scores["n"] = int(len(refs))
    if keep_outputs:
        scores.logits, scores.labels = logits, refs
    return scores, float(scores["loss"])


def format_table(m: dict[str, Any], best_metric: str) -> str:
    """The final printout: held-out vs train-sample metrics, gap, best epoch, params, time."""
    rows = []
    names = [k for k in m["held_out"] if k not in ("loss", "n")]
    w = max(len(n) for n in names + ["metric"]) + 2
    rows.append(f"{'metric':<{w}}{'held-out':>10}{'train-sample':>14}{'gap':>9}")
    for n in names:
        ho = m["held_out"][n]
        tr = m["train_sample"].get(n, float("nan"))
        rows.append(f"{n:<{w}}{ho:>10.4f}{tr:>14.4f}{tr - ho:>+9.4f}")
    rows.append("")
    rows.append(f"best epoch        {m['best_epoch']} of {m['epochs_run']} (by held-out {best_metric})")
    rows.append(f"stopped early     {'yes' if m['stopped_early'] else 'no'}")
    rows.append(f"strategy          {m['strategy']}  ({format_params(m['trainable_params'], m['total_params'])})")
    rows.append(f"held-out / train  {m['data']['held_out_size']} / {m['data']['train_size']} examples "
                f"({m['data'].get('duplicates_dropped', 0)} duplicates, {m['data'].get('leaked_dropped', 0)} leaks dropped)")
    rows.append(f"wall time         {m['wall_s']:.1f} s")
    line = "-" * max(len(r) for r in rows)
    return "\n".join([line] + rows + [line])


def _base_reference(resolved: str, name: str) -> dict[str, Any]:
    """How an output folder points back at the encoder it was trained from."""
    ref: dict[str, Any] = {"name": name, "path": resolved}
    emb = embedded_model_path()
    if emb is not None and Path(resolved) == emb:
        ref["name"] = DEFAULT_MODEL
        ref["embedded"] = True
    ref["sha256"] = weights_sha256(resolved) if Path(resolved).is_dir() else None
    return ref


def _prepare_output_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"output folder {out}", expected="a new or empty folder",
                          found="an existing folder with files",
                          fix="pass output.overwrite=true, or choose output.dir=<new folder>")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"output folder {out}", expected="a writable folder", found=f"{type(e).__name__}: {e.strerror}",
                          fix="choose output.dir=<a folder you can write>") from None


# --------------------------------------------------------------------------- the recipe

def train(cfg: RecipeConfig) -> TrainResult:
    """Run a recipe end to end and return where its output folder is."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed
    from transformers.trainer_pt_utils import LengthGroupedSampler

    import datasets
    import transformers

    from .preflight import check as preflight_check

    # Known-bad launch/strategy combinations fail here, before anything is written.
    preflight_check(cfg)
    t0 = time.time()
    auto_decision = None
    if cfg.strategy.name == "auto":
        # Measured, not guessed: examples per class, a linear probe of the frozen features,
        # model size vs the device, and the time budget decide (see nlp_transfer/auto.py).
        from .strategy_auto import resolve_auto
        cfg, auto_decision = resolve_auto(cfg)
    # Our own bars cover data, features, training and evaluation; library bars are noise.
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    spec = TASKS[cfg.task]
    hp = cfg.resolved_train()
    out_dir = Path(cfg.output.dir)

    # ---- accelerator ----------------------------------------------------------
    # split_batches: the configured batch size is the *global* batch, identical on 1 or N
    # processes, so results do not depend on the number of devices.
    report_to = [r for r in cfg.output.report_to if r and r != "none"]
    # Under torchrun without GPUs Accelerate only forms a gloo process group when told
    # it is on CPU; otherwise each process would silently train alone.
    cpu_ddp = os.environ.get("LOCAL_RANK") is not None and not torch.cuda.is_available()
    accelerator = Accelerator(
        cpu=cpu_ddp,
        # Must go through DataLoaderConfiguration: accelerate 1.15 still accepts a
        # ``split_batches=`` keyword but silently ignores it.
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        gradient_accumulation_steps=cfg.train.gradient_accumulation_steps,
        mixed_precision=None if cfg.train.mixed_precision == "auto" else cfg.train.mixed_precision,
        log_with=report_to or None, project_dir=str(out_dir / "logs"))
    main = accelerator.is_main_process
    show = main and cfg.output.progress_bars
    if accelerator.num_processes > 1 and cfg.train.batch_size % accelerator.num_processes:
        raise ConfigError("train.batch_size", expected=f"a multiple of the {accelerator.num_processes} processes",
                          found=str(cfg.train.batch_size), fix="pick a batch size divisible by the process count")
    set_seed(cfg.train.seed)
    if main:
        _prepare_output_dir(out_dir, cfg.output.overwrite or bool(cfg.output.resume))
    accelerator.wait_for_everyone()

    # ---- data -------------------------------------------------------------------
    with accelerator.main_process_first():
        data: PreparedData = spec.prepare(cfg.data) if spec.prepare else prepare_data(cfg.data, cfg.task)
    label_names = data.label_names
    num_labels = len(label_names) if label_names else None

    # ---- model + strategy ----------------------------------------------------
    strategy = get_strategy(cfg.strategy)
    model, resolved, pooling = build_model(
        cfg.model.name, cfg.task, num_labels, cfg.model.pooling, cfg.model.head_dropout, cfg.model.revision,
        cfg.model.trust_remote_code, strategy=cfg.strategy.name, label_names=label_names)
    from .models import load_tokenizer  # refuses a folder without tokenizer files (no silent empty vocab)
    tokenizer = load_tokenizer(resolved, revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code)
    limit = getattr(model.encoder.config, "max_position_embeddings", None)
    if limit and cfg.model.max_length > limit:
        raise ConfigError("model.max_length", expected=f"<= {limit} (the model's position limit)",
                          found=str(cfg.model.max_length), fix=f"pass model.max_length={min(limit, 512)}")
    def tok(ds: Any) -> Any:  # the task's tokenisation (NER: words -> sub-words with aligned labels)
        if spec.tokenize is not None:
            return spec.tokenize(ds, tokenizer, cfg.model.max_length, label_names, cfg.data)
        return tokenize(ds, tokenizer, cfg.model.max_length, cfg.data.num_proc)

    with accelerator.main_process_first():
        train_tok = tok(data.train)
        held_tok = tok(data.held_out)
        test_tok = tok(data.test) if (cfg.eval.use_test and data.test) else None
    # The untokenised splits are not needed any more: dropping them unmaps their Arrow files, so
    # the pages of their text stop counting in this process's memory (1M rows: ~100 MB).
    has_pair = data.has_pair
    data = dataclasses.replace(data, train=None, held_out=None, test=None)
    # A fixed, seeded sample of train, scored with the same metrics as held-out.
    rng = np.random.default_rng(cfg.train.seed)
    n_sample = min(cfg.eval.train_sample_size, len(train_tok))
    sample_idx = np.sort(rng.choice(len(train_tok), size=n_sample, replace=False)) if n_sample else np.array([], int)

    trained = strategy.apply(model)  # trainability is decided here, and only here
    trainable, total = count_params(trained)
    accelerator.print(f"[nlp_transfer] strategy={strategy.name} pooling={pooling} {format_params(trainable, total)}")
    collate = spec.collator(tokenizer) if spec.collator else _collator(tokenizer)
    # Class imbalance (tasks/imbalance.py): per-class loss weights, optional balanced sampler.
    from .tasks.imbalance import apply_class_weights, train_sampler
    class_weights = apply_class_weights(model, spec, cfg.train.class_weights, train_tok, label_names)
    if class_weights:
        accelerator.print(f"[nlp_transfer] class weights {class_weights}")

    # ---- loaders (frozen: cached features; others: length-grouped token batches) ----
    g = torch.Generator()
    if strategy.uses_feature_cache and spec.token_level:
        # ---- [tasks] frozen + token classification: cached per-token features (tasks/token_features.py)
        from .tasks.token_features import token_feature_loaders
        cache_dir = (Path(cfg.output.cache_dir) if cfg.output.cache_dir else feats.default_cache_dir()) \
            if cfg.strategy.cache_features else None
        key = {"model_id": resolved, "revision": cfg.model.revision, "pooling": "tokens",
               "weights_sha": _base_reference(resolved, cfg.model.name)["sha256"], "max_length": cfg.model.max_length}
        with accelerator.main_process_first():
            train_loader, held_loader, sample_loader, test_loader = token_feature_loaders(
                model, {"train": train_tok, "held_out": held_tok, "test": test_tok}, sample_idx, collate,
                cfg.train.batch_size, cfg.eval.batch_size, accelerator.device, key, cache_dir, show, g,
                accelerator.print)
    elif strategy.uses_feature_cache:
        cache_dir = None
        if cfg.strategy.cache_features:
            cache_dir = Path(cfg.output.cache_dir) if cfg.output.cache_dir else feats.default_cache_dir()
        key = {"model_id": resolved, "revision": cfg.model.revision, "weights_sha": _base_reference(resolved, cfg.model.name)["sha256"],
               "pooling": pooling, "max_length": cfg.model.max_length}
        device = accelerator.device
        model.to(device)
        split_feats: dict[str, np.ndarray] = {}
        # The main process computes and caches; the others then read the cache.
        with accelerator.main_process_first():
            for split, ds in (("train", train_tok), ("held_out", held_tok), ("test", test_tok)):
                if ds is None:
                    continue
                arr, hit = feats.cached_features(model, ds, collate, cfg.eval.batch_size, device, key, cache_dir,
                                                 f"features {split}", show)
                split_feats[split] = arr
                accelerator.print(f"[nlp_transfer] {split} features {'from cache' if hit else 'computed'}: {tuple(arr.shape)}")
        label_dtype = spec.label_dtype or torch.long

        def feature_set(split: str, idx: np.ndarray | None = None) -> FeatureDataset:
            ds = {"train": train_tok, "held_out": held_tok, "test": test_tok}[split]
            y = column_numpy(ds, "label")
            return FeatureDataset(split_feats[split], y, label_dtype, idx)

        def to_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return batch  # FeatureDataset.__getitems__ already returns a stacked batch

        balanced = train_sampler(cfg, spec, train_tok, g)  # train.balanced_sampler
        train_loader = DataLoader(feature_set("train"), batch_size=cfg.train.batch_size, shuffle=balanced is None,
                                  sampler=balanced, generator=g, collate_fn=to_batch)
        held_loader = DataLoader(feature_set("held_out"), batch_size=cfg.eval.batch_size, collate_fn=to_batch)
        sample_loader = DataLoader(feature_set("train", sample_idx), batch_size=cfg.eval.batch_size, collate_fn=to_batch)
        test_loader = DataLoader(feature_set("test"), batch_size=cfg.eval.batch_size, collate_fn=to_batch) \
            if test_tok is not None else None
    else:
        def sorted_eval(ds: Any) -> Any:
            # Evaluation order does not matter to the metrics: sort by length, pad little.
            return _model_inputs(ds.select(np.argsort(column_numpy(ds, "length"), kind="stable")))

        lengths = column_numpy(train_tok, "length").tolist()
        sampler = train_sampler(cfg, spec, train_tok, g)  # train.balanced_sampler
        if sampler is None:
            sampler = LengthGroupedSampler(cfg.train.batch_size, lengths=lengths, generator=g) \
                if cfg.train.group_by_length else torch.utils.data.RandomSampler(train_tok, generator=g)
        train_loader = DataLoader(_model_inputs(train_tok), batch_size=cfg.train.batch_size, sampler=sampler,
                                  collate_fn=collate)
        held_loader = DataLoader(sorted_eval(held_tok), batch_size=cfg.eval.batch_size, collate_fn=collate)
        sample_loader = DataLoader(sorted_eval(train_tok.select(sample_idx)), batch_size=cfg.eval.batch_size,
                                   collate_fn=collate)
        test_loader = DataLoader(sorted_eval(test_tok), batch_size=cfg.eval.batch_size, collate_fn=collate) \
            if test_tok is not None else None

    # ---- optimizer + schedule ----------------------------------------------------
    groups = strategy.param_groups(trained, hp["lr"], hp["head_lr"], cfg.train.weight_decay)
    optimizer, scheduler, total_steps = build_optimizer(groups, hp["head_lr"], accelerator.device, len(train_loader),
                                                        cfg.train, hp["epochs"])
    trained, optimizer, train_loader, held_loader, sample_loader, scheduler = accelerator.prepare(
        trained, optimizer, train_loader, held_loader, sample_loader, scheduler)
    if test_loader is not None:
        test_loader = accelerator.prepare(test_loader)
    step_model = compiled_step_model(trained, cfg.train.compile, strategy.uses_feature_cache, accelerator.print)
    clip_params = clip_parameters(accelerator, trained)

    metric_names = list(cfg.eval.metrics or spec.default_metrics)
    best_metric = cfg.eval.metric_for_best or spec.metric_for_best
    if best_metric not in metric_names and best_metric != "loss":
        metric_names.append(best_metric)
    if report_to:
        flat = {f"{s}.{k}": (v if isinstance(v, (int, float, str, bool)) else str(v))
                for s, sec in cfg.to_dict().items() if isinstance(sec, dict) for k, v in sec.items()}
        accelerator.init_trackers("nlp_transfer", config=flat)

    # ---- loop --------------------------------------------------------------------
    task_extra: dict[str, Any] = {}  # passed to the task's compute_metrics (e.g. tuned thresholds)
    history: list[dict[str, Any]] = []
    best = {"value": -math.inf, "epoch": 0, "step": 0, "weights": None, "held_out": None, "train_sample": None}
    sign = 1.0 if (spec.greater_is_better and best_metric != "loss") else -1.0
    bad_evals, stopped_early, step, epoch = 0, False, 0, 0
    gap_warned = False
    timing = {"eval_s": 0.0}  # phase times for metrics.json (read by benchmarks/run.py)

    def evaluate_now(epoch_f: float, train_loss: float) -> bool:
        """Score held-out and train sample; track the best; return True to stop early."""
        nonlocal bad_evals, gap_warned
        if accelerator.num_processes > 1:  # each process saw its slice of every batch
            train_loss = float(accelerator.reduce(torch.tensor(train_loss, device=accelerator.device), "mean"))
        t_eval = time.perf_counter()
        ho, _ = _evaluate(accelerator, trained, held_loader, cfg.task, metric_names, "eval held-out", show,
                          label_names=label_names, extra=task_extra)
        tr, _ = _evaluate(accelerator, trained, sample_loader, cfg.task, metric_names, "eval train-sample", show,
                          label_names=label_names, extra=task_extra) if n_sample else ({}, 0.0)
        timing["eval_s"] += time.perf_counter() - t_eval
        gap = (tr.get(best_metric, float("nan")) - ho[best_metric]) if tr else float("nan")
        if best_metric == "loss":
            gap = -gap
        rec = {"epoch": round(epoch_f, 3), "step": step, "train_loss": train_loss, "held_out": ho,
               "train_sample": tr, "gap": gap}
        history.append(rec)
        accelerator.log({**{f"held_out/{k}": v for k, v in ho.items()}, **{f"train_sample/{k}": v for k, v in tr.items()},
                         "gap": gap, "train/loss": train_loss}, step=step)
        accelerator.print(f"[nlp_transfer] epoch {epoch_f:.2f} step {step}: held-out {best_metric}={ho[best_metric]:.4f} "
                          f"train-sample {best_metric}={tr.get(best_metric, float('nan')):.4f} gap={gap:+.4f} "
                          f"loss={train_loss:.4f}")
        if not math.isnan(gap) and gap > cfg.eval.gap_warning and not gap_warned:
            gap_warned = True
            msg = (f"overfitting: train-sample {best_metric} is {gap:.3f} above held-out at epoch {epoch_f:.2f} "
                   f"(threshold eval.gap_warning={cfg.eval.gap_warning}); consider fewer epochs, a lower LR, "
                   f"more data or a strategy that trains fewer weights")
            if main:
                warnings.warn(msg, stacklevel=2)
                accelerator.print(f"[nlp_transfer] WARNING {msg}")
        value = sign * ho[best_metric]
        if value > best["value"] + cfg.eval.min_delta:
            best.update(value=value, epoch=epoch_f, step=step, held_out=ho, train_sample=tr,
                        weights=snapshot_trainable(accelerator.unwrap_model(trained)))
            bad_evals = 0
        else:
            bad_evals += 1
        return bad_evals >= hp["patience"]

    # ---- resume (nothing is lost: weights, optimizer, scheduler, RNG, data position) ----
    accelerator.register_save_state_pre_hook(ckpt.trainable_only_hook)
    start_epoch, skip_batches, resumed_from = 1, 0, None
    running, count = 0.0, 0
    resume_from = ckpt.resolve_resume(out_dir, cfg.output.resume)
    if resume_from is not None:
        state, best_weights = ckpt.load_checkpoint(accelerator, resume_from)
        diffs = ckpt.config_diff(state["config"], cfg.to_dict())
        if diffs and not cfg.output.force_resume:
            raise ConfigError(f"resuming from {resume_from}", expected="the same config as the interrupted run",
                              found="differences in " + "; ".join(diffs),
                              fix="restore those values, or pass output.force_resume=true")
        step, history, bad_evals = state["step"], state["history"], state["bad_evals"]
        gap_warned = state["gap_warned"]
        best.update({k: state["best"][k] for k in ("value", "epoch", "step", "held_out", "train_sample")},
                    weights=best_weights)
        start_epoch, skip_batches = state["epoch"], state["batch_in_epoch"]
        running, count = state["running_loss"], state["batch_in_epoch"]
        resumed_from = str(resume_from)
        accelerator.print(f"[nlp_transfer] resumed from {resume_from} (epoch {start_epoch}, step {step})")

    def checkpoint(epoch_now: int, batch_in_epoch: int) -> Path:
        state = {"epoch": epoch_now, "batch_in_epoch": batch_in_epoch, "step": step, "running_loss": running,
                 "bad_evals": bad_evals, "gap_warned": gap_warned, "history": history,
                 "best": {k: best[k] for k in ("value", "epoch", "step", "held_out", "train_sample")},
                 "config": cfg.to_dict()}
        return ckpt.save_checkpoint(accelerator, out_dir, step, state, best["weights"], cfg.output.keep_last_n,
                                    best["step"])

    def nonfinite(loss: torch.Tensor) -> Exception:  # a NaN/inf loss names the step and the way back
        return NLPTransferError(
            f"training loss at step {step + 1}", expected="a finite number", found=str(loss.item()),
            fix=f"lower train.lr or check the labels; last good checkpoint: {ckpt.latest_complete(out_dir) or 'none'}")

    t_loop = time.time()
    progress = tqdm(total=total_steps, initial=step, desc=f"train ({strategy.name})", disable=not show)
    done = step >= total_steps
    with ckpt.StopSignal() as stop:
        for epoch in range(start_epoch, hp["epochs"] + 1):
            if done:
                break
            trained.train()
            if strategy.uses_feature_cache:
                accelerator.unwrap_model(trained).encoder.eval()  # frozen encoder: no dropout, no stats
            g.manual_seed(cfg.train.seed + epoch)  # same data order on every process and on resume
            loader = train_loader
            if epoch == start_epoch and skip_batches:
                loader = accelerator.skip_first_batches(train_loader, skip_batches)
            else:
                running, count = 0.0, 0
            # Start the iterator (and fetch one batch) *before* restoring the RNG: building a
            # DataLoader iterator draws a base seed from the global RNG, which an uninterrupted
            # run did at the start of the epoch, before the checkpoint was taken.
            batches = iter(loader)
            first = next(batches, None)
            batches = itertools.chain([first] if first is not None else [], batches)
            if epoch == start_epoch and skip_batches and resumed_from:
                rng = torch.load(Path(resumed_from) / f"loop_rng_{accelerator.process_index}.pt", weights_only=True)
                torch.set_rng_state(rng["cpu"])
                if "cuda" in rng and torch.cuda.is_available():
                    torch.cuda.set_rng_state(rng["cuda"])
            for batch in batches:
                out = training_step(accelerator, trained, step_model, batch, optimizer, scheduler,
                                    cfg.train.max_grad_norm, nonfinite, clip_params=clip_params)
                loss = out["loss"]
                running += loss.detach().float().item()
                count += 1
                if not accelerator.sync_gradients:
                    continue
                step += 1
                progress.update(1)
                progress.set_postfix(loss=f"{running / count:.4f}")
                if cfg.eval.every_steps and step % cfg.eval.every_steps == 0:
                    if evaluate_now(epoch - 1 + count / len(train_loader), running / count):
                        stopped_early = done = True
                    trained.train()
                if cfg.train.max_steps and step >= cfg.train.max_steps:
                    done = True
                if done:
                    break
                if stop.received is not None:
                    path = checkpoint(epoch, count)
                    accelerator.print(f"[nlp_transfer] signal {stop.received}: checkpoint written to {path}; "
                                      f"continue with output.resume=auto")
                    raise SystemExit(128 + stop.received)
                if cfg.output.checkpoint_every_steps and step % cfg.output.checkpoint_every_steps == 0 \
                        and count < len(loader if loader is train_loader else train_loader):
                    checkpoint(epoch, count)
            if not cfg.eval.every_steps or not history or history[-1]["step"] != step:
                if evaluate_now(float(epoch), running / max(count, 1)):
                    stopped_early = True
                    done = True
            at_end = done or epoch == hp["epochs"]
            if not at_end and (cfg.output.checkpoint_every_epoch or stop.received is not None or (
                    cfg.output.checkpoint_every_steps and step % cfg.output.checkpoint_every_steps == 0)):
                checkpoint(epoch + 1, 0)
            if stop.received is not None and not at_end:
                accelerator.print(f"[nlp_transfer] signal {stop.received}: checkpoint written; "
                                  f"continue with output.resume=auto")
                raise SystemExit(128 + stop.received)
    progress.close()
    timing["loop_s"] = time.time() - t_loop

    # ---- best checkpoint, not the last -------------------------------------------
    unwrapped = accelerator.unwrap_model(trained)
    if best["weights"] is not None:
        restore_trainable(unwrapped, best["weights"])
    # The best epoch's per-class reports; the task's finalize hook (multi-label: tune thresholds on
    # the held-out outputs of the best weights) - one more held-out pass only when needed.
    held_details, finalized = getattr(best["held_out"], "details", None), {}
    if spec.finalize is not None or held_details is None:
        final_ho, _ = _evaluate(accelerator, trained, held_loader, cfg.task, metric_names, "eval held-out (best)",
                                show, label_names=label_names, extra=task_extra, keep_outputs=True)
        held_details = final_ho.details
        if spec.finalize is not None:
            finalized = spec.finalize(final_ho.logits, final_ho.labels, label_names) or {}
            task_extra.update(finalized.get("extra", {}))
    test_scores = None
    if test_loader is not None:
        test_scores, _ = _evaluate(accelerator, trained, test_loader, cfg.task, metric_names, "eval test", show,
                                   label_names=label_names, extra=task_extra)

    gap = (best["train_sample"].get(best_metric, float("nan")) - best["held_out"][best_metric]) \
        if best["train_sample"] else float("nan")
    metrics: dict[str, Any] = {
        "held_out": {k: v for k, v in best["held_out"].items() if k != "n"},
        "train_sample": {k: v for k, v in (best["train_sample"] or {}).items() if k != "n"},
        "gap": gap, "gap_metric": best_metric, "best_epoch": best["epoch"], "best_step": best["step"],
        "epochs_run": history[-1]["epoch"] if history else 0, "stopped_early": stopped_early,
        "trainable_params": trainable, "total_params": total, "wall_s": round(time.time() - t0, 2),
        "strategy": strategy.name, "task": cfg.task, "pooling": pooling, "num_processes": accelerator.num_processes,
        "data": {**data.stats, "train_sample_size": int(n_sample)},
        "hyperparameters": hp, "history": history, "resumed_from": resumed_from,
        **({"auto": auto_decision.to_dict()} if auto_decision is not None else {}),
        # setup: data, tokenisation, model, feature cache; train: the loop minus its evaluations
        "timing": {"setup_s": round(t_loop - t0, 3), "loop_s": round(timing["loop_s"], 3),
                   "eval_s": round(timing["eval_s"], 3), "train_s": round(timing["loop_s"] - timing["eval_s"], 3)},
    }
    if test_scores is not None:
        metrics["test"] = {k: v for k, v in test_scores.items() if k != "n"}
    if held_details:  # per-class P/R/F1 + confusion matrix, per-label or per-entity-type scores
        metrics["held_out_details"] = held_details
    if test_scores is not None and test_scores.details:
        metrics["test_details"] = test_scores.details
    metrics.update(finalized.get("metrics", {}))
    if class_weights:
        metrics["class_weights"] = class_weights

    # ---- save (main process only; written to a temp folder, then moved in) ----------
    if main:
        tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=out_dir))
        try:  # a failed write (full disk...) leaves no half-written folder behind
            meta = {"format_version": FORMAT_VERSION, "task": cfg.task, "strategy": strategy.name,
                    "base_model": _base_reference(resolved, cfg.model.name), "pooling": pooling,
                    "max_length": cfg.model.max_length, "label_names": label_names, "text_pair": has_pair,
                    "head": {"type": spec.head, "num_outputs": spec.num_outputs(num_labels), "dropout": cfg.model.head_dropout},
                    "trust_remote_code": cfg.model.trust_remote_code}
            meta.update(strategy.save(unwrapped, tmp))
            meta.update(finalized.get("meta", {}))  # e.g. multi-label thresholds, used by load()
            write_artifacts(metrics.get("held_out_details", {}), tmp)  # confusion_matrix.png
            tokenizer.save_pretrained(tmp)
            (tmp / "recipe.yaml").write_text(cfg.to_yaml())
            write_json(tmp / "nlp_transfer.json", meta)
            metrics["wall_s"] = round(time.time() - t0, 2)
            write_json(tmp / "metrics.json", metrics)  # last: its presence marks a complete folder
            # metrics.json marks a complete folder: remove it first, so a crash mid-move never
            # pairs old metrics with new weights; then drop stale artifacts of an earlier run.
            (out_dir / "metrics.json").unlink(missing_ok=True)
            fresh = {p.name for p in tmp.iterdir()}
            for stale in ARTIFACTS - fresh:
                (out_dir / stale).unlink(missing_ok=True)
            for p in sorted(tmp.iterdir(), key=lambda p: p.name == "metrics.json"):
                target = out_dir / p.name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                os.replace(p, target)
            tmp.rmdir()
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        accelerator.print(format_table(metrics, best_metric))
        accelerator.print(f"[nlp_transfer] saved to {out_dir}")
    accelerator.wait_for_everyone()
    accelerator.end_training()

    result = TrainResult(output_dir=out_dir, metrics=metrics, config=cfg, history=history, model=unwrapped)
    if cfg.hub.push and main:
        result.push_to_hub(cfg.hub.repo_id, private=cfg.hub.private, revision=cfg.hub.revision, merge=cfg.hub.merge,
                           base_model_id=cfg.hub.base_model_id)
    return result


def save_config_yaml(cfg: RecipeConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
