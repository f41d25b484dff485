"""What the engine trains: a plan of 1..N tasks, and per task its data, tokenised splits,
train sample and loaders.

A single-task recipe is a plan with one task whose output folder keeps the single-task
layout; a multi-task config is a plan with N tasks (one head each). Everything below is the
same code for both."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from nlp_transfer.model import features as feats
from nlp_transfer.config import RecipeConfig
from nlp_transfer.data import add_label_examples, column_numpy, label_examples_refusal, prepare_data, tokenize
from nlp_transfer.errors import ConfigError
from nlp_transfer.model import TASKS, TaskSpec
from nlp_transfer.config.multitask import MultiTaskConfig, MultiTaskSettings, TaskEntry
from nlp_transfer.data.readers import READERS
from nlp_transfer.tasks.imbalance import train_sampler
from nlp_transfer.training import stream
from nlp_transfer.training.evaluate import FeatureDataset, default_collator, model_inputs
from nlp_transfer.training.sampling import SortedBucketSampler


@dataclass
class RunPlan:
    """The shared sections (``base``), the tasks, how steps are shared between them, and whether
    the output is a multi-task folder (one head per task) or a single-task one."""
    base: RecipeConfig
    tasks: dict[str, TaskEntry]
    sampling: MultiTaskSettings
    multi: bool
    #: The config saved as recipe.yaml and compared on resume (RecipeConfig or MultiTaskConfig).
    source: Any
    #: Recorded in metrics.json as they are (e.g. the ``auto`` decision that chose the strategy).
    extra_metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def single(cls, cfg: RecipeConfig) -> "RunPlan":
        entry = TaskEntry(name=cfg.task, task=cfg.task, data=cfg.data, metrics=cfg.eval.metrics,
                          metric_for_best=cfg.eval.metric_for_best)
        return cls(cfg, {cfg.task: entry}, MultiTaskSettings(), False, cfg)

    @classmethod
    def multitask(cls, cfg: MultiTaskConfig) -> "RunPlan":
        return cls(cfg.base, dict(cfg.tasks), cfg.multitask, True, cfg)


@dataclass
class TaskRun:
    """One task of a run: its data, splits, loaders, metrics and where its data iterator is."""
    name: str
    entry: TaskEntry
    spec: TaskSpec
    data: Any
    index: int
    label_names: list[str] | None = None
    has_pair: bool = False
    train_tok: Any = None
    held_tok: Any = None
    test_tok: Any = None
    sample_idx: Any = None
    loaders: dict[str, Any] = field(default_factory=dict)
    metric_names: list[str] = field(default_factory=list)
    best_metric: str = ""
    sign: float = 1.0
    #: Passed to the task's compute_metrics (e.g. tuned multi-label thresholds).
    extra: dict[str, Any] = field(default_factory=dict)
    gap_warned: bool = False
    #: The first held-out rows as the reader made them (kept in the output folder as held_out.jsonl).
    held_rows: list[dict[str, Any]] = field(default_factory=list)
    # ---- data position: pass number (seeds the shuffle), batches of this pass consumed ----
    generator: torch.Generator = field(default_factory=torch.Generator)
    pass_no: int = 0
    consumed: int = 0
    iterator: Any = None
    peeked: Any = None
    #: [sum of losses, batches] since the start of the epoch.
    running: list[float] = field(default_factory=lambda: [0.0, 0])
    #: The training rows of a streamed split (training/stream.py), read as training goes.
    stream: Any = None

    @property
    def num_labels(self) -> int | None:
        return len(self.label_names) if self.label_names else None

    def choose_metrics(self, custom: bool = False) -> None:
        """Named metrics, and the one that picks the best epoch (with ``custom``: it may also be a key
        that the user's compute_metrics returns)."""
        from nlp_transfer.metrics import canonical_metric
        self.metric_names = list(self.entry.metrics or self.spec.default_metrics)
        self.best_metric = self.entry.metric_for_best or self.spec.metric_for_best
        known = not custom or canonical_metric(self.best_metric) is not None
        if self.best_metric not in self.metric_names and self.best_metric != "loss" and known:
            self.metric_names.append(self.best_metric)
        self.sign = 1.0 if (self.spec.greater_is_better and self.best_metric != "loss") else -1.0

    def position(self) -> dict[str, Any]:
        """What a checkpoint records to put this task's data iterator back where it was."""
        return {"pass_no": self.pass_no, "consumed": self.consumed, "live": self.iterator is not None,
                "running": list(self.running), "gap_warned": self.gap_warned,
                "stream_passes": list(self.stream.pass_rows) if self.stream is not None else None}

    def train_rows(self) -> int:
        """Rows of one pass of the train loader (a stream's: the rows of its step budget)."""
        return len(self.stream) if self.stream is not None else len(self.loaders["train"].sampler)


def prepare_task_data(entry: TaskEntry, label_examples: int = 0) -> Any:
    """Read, clean and split one task's data (its reader, its task's prepare hook, or the core),
    then add the class-name rows of ``data.label_examples``; where that is None, ``label_examples``
    (the strategy's default) applies if the data can take it. The count used is written back to
    the config, which is saved with the run."""
    spec = TASKS[entry.task]
    if entry.reader:
        if spec.prepare is not None:
            raise ConfigError(f"tasks.{entry.name}.reader", expected="only for sequence_classification/regression",
                              found=f"reader with task={entry.task}", fix="remove the reader")
        data = prepare_data(entry.data, entry.task, raw=READERS[entry.reader](entry.data))
    elif entry.data.streaming:
        from nlp_transfer.data.streaming import prepare_stream
        data = prepare_stream(entry.data, entry.task)
    else:
        data = spec.prepare(entry.data) if spec.prepare else prepare_data(entry.data, entry.task)
    d = entry.data
    if d.label_examples is None:  # the strategy's default, only where it applies
        d.label_examples = label_examples if label_examples_refusal(data, entry.task) is None else 0
    return add_label_examples(data, d.label_examples, d.label_template, entry.task) if d.label_examples else data


#: Held-out rows kept in the output folder (``held_out.jsonl``): what ``export`` checks an
#: exported model against (argmax agreement, int8 accuracy) without the original data.
HELD_OUT_KEEP = 2000


def tokenize_run(r: TaskRun, tokenizer: Any, cfg: RecipeConfig, rng: np.random.Generator,
                 features: bool = False, spool_dir: Path | None = None) -> None:
    """Tokenise the splits (the task's hook, e.g. NER word alignment, or the core), draw the seeded
    train sample, and drop the raw splits: that unmaps their Arrow files (1M rows: ~100 MB).

    A streamed train split (``data.streaming``) is read as training goes (``r.stream``) and its
    sample is its first rows; for a strategy that trains on ``features`` it is spooled to disk in
    ``spool_dir`` first (training/stream.py)."""
    def tok(ds: Any) -> Any:
        if r.spec.tokenize is not None:
            return r.spec.tokenize(ds, tokenizer, cfg.model.max_length, r.label_names, r.entry.data)
        return tokenize(ds, tokenizer, cfg.model.max_length, getattr(r.entry.data, "num_proc", None))

    streamed = getattr(r.data, "streamed", False)
    r.held_tok = tok(r.data.held_out)
    r.test_tok = tok(r.data.test) if (cfg.eval.use_test and r.data.test) else None
    r.has_pair = r.data.has_pair
    if not streamed:
        r.train_tok = tok(r.data.train)
    elif features:
        r.train_tok = stream.spool(r.data.train, tokenizer, cfg.model.max_length, r.has_pair,
                                   Path(spool_dir) / f"{r.name}.arrow", feats.process_state().is_local_main_process)
    else:
        t = cfg.train
        r.stream = stream.StreamRows(r.data.train, tokenizer, cfg.model.max_length, r.has_pair,
                                     t.max_steps * t.gradient_accumulation_steps * t.batch_size, t.seed,
                                     r.entry.data.shuffle_buffer)
        r.train_tok = stream.stream_sample(r.data.train, cfg.eval.train_sample_size, tokenizer,
                                           cfg.model.max_length, r.has_pair)
    held = r.data.held_out
    r.held_rows = held.select(range(min(HELD_OUT_KEEP, len(held)))).to_list() if held is not None else []
    r.data = dataclasses.replace(r.data, train=None, held_out=None, test=None)
    # the user's rows: data.label_examples' template rows come last and are left out of the sample
    n_rows = len(r.train_tok) - r.data.stats.get("label_example_rows", 0)
    n_sample = min(cfg.eval.train_sample_size, n_rows)
    if r.stream is not None:  # the stream's first rows, all of them
        r.sample_idx = np.arange(n_sample)
        return
    r.sample_idx = np.sort(rng.choice(n_rows, size=n_sample, replace=False)) if n_sample \
        else np.array([], int)


def with_task(collate: Callable, name: str | None) -> Callable:
    """Tag every batch with its task (the multi-task model routes it to that head)."""
    if name is None:
        return collate

    def fn(rows: Any) -> dict[str, Any]:
        batch = dict(collate(rows))
        batch["task"] = name
        return batch
    return fn


def _identity(batch: Any) -> Any:
    return batch  # FeatureDataset.__getitems__ already returns a stacked batch


def build_loaders(r: TaskRun, model: Any, tokenizer: Any, cfg: RecipeConfig, strategy: Any, accelerator: Any,
                  key: dict[str, Any], tag: str | None, show: bool,
                  say: Callable[[str], None]) -> dict[str, DataLoader | None]:
    """train / held_out / sample / test loaders: cached features for strategies that train on them
    (per-token features for token-level tasks), length-grouped token batches otherwise."""
    collate = r.spec.collator(tokenizer) if r.spec.collator else default_collator(tokenizer)
    splits = {"train": r.train_tok, "held_out": r.held_tok, "test": r.test_tok}
    g, bs, ebs = r.generator, cfg.train.batch_size, cfg.eval.batch_size
    cache_dir = None
    if strategy.uses_feature_cache and cfg.strategy.cache_features:
        cache_dir = Path(cfg.output.cache_dir) if cfg.output.cache_dir else feats.default_cache_dir()
    if strategy.uses_feature_cache and r.spec.token_level:
        from nlp_transfer.tasks.token_features import token_feature_loaders
        tr, ho, sa, te = token_feature_loaders(model, splits, r.sample_idx, collate, bs, ebs, accelerator.device,
                                               {**key, "pooling": "tokens"}, cache_dir, show, g, say)
        loaders = {"train": tr, "held_out": ho, "sample": sa, "test": te}
        for dl in loaders.values():
            if dl is not None:
                dl.collate_fn = with_task(dl.collate_fn, tag)
        return loaders
    if strategy.uses_feature_cache:
        return _feature_loaders(r, model, collate, cfg, accelerator, key, cache_dir, tag, show, say)
    return _token_loaders(r, collate, cfg, tag)


def _feature_loaders(r: TaskRun, model: Any, collate: Callable, cfg: RecipeConfig, accelerator: Any,
                     key: dict[str, Any], cache_dir: Path | None, tag: str | None, show: bool,
                     say: Callable[[str], None]) -> dict[str, Any]:
    model.to(accelerator.device)
    arrs: dict[str, np.ndarray] = {}
    splits = {"train": r.train_tok, "held_out": r.held_tok, "test": r.test_tok}
    # Every process encodes its shard of the batches and gathers the rest (model/features.py).
    for split, ds in splits.items():
        if ds is None:
            continue
        label = split if tag is None else f"{tag}/{split}"
        arrs[split], hit = feats.cached_features(model, ds, collate, cfg.eval.batch_size, accelerator.device, key,
                                                 cache_dir, f"features {label}", show)
        shards = f" (sharded over {accelerator.num_processes} processes)" if accelerator.num_processes > 1 else ""
        say(f"[nlp_transfer] {label} features {'from cache' if hit else 'computed' + shards}: "
            f"{tuple(arrs[split].shape)}")
    dtype = r.spec.label_dtype or torch.long

    def fset(split: str, idx: np.ndarray | None = None) -> FeatureDataset:
        return FeatureDataset(arrs[split], column_numpy(splits[split], "label"), dtype, idx)

    ident = with_task(_identity, tag)
    balanced = train_sampler(cfg, r.spec, r.train_tok, r.generator)  # train.balanced_sampler
    ebs = cfg.eval.batch_size
    return {"train": DataLoader(fset("train"), batch_size=cfg.train.batch_size, shuffle=balanced is None,
                                sampler=balanced, generator=r.generator, collate_fn=ident),
            "held_out": DataLoader(fset("held_out"), batch_size=ebs, collate_fn=ident),
            "sample": DataLoader(fset("train", r.sample_idx), batch_size=ebs, collate_fn=ident),
            "test": DataLoader(fset("test"), batch_size=ebs, collate_fn=ident) if r.test_tok is not None else None}


def _token_loaders(r: TaskRun, collate: Callable, cfg: RecipeConfig, tag: str | None) -> dict[str, Any]:
    from transformers.trainer_pt_utils import LengthGroupedSampler

    def sorted_eval(ds: Any) -> Any:
        # Evaluation order does not matter to the metrics: sort by length, pad little.
        return model_inputs(ds.select(np.argsort(column_numpy(ds, "length"), kind="stable")))

    g, bs, ebs = r.generator, cfg.train.batch_size, cfg.eval.batch_size
    c = with_task(collate, tag)
    if r.stream is not None:  # shuffled by the stream's buffer; the sample is the stream's first rows
        train = DataLoader(r.stream, batch_size=bs, collate_fn=c)
        return {"train": train, "held_out": DataLoader(sorted_eval(r.held_tok), batch_size=ebs, collate_fn=c),
                "sample": DataLoader(sorted_eval(r.train_tok), batch_size=ebs, collate_fn=c),
                "test": DataLoader(sorted_eval(r.test_tok), batch_size=ebs, collate_fn=c)
                if r.test_tok is not None else None}
    sampler = train_sampler(cfg, r.spec, r.train_tok, g)  # train.balanced_sampler
    if sampler is None and not cfg.train.group_by_length:
        sampler = torch.utils.data.RandomSampler(r.train_tok, generator=g)
    elif sampler is None and cfg.train.length_grouping == "sorted":
        sampler = SortedBucketSampler(column_numpy(r.train_tok, "length"), bs, g)
    elif sampler is None:
        sampler = LengthGroupedSampler(bs, lengths=column_numpy(r.train_tok, "length").tolist(), generator=g)
    return {"train": DataLoader(model_inputs(r.train_tok), batch_size=bs, sampler=sampler, collate_fn=c),
            "held_out": DataLoader(sorted_eval(r.held_tok), batch_size=ebs, collate_fn=c),
            "sample": DataLoader(sorted_eval(r.train_tok.select(r.sample_idx)), batch_size=ebs, collate_fn=c),
            "test": DataLoader(sorted_eval(r.test_tok), batch_size=ebs, collate_fn=c) if r.test_tok is not None
            else None}
