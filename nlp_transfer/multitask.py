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

import dataclasses
import math
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import yaml
from torch import nn

from .config import DataConfig, RecipeConfig, _closest, apply_overrides
from .errors import ConfigError, DataError, ModelError
from .loop import build_optimizer, clip_parameters, compiled_step_model, training_step

SAMPLING = ("proportional", "temperature", "uniform")
_BASE_SECTIONS = ("model", "strategy", "train", "eval", "output", "hub")


# --------------------------------------------------------------------------- config

@dataclass
class TaskEntry:
    """One task of a multi-task recipe."""
    name: str
    task: str = "sequence_classification"
    data: DataConfig | dict | str = field(default_factory=DataConfig)
    #: Reader for files the core does not read: "trec" (coarse labels), "trec_fine".
    reader: str | None = None
    #: Multiplies this task's loss.
    loss_weight: float = 1.0
    #: Weight of this task's metric_for_best in the combination that drives early stopping.
    combine_weight: float = 1.0
    metrics: list[str] | None = None
    metric_for_best: str | None = None

    def __post_init__(self) -> None:
        from .models import TASKS
        if self.task not in TASKS or self.task == "multi_task":
            raise ConfigError(f"tasks.{self.name}.task", expected=f"one of {sorted(TASKS)}", found=repr(self.task)
                              + _closest(str(self.task), list(TASKS)), fix="pick a single-task type for each task")
        if isinstance(self.data, str):
            self.data = DataConfig(name=self.data)
        elif isinstance(self.data, dict):
            valid = [f.name for f in fields(DataConfig)]
            for k in self.data:
                if k not in valid:
                    raise ConfigError(f"unknown config key 'tasks.{self.name}.data.{k}'", expected=f"one of {valid}",
                                      found=repr(k) + _closest(k, valid), fix="use a valid data.* key")
            self.data = DataConfig(**self.data)
        if self.reader is not None and self.reader not in READERS:
            raise ConfigError(f"tasks.{self.name}.reader", expected=f"one of {sorted(READERS)} or null",
                              found=repr(self.reader) + _closest(str(self.reader), list(READERS)),
                              fix="leave it out for files the core reads (csv/tsv/json/parquet/conll)")
        for key in ("loss_weight", "combine_weight"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ConfigError(f"tasks.{self.name}.{key}", expected="a number >= 0", found=repr(v),
                                  fix=f"pass tasks.{self.name}.{key}=1.0")
        if isinstance(self.metrics, str):
            self.metrics = [m.strip() for m in self.metrics.split(",") if m.strip()]


@dataclass
class MultiTaskSettings:
    """How tasks share the steps and how their scores combine."""
    sampling: str = "proportional"
    temperature: float = 2.0

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLING:
            raise ConfigError("multitask.sampling", expected=f"one of {list(SAMPLING)}",
                              found=repr(self.sampling) + _closest(str(self.sampling), SAMPLING),
                              fix="pass multitask.sampling=proportional")
        if isinstance(self.temperature, str):
            self.temperature = float(self.temperature)
        if not isinstance(self.temperature, (int, float)) or self.temperature <= 0:
            raise ConfigError("multitask.temperature", expected="a number > 0", found=repr(self.temperature),
                              fix="pass multitask.temperature=2.0")


@dataclass
class MultiTaskConfig:
    """The shared sections (a ``RecipeConfig`` whose data/task are unused) + the tasks."""
    base: RecipeConfig
    tasks: dict[str, TaskEntry]
    multitask: MultiTaskSettings = field(default_factory=MultiTaskSettings)

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ConfigError("tasks", expected="at least one task", found="none",
                              fix="add tasks: {name: {task: ..., data: {...}}}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MultiTaskConfig":
        valid = list(_BASE_SECTIONS) + ["tasks", "multitask"]
        for k in d:
            if k not in valid:
                raise ConfigError(f"unknown config key '{k}'", expected=f"one of {valid}",
                                  found=repr(k) + _closest(k, valid), fix="remove or rename the key")
        base = RecipeConfig.from_dict({k: d[k] for k in _BASE_SECTIONS if k in d})
        tasks_d = d.get("tasks") or {}
        if not isinstance(tasks_d, dict):
            raise ConfigError("tasks", expected="a mapping {name: {task:, data:}}", found=type(tasks_d).__name__,
                              fix="write tasks: {sentiment: {task: sequence_classification, data: {...}}}")
        tasks = {}
        valid_t = [f.name for f in fields(TaskEntry) if f.name != "name"]
        for name, entry in tasks_d.items():
            entry = dict(entry or {})
            for k in entry:
                if k not in valid_t:
                    raise ConfigError(f"unknown config key 'tasks.{name}.{k}'", expected=f"one of {valid_t}",
                                      found=repr(k) + _closest(k, valid_t), fix="use a valid task key")
            tasks[str(name)] = TaskEntry(name=str(name), **entry)
        mt = d.get("multitask") or {}
        valid_m = [f.name for f in fields(MultiTaskSettings)]
        for k in mt:
            if k not in valid_m:
                raise ConfigError(f"unknown config key 'multitask.{k}'", expected=f"one of {valid_m}",
                                  found=repr(k) + _closest(k, valid_m), fix="use a valid multitask.* key")
        return cls(base=base, tasks=tasks, multitask=MultiTaskSettings(**mt))

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.base.to_dict().items() if k in _BASE_SECTIONS}
        d["multitask"] = dataclasses.asdict(self.multitask)
        d["tasks"] = {n: {k: v for k, v in dataclasses.asdict(t).items() if k != "name"} for n, t in self.tasks.items()}
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def only(self, task: str, output_dir: str | None = None) -> "MultiTaskConfig":
        """The same recipe restricted to one task (the single-task baseline)."""
        base = RecipeConfig.from_dict(self.base.to_dict())
        if output_dir:
            base.output.dir = output_dir
        return MultiTaskConfig(base=base, tasks={task: self.tasks[task]}, multitask=self.multitask)


def apply_multitask_overrides(d: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``key=value`` overrides: ``tasks.<name>.<key>[.<data key>]`` and ``multitask.<key>`` here,
    everything else (``strategy=lora``, ``train.lr=...``) through the core's rules."""
    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items()}
    core: list[str] = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError("override", expected="key=value", found=repr(item), fix="write e.g. strategy=lora")
        key = key.strip().lstrip("-")
        value = yaml.safe_load(raw) if raw.strip() else None
        parts = key.split(".")
        if parts[0] == "multitask" and len(parts) == 2:
            d["multitask"] = {**(d.get("multitask") or {}), parts[1]: value}
        elif parts[0] == "tasks" and len(parts) in (3, 4):
            tasks = {n: dict(e or {}) for n, e in (d.get("tasks") or {}).items()}
            if parts[1] not in tasks:
                raise ConfigError(f"override '{key}'", expected=f"a task among {sorted(tasks)}", found=repr(parts[1])
                                  + _closest(parts[1], list(tasks)), fix="check the task name")
            entry = tasks[parts[1]]
            if len(parts) == 4:
                if parts[2] != "data":
                    raise ConfigError(f"override '{key}'", expected="tasks.<name>.data.<key>", found=repr(key),
                                      fix="e.g. tasks.sentiment.data.max_train_samples=1000")
                data = entry.get("data") or {}
                data = {"name": data} if isinstance(data, str) else dict(data)
                data[parts[3]] = value
                entry["data"] = data
            else:
                entry[parts[2]] = value
            d["tasks"] = tasks
        else:
            core.append(item)
    if core:
        base = apply_overrides({k: d[k] for k in _BASE_SECTIONS if k in d}, core)
        d.update(base)
    return d


def load_multitask_config(path: str | Path, overrides: list[str] | None = None) -> MultiTaskConfig:
    """A multi-task YAML preset with ``key=value`` overrides."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("config file", expected="an existing YAML file", found=str(p),
                          fix="pass recipes/configs/multitask_<preset>.yaml")
    d = yaml.safe_load(p.read_text()) or {}
    if not isinstance(d, dict) or "tasks" not in d:
        raise ConfigError(f"config file {p}", expected="a multi-task preset with a 'tasks' mapping",
                          found=f"keys {sorted(d) if isinstance(d, dict) else type(d).__name__}",
                          fix="add tasks: {name: {task:, data:}}")
    return MultiTaskConfig.from_dict(apply_multitask_overrides(d, overrides or []))


def is_multitask_config(path: str | Path) -> bool:
    """True for a YAML preset with a top-level ``tasks`` mapping."""
    try:
        d = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(d, dict) and isinstance(d.get("tasks"), dict)


# --------------------------------------------------------------------------- readers

def read_trec(cfg: DataConfig, fine: bool = False) -> Any:
    """TREC question classification (Li & Roth): latin-1 lines ``COARSE:fine question``.

    ``train_5500.label`` is train and ``TREC_10.label`` test (a folder), or one file as train.
    The label is the coarse class (6: ABBR, DESC, ENTY, HUM, LOC, NUM) or, with ``fine``,
    ``COARSE:fine`` (50)."""
    from datasets import Dataset, DatasetDict

    path = Path(cfg.name).expanduser()
    if path.is_dir():
        files = {}
        for p in sorted(path.iterdir()):
            n = p.name.lower()
            if not p.is_file() or not n.endswith(".label"):
                continue
            files.setdefault("train" if "train" in n else "test", p)
        if "train" not in files:
            raise DataError(f"TREC folder {path}", expected="train_5500.label (and TREC_10.label)",
                            found=f"files {sorted(p.name for p in path.iterdir())[:8]}", fix="point to the trec folder")
    elif path.is_file():
        files = {"train": path}
    else:
        raise DataError("TREC data path", expected="an existing folder or file", found=f"'{path}' does not exist",
                        fix="check the path")
    out = {}
    for split, f in files.items():
        texts, labels = [], []
        for i, line in enumerate(f.read_text(encoding=cfg.encoding or "latin-1").splitlines(), 1):
            if not line.strip():
                continue
            label, _, text = line.partition(" ")
            if ":" not in label or not text.strip():
                raise DataError(f"TREC {f.name} line {i} ({line[:60]!r})", expected="'COARSE:fine question'",
                                found=repr(label), fix="check the file")
            labels.append(label if fine else label.split(":")[0])
            texts.append(text.strip())
        out[split] = Dataset.from_dict({cfg.text_column: texts, cfg.label_column: labels})
    return DatasetDict(out)


#: Readers for task data the core does not read itself: name -> fn(DataConfig) -> DatasetDict.
READERS: dict[str, Callable[[DataConfig], Any]] = {
    "trec": read_trec,
    "trec_fine": lambda cfg: read_trec(cfg, fine=True),
}


# --------------------------------------------------------------------------- model

class MultiHead(nn.Module):
    """One head per task in a ``ModuleDict``; ``forward(x, task=name)`` runs that task's head.

    A single module (not the dict itself) so PEFT's ``modules_to_save=["head"]`` wraps and
    saves every head at once."""

    def __init__(self, heads: dict[str, nn.Module]) -> None:
        super().__init__()
        self.heads = nn.ModuleDict(heads)

    def forward(self, x: torch.Tensor, task: str) -> torch.Tensor:
        return self.heads[task](x)


class MultiTaskModel(nn.Module):
    """Shared encoder -> (pooling unless the task is token-level) -> the task's head.

    Same attribute names as ``TransferModel`` (``encoder``, ``head``, ``pooling``, ``config``),
    so every strategy (which parameters train, LR groups, saving) applies unchanged."""

    def __init__(self, encoder: nn.Module, head: MultiHead, pooling: str, tasks: dict[str, str]) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.pooling = pooling
        self.tasks = dict(tasks)  # name -> task type
        self.task = "multi_task"
        self.config = encoder.config

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               token_type_ids: torch.Tensor | None = None, token_level: bool = False) -> torch.Tensor:
        from .models import pool
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**kwargs).last_hidden_state
        return hidden if token_level else pool(hidden, attention_mask, self.pooling)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                features: torch.Tensor | None = None, task: str | None = None, **_: Any) -> dict[str, torch.Tensor]:
        from .models import TASKS
        if task not in self.tasks:
            raise ModelError("multi-task forward", expected=f"task= one of {sorted(self.tasks)}", found=repr(task),
                             fix="pass task=<name>")
        spec = TASKS[self.tasks[task]]
        if features is None:
            features = self.encode(input_ids, attention_mask, token_type_ids, token_level=spec.token_level)
        logits = self.head(features, task=task)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = spec.loss(logits, labels)
        return out


class TaskView(nn.Module):
    """A multi-task model seen as a single-task one (``forward`` fixes ``task``), so the
    single-task ``Predictor`` and the task hooks work unchanged."""

    def __init__(self, model: MultiTaskModel, task: str) -> None:
        super().__init__()
        self.model = model
        self.task_name = task

    def forward(self, **kwargs: Any) -> dict[str, torch.Tensor]:
        return self.model(**kwargs, task=self.task_name)


# --------------------------------------------------------------------------- sampling

def task_probabilities(sizes: dict[str, int], sampling: str = "proportional", temperature: float = 2.0
                       ) -> dict[str, float]:
    """Probability of drawing each task at a step: ``n_t`` (proportional), ``n_t ** (1/T)``
    (temperature) or equal (uniform), normalised. ``sizes`` are numbers of training batches."""
    names = list(sizes)
    n = np.asarray([max(int(sizes[k]), 0) for k in names], dtype=np.float64)
    if sampling == "uniform":
        w = (n > 0).astype(np.float64)
    elif sampling == "temperature":
        w = n ** (1.0 / float(temperature))
    elif sampling == "proportional":
        w = n
    else:
        raise ConfigError("multitask.sampling", expected=f"one of {list(SAMPLING)}", found=repr(sampling),
                          fix="pass multitask.sampling=proportional")
    if w.sum() <= 0:
        raise DataError("multi-task training data", expected="at least one task with training batches",
                        found="none", fix="check the tasks' data")
    return {k: float(v) for k, v in zip(names, w / w.sum())}


def task_schedule(probs: dict[str, float], steps: int, seed: int) -> list[str]:
    """The seeded sequence of tasks for ``steps`` batches (identical on every process)."""
    rng = np.random.default_rng(seed)
    names = list(probs)
    return [names[i] for i in rng.choice(len(names), size=steps, p=np.asarray([probs[k] for k in names]))]


def combine_scores(values: dict[str, float], weights: dict[str, float], signs: dict[str, float]) -> float:
    """Weighted mean of each task's (sign-adjusted: higher is better) best-metric value."""
    tot = sum(weights[k] for k in values)
    if tot <= 0:
        return float(np.mean([signs[k] * values[k] for k in values]))
    return float(sum(weights[k] * signs[k] * values[k] for k in values) / tot)


# --------------------------------------------------------------------------- training

@dataclass
class _TaskRun:
    name: str
    entry: TaskEntry
    spec: Any
    data: Any
    label_names: list[str] | None
    train_tok: Any = None
    held_tok: Any = None
    test_tok: Any = None
    sample_idx: Any = None
    loaders: dict[str, Any] = field(default_factory=dict)
    metric_names: list[str] = field(default_factory=list)
    best_metric: str = ""
    sign: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)
    gap_warned: bool = False


def _prepare_task_data(entry: TaskEntry) -> Any:
    from .data import prepare_data
    from .models import TASKS
    spec = TASKS[entry.task]
    if entry.reader:
        if spec.prepare is not None:
            raise ConfigError(f"tasks.{entry.name}.reader", expected="only for sequence_classification/regression",
                              found=f"reader with task={entry.task}", fix="remove the reader")
        return prepare_data(entry.data, entry.task, raw=READERS[entry.reader](entry.data))
    return spec.prepare(entry.data) if spec.prepare else prepare_data(entry.data, entry.task)


def train_multitask(cfg: MultiTaskConfig) -> Any:
    """Train one shared encoder with a head per task; returns a ``recipe.TrainResult``."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm
    from transformers.trainer_pt_utils import LengthGroupedSampler

    import datasets
    import transformers

    from . import features as feats
    from .data import column_numpy, tokenize
    from .models import (HEADS, TASKS, count_params, declared_pooling, format_params, load_encoder,
                         load_tokenizer, resolve_model)
    from .recipe import (FORMAT_VERSION, FeatureDataset, TrainResult, _base_reference, _collator, _evaluate,
                         _model_inputs, _prepare_output_dir, format_table)
    from .strategies import get_strategy, restore_trainable, snapshot_trainable, write_json
    from .tasks.common import write_artifacts

    t0 = time.time()
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    rc = cfg.base
    hp = rc.resolved_train()
    out_dir = Path(rc.output.dir)
    report_to = [r for r in rc.output.report_to if r and r != "none"]
    accelerator = Accelerator(split_batches=True, gradient_accumulation_steps=rc.train.gradient_accumulation_steps,
                              mixed_precision=None if rc.train.mixed_precision == "auto" else rc.train.mixed_precision,
                              log_with=report_to or None, project_dir=str(out_dir / "logs"))
    main = accelerator.is_main_process
    show = main and rc.output.progress_bars
    if rc.train.class_weights not in (None, "none") or rc.train.balanced_sampler:
        raise ConfigError("train.class_weights / train.balanced_sampler", expected="unset in a multi-task recipe",
                          found="set", fix="remove them (they apply to single-task recipes)")
    set_seed(rc.train.seed)
    if main:
        _prepare_output_dir(out_dir, rc.output.overwrite)
    accelerator.wait_for_everyone()

    # ---- data (per task) -----------------------------------------------------------
    runs: dict[str, _TaskRun] = {}
    with accelerator.main_process_first():
        for name, entry in cfg.tasks.items():
            data = _prepare_task_data(entry)
            runs[name] = _TaskRun(name, entry, TASKS[entry.task], data, data.label_names)

    # ---- shared encoder + one head per task ----------------------------------------
    strategy = get_strategy(rc.strategy)
    path = resolve_model(rc.model.name)
    encoder = load_encoder(path, rc.model.revision, rc.model.trust_remote_code)
    pooling = rc.model.pooling
    if pooling == "auto":
        pooling = declared_pooling(path) or ("mean" if rc.strategy.name == "frozen" else "cls")
    hidden = encoder.config.hidden_size
    heads = {n: HEADS[r.spec.head](hidden, r.spec.num_outputs(len(r.label_names) if r.label_names else None),
                                   rc.model.head_dropout) for n, r in runs.items()}
    model = MultiTaskModel(encoder, MultiHead(heads), pooling, {n: r.entry.task for n, r in runs.items()})
    tokenizer = load_tokenizer(path, revision=rc.model.revision, trust_remote_code=rc.model.trust_remote_code)
    limit = getattr(encoder.config, "max_position_embeddings", None)
    if limit and rc.model.max_length > limit:
        raise ConfigError("model.max_length", expected=f"<= {limit} (the model's position limit)",
                          found=str(rc.model.max_length), fix=f"pass model.max_length={min(limit, 512)}")

    rng = np.random.default_rng(rc.train.seed)
    with accelerator.main_process_first():
        for r in runs.values():
            def tok(ds: Any, r: _TaskRun = r) -> Any:
                if r.spec.tokenize is not None:
                    return r.spec.tokenize(ds, tokenizer, rc.model.max_length, r.label_names, r.entry.data)
                return tokenize(ds, tokenizer, rc.model.max_length, getattr(r.entry.data, "num_proc", None))
            r.train_tok, r.held_tok = tok(r.data.train), tok(r.data.held_out)
            r.test_tok = tok(r.data.test) if (rc.eval.use_test and r.data.test is not None) else None
            n_sample = min(rc.eval.train_sample_size, len(r.train_tok))
            r.sample_idx = np.sort(rng.choice(len(r.train_tok), size=n_sample, replace=False)) if n_sample \
                else np.array([], int)

    trained = strategy.apply(model)
    trainable, total = count_params(trained)
    accelerator.print(f"[nlp_transfer] multi-task {list(runs)} strategy={strategy.name} pooling={pooling} "
                      f"{format_params(trainable, total)}")

    # ---- loaders -------------------------------------------------------------------
    def with_task(collate: Callable, name: str) -> Callable:
        def fn(rows: Any) -> dict[str, Any]:
            batch = collate(rows)
            batch = dict(batch)
            batch["task"] = name
            return batch
        return fn

    cache_dir = None
    if strategy.uses_feature_cache and rc.strategy.cache_features:
        cache_dir = Path(rc.output.cache_dir) if rc.output.cache_dir else feats.default_cache_dir()
    key = {"model_id": path, "revision": rc.model.revision, "weights_sha": _base_reference(path, rc.model.name)["sha256"],
           "pooling": pooling, "max_length": rc.model.max_length}
    for i, (name, r) in enumerate(runs.items()):
        g = torch.Generator().manual_seed(rc.train.seed + 1000 * i)
        collate = r.spec.collator(tokenizer) if r.spec.collator else _collator(tokenizer)
        splits = {"train": r.train_tok, "held_out": r.held_tok, "test": r.test_tok}
        if strategy.uses_feature_cache and r.spec.token_level:
            from .tasks.token_features import token_feature_loaders
            with accelerator.main_process_first():
                tr, ho, sa, te = token_feature_loaders(model, splits, r.sample_idx, collate, rc.train.batch_size,
                                                       rc.eval.batch_size, accelerator.device,
                                                       {**key, "pooling": "tokens"}, cache_dir, show, g,
                                                       accelerator.print)
            loaders = {"train": tr, "held_out": ho, "sample": sa, "test": te}
            for k, dl in loaders.items():
                if dl is not None:
                    dl.collate_fn = with_task(dl.collate_fn, name)
        elif strategy.uses_feature_cache:
            model.to(accelerator.device)
            arrs = {}
            with accelerator.main_process_first():
                for split, ds in splits.items():
                    if ds is None:
                        continue
                    arrs[split], hit = feats.cached_features(model, ds, collate, rc.eval.batch_size, accelerator.device,
                                                             key, cache_dir, f"features {name}/{split}", show)
                    accelerator.print(f"[nlp_transfer] {name}/{split} features "
                                      f"{'from cache' if hit else 'computed'}: {tuple(arrs[split].shape)}")
            dtype = r.spec.label_dtype or torch.long

            def fset(split: str, idx: Any = None, r: _TaskRun = r, arrs: dict = arrs, dtype: Any = dtype) -> Any:
                ds = {"train": r.train_tok, "held_out": r.held_tok, "test": r.test_tok}[split]
                return FeatureDataset(arrs[split], column_numpy(ds, "label"), dtype, idx)

            ident = with_task(lambda b: b, name)
            loaders = {"train": DataLoader(fset("train"), batch_size=rc.train.batch_size, shuffle=True, generator=g,
                                           collate_fn=ident),
                       "held_out": DataLoader(fset("held_out"), batch_size=rc.eval.batch_size, collate_fn=ident),
                       "sample": DataLoader(fset("train", r.sample_idx), batch_size=rc.eval.batch_size,
                                            collate_fn=ident),
                       "test": DataLoader(fset("test"), batch_size=rc.eval.batch_size, collate_fn=ident)
                       if r.test_tok is not None else None}
        else:
            def sorted_eval(ds: Any) -> Any:
                return _model_inputs(ds.select(np.argsort(column_numpy(ds, "length"), kind="stable")))
            lengths = column_numpy(r.train_tok, "length").tolist()
            sampler = LengthGroupedSampler(rc.train.batch_size, lengths=lengths, generator=g) \
                if rc.train.group_by_length else torch.utils.data.RandomSampler(r.train_tok, generator=g)
            c = with_task(collate, name)
            loaders = {"train": DataLoader(_model_inputs(r.train_tok), batch_size=rc.train.batch_size, sampler=sampler,
                                           collate_fn=c),
                       "held_out": DataLoader(sorted_eval(r.held_tok), batch_size=rc.eval.batch_size, collate_fn=c),
                       "sample": DataLoader(sorted_eval(r.train_tok.select(r.sample_idx)),
                                            batch_size=rc.eval.batch_size, collate_fn=c),
                       "test": DataLoader(sorted_eval(r.test_tok), batch_size=rc.eval.batch_size, collate_fn=c)
                       if r.test_tok is not None else None}
        r.loaders = loaders
        r.metric_names = list(r.entry.metrics or r.spec.default_metrics)
        r.best_metric = r.entry.metric_for_best or r.spec.metric_for_best
        if r.best_metric not in r.metric_names and r.best_metric != "loss":
            r.metric_names.append(r.best_metric)
        r.sign = 1.0 if (r.spec.greater_is_better and r.best_metric != "loss") else -1.0

    # ---- optimizer, schedule, prepare -------------------------------------------------
    groups = strategy.param_groups(trained, hp["lr"], hp["head_lr"], rc.train.weight_decay)
    batches_per_epoch = {n: len(r.loaders["train"]) for n, r in runs.items()}
    steps_in_epoch = sum(batches_per_epoch.values())
    optimizer, scheduler, total_steps = build_optimizer(groups, hp["head_lr"], accelerator.device, steps_in_epoch,
                                                        rc.train, hp["epochs"])
    trained, optimizer, scheduler = accelerator.prepare(trained, optimizer, scheduler)
    step_model = compiled_step_model(trained, rc.train.compile, strategy.uses_feature_cache, accelerator.print)
    clip_params = clip_parameters(accelerator, trained)
    for r in runs.values():
        for k, dl in list(r.loaders.items()):
            if dl is not None:
                r.loaders[k] = accelerator.prepare(dl)
    probs = task_probabilities(batches_per_epoch, cfg.multitask.sampling, cfg.multitask.temperature)
    accelerator.print(f"[nlp_transfer] task sampling ({cfg.multitask.sampling}): "
                      + ", ".join(f"{k} {v:.2f}" for k, v in probs.items()))
    if report_to:
        accelerator.init_trackers("nlp_transfer", config={"tasks": ",".join(runs), "strategy": strategy.name})

    # ---- loop ------------------------------------------------------------------------
    loss_w = {n: float(r.entry.loss_weight) for n, r in runs.items()}
    comb_w = {n: float(r.entry.combine_weight) for n, r in runs.items()}
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"value": -math.inf, "epoch": 0, "step": 0, "weights": None, "scores": None}
    bad_evals, stopped_early, step = 0, False, 0
    iters: dict[str, Any] = {}

    def next_batch(name: str) -> dict[str, Any]:
        try:
            return next(iters[name])
        except (KeyError, StopIteration):
            iters[name] = iter(runs[name].loaders["train"])
            return next(iters[name])

    def evaluate_all(epoch_f: float, train_losses: dict[str, float]) -> bool:
        nonlocal bad_evals
        scores: dict[str, dict[str, Any]] = {}
        for n, r in runs.items():
            ho, _ = _evaluate(accelerator, trained, r.loaders["held_out"], r.entry.task, r.metric_names,
                              f"eval {n} held-out", show, label_names=r.label_names, extra=r.extra)
            tr, _ = _evaluate(accelerator, trained, r.loaders["sample"], r.entry.task, r.metric_names,
                              f"eval {n} train-sample", show, label_names=r.label_names, extra=r.extra) \
                if len(r.sample_idx) else ({}, 0.0)
            gap = (tr.get(r.best_metric, float("nan")) - ho[r.best_metric]) if tr else float("nan")
            if r.best_metric == "loss":
                gap = -gap
            scores[n] = {"held_out": ho, "train_sample": tr, "gap": gap}
            if not math.isnan(gap) and gap > rc.eval.gap_warning and not r.gap_warned:
                r.gap_warned = True
                msg = (f"overfitting on task '{n}': train-sample {r.best_metric} is {gap:.3f} above held-out at "
                       f"epoch {epoch_f:.2f} (eval.gap_warning={rc.eval.gap_warning}); consider fewer epochs, a "
                       f"lower LR, a smaller loss_weight for this task or more data")
                if main:
                    warnings.warn(msg, stacklevel=2)
                    accelerator.print(f"[nlp_transfer] WARNING {msg}")
        combined = combine_scores({n: s["held_out"][runs[n].best_metric] for n, s in scores.items()}, comb_w,
                                  {n: r.sign for n, r in runs.items()})
        tr_vals = {n: s["train_sample"].get(runs[n].best_metric) for n, s in scores.items() if s["train_sample"]}
        combined_tr = combine_scores(tr_vals, comb_w, {n: r.sign for n, r in runs.items()}) \
            if len(tr_vals) == len(scores) else float("nan")
        rec = {"epoch": round(epoch_f, 3), "step": step, "train_loss": train_losses, "combined": combined,
               "combined_train_sample": combined_tr, "gap": combined_tr - combined,
               "tasks": {n: {"held_out": dict(s["held_out"]), "train_sample": dict(s["train_sample"]), "gap": s["gap"]}
                         for n, s in scores.items()}}
        history.append(rec)
        accelerator.log({"combined": combined, **{f"{n}/held_out/{k}": v for n, s in scores.items()
                                                   for k, v in s["held_out"].items()}}, step=step)
        accelerator.print(f"[nlp_transfer] epoch {epoch_f:.2f} step {step}: combined={combined:.4f} " + " ".join(
            f"{n}.{runs[n].best_metric}={s['held_out'][runs[n].best_metric]:.4f} (gap {s['gap']:+.4f})"
            for n, s in scores.items()))
        if combined > best["value"] + rc.eval.min_delta:
            best.update(value=combined, epoch=epoch_f, step=step, scores=scores, record=rec,
                        weights=snapshot_trainable(accelerator.unwrap_model(trained)))
            bad_evals = 0
        else:
            bad_evals += 1
        return bad_evals >= hp["patience"]

    progress = tqdm(total=total_steps, desc=f"train multi-task ({strategy.name})", disable=not show)
    done = False
    epoch = 0
    for epoch in range(1, hp["epochs"] + 1):
        trained.train()
        if strategy.uses_feature_cache:
            accelerator.unwrap_model(trained).encoder.eval()
        schedule = task_schedule(probs, steps_in_epoch, rc.train.seed + epoch)
        run_loss = {n: [0.0, 0] for n in runs}
        for name in schedule:
            batch = next_batch(name)
            out = training_step(
                accelerator, trained, step_model, batch, optimizer, scheduler, rc.train.max_grad_norm,
                lambda loss, name=name: ModelError(f"training loss of task '{name}' at step {step}",
                                                   expected="a finite number", found=str(loss.item()),
                                                   fix="lower train.lr or check the labels"),
                loss_weight=loss_w[name], clip_params=clip_params)
            run_loss[name][0] += out["loss"].detach().float().item()
            run_loss[name][1] += 1
            if accelerator.sync_gradients:
                step += 1
                progress.update(1)
                if rc.train.max_steps and step >= rc.train.max_steps:
                    done = True
                    break
        losses = {n: (v[0] / v[1] if v[1] else float("nan")) for n, v in run_loss.items()}
        if evaluate_all(float(epoch), losses):
            stopped_early = done = True
        if done:
            break
    progress.close()

    # ---- best weights, final per-task passes, finalize hooks, test ------------------------
    unwrapped = accelerator.unwrap_model(trained)
    if best["weights"] is not None:
        restore_trainable(unwrapped, best["weights"])
    task_metrics: dict[str, Any] = {}
    task_meta: dict[str, Any] = {}
    for n, r in runs.items():
        s = best["scores"][n]
        details = getattr(s["held_out"], "details", None)
        fin: dict[str, Any] = {}
        if r.spec.finalize is not None:
            final, _ = _evaluate(accelerator, trained, r.loaders["held_out"], r.entry.task, r.metric_names,
                                 f"eval {n} held-out (best)", show, label_names=r.label_names, extra=r.extra,
                                 keep_outputs=True)
            fin = r.spec.finalize(final.logits, final.labels, r.label_names) or {}
            r.extra.update(fin.get("extra", {}))
        m = {"held_out": {k: v for k, v in s["held_out"].items() if k != "n"},
             "train_sample": {k: v for k, v in s["train_sample"].items() if k != "n"},
             "gap": s["gap"], "gap_metric": r.best_metric, "data": r.data.stats}
        if details:
            m["held_out_details"] = details
        if r.loaders.get("test") is not None:
            te, _ = _evaluate(accelerator, trained, r.loaders["test"], r.entry.task, r.metric_names, f"eval {n} test",
                              show, label_names=r.label_names, extra=r.extra)
            m["test"] = {k: v for k, v in te.items() if k != "n"}
            if te.details:
                m["test_details"] = te.details
        m.update(fin.get("metrics", {}))
        task_metrics[n] = m
        task_meta[n] = {"task": r.entry.task, "label_names": r.label_names, "text_pair": r.data.has_pair,
                        "num_outputs": r.spec.num_outputs(len(r.label_names) if r.label_names else None),
                        "metric_for_best": r.best_metric, **fin.get("meta", {})}

    def flat(which: str) -> dict[str, float]:
        return {f"{n}/{k}": v for n, m in task_metrics.items() for k, v in m[which].items() if k != "loss"}

    held = flat("held_out")
    held["combined"] = best["value"]
    tr_flat = flat("train_sample")
    combined_tr = best.get("record", {}).get("combined_train_sample", float("nan"))
    tr_flat["combined"] = combined_tr
    metrics: dict[str, Any] = {
        "held_out": held, "train_sample": tr_flat, "gap": combined_tr - best["value"], "gap_metric": "combined",
        "best_epoch": best["epoch"], "best_step": best["step"], "epochs_run": history[-1]["epoch"] if history else 0,
        "stopped_early": stopped_early, "trainable_params": trainable, "total_params": total,
        "wall_s": round(time.time() - t0, 2), "strategy": strategy.name, "task": "multi_task", "pooling": pooling,
        "num_processes": accelerator.num_processes,
        "data": {"train_size": sum(len(r.train_tok) for r in runs.values()),
                 "held_out_size": sum(len(r.held_tok) for r in runs.values()),
                 "duplicates_dropped": sum(r.data.stats.get("duplicates_dropped", 0) for r in runs.values()),
                 "leaked_dropped": sum(r.data.stats.get("leaked_dropped", 0) for r in runs.values())},
        "sampling": {"mode": cfg.multitask.sampling, "temperature": cfg.multitask.temperature, "probabilities": probs},
        "loss_weights": loss_w, "combine_weights": comb_w, "tasks": task_metrics,
        "hyperparameters": hp, "history": history,
    }
    if all("test" in m for m in task_metrics.values()) and task_metrics:
        metrics["test"] = flat("test")

    # ---- save ----------------------------------------------------------------------
    if main:
        tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=out_dir))
        meta = {"format_version": FORMAT_VERSION, "task": "multi_task", "strategy": strategy.name,
                "base_model": _base_reference(path, rc.model.name), "pooling": pooling,
                "max_length": rc.model.max_length, "tasks": task_meta,
                "head": {"type": "multi", "dropout": rc.model.head_dropout,
                         "heads": {n: {"type": runs[n].spec.head, "num_outputs": task_meta[n]["num_outputs"]}
                                   for n in runs}},
                "trust_remote_code": rc.model.trust_remote_code}
        meta.update(strategy.save(unwrapped, tmp))
        for n, m in task_metrics.items():
            cm = (m.get("held_out_details") or {}).get("confusion_matrix")
            if cm:
                sub = tmp / "confusion_matrices"
                sub.mkdir(exist_ok=True)
                write_artifacts({"confusion_matrix": cm}, sub)
                (sub / "confusion_matrix.png").rename(sub / f"{n}.png")
        tokenizer.save_pretrained(tmp)
        (tmp / "recipe.yaml").write_text(cfg.to_yaml())
        write_json(tmp / "nlp_transfer.json", meta)
        metrics["wall_s"] = round(time.time() - t0, 2)
        write_json(tmp / "metrics.json", metrics)
        for p in sorted(tmp.iterdir(), key=lambda p: p.name == "metrics.json"):
            target = out_dir / p.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(p, target)
        tmp.rmdir()
        accelerator.print(format_table(metrics, "combined"))
        accelerator.print(f"[nlp_transfer] saved to {out_dir}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    result = TrainResult(output_dir=out_dir, metrics=metrics, config=rc, history=history, model=unwrapped)
    if rc.hub.push and main:
        result.push_to_hub(rc.hub.repo_id, private=rc.hub.private, revision=rc.hub.revision, merge=rc.hub.merge)
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
