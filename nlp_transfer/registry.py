"""The registries of transfer strategies and tasks (like PEFT's ``register_peft_method``).

This is the lowest layer: it imports nothing heavy and no other nlp_transfer module but
``errors``, so ``config.py`` can validate ``strategy.name`` / ``task`` and fill per-strategy
defaults from it while ``strategies.py`` and ``tasks/`` fill it (``import nlp_transfer``
registers the built-ins). Everything about a strategy (trainability, LR groups, defaults,
saving, reloading, what a push uploads, what the model card says) lives on its class;
everything about a task on its :class:`TaskSpec`. Library code asks these objects instead
of branching on their names.

Adding one::

    from nlp_transfer.strategies import Strategy, register_strategy
    @register_strategy
    class BitFit(Strategy):
        name = "bias_only"
        ...

    from nlp_transfer.model import TaskSpec, register_task
    register_task(TaskSpec(name="ordinal", head="linear", ...))
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from nlp_transfer.errors import ConfigError

#: name -> strategy class (a ``strategies.Strategy`` subclass), in registration order.
STRATEGIES: dict[str, type] = {}
#: name -> TaskSpec, in registration order.
TASKS: dict[str, "TaskSpec"] = {}

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")


@dataclass
class TaskSpec:
    """What a task needs from the model: head output size, loss, predictions, metrics, and how
    it is described (card words, Hub pipeline tag)."""
    name: str
    head: str
    token_level: bool
    num_outputs: Callable[[int | None], int]
    loss: Callable[..., Any]
    predictions: Callable[[Any], Any]
    default_metrics: list[str]
    metric_for_best: str
    pipeline_tag: str
    greater_is_better: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    # ---- optional hooks (None = the sequence-level behaviour of the training loop / predict.py) ----
    #: prepare(data_cfg) -> data.PreparedData (default: data.prepare_data(data_cfg, name)).
    prepare: Callable[..., Any] | None = None
    #: tokenize(ds, tokenizer, max_length, label_names, data_cfg) -> Dataset with a "label" column.
    tokenize: Callable[..., Any] | None = None
    #: collator(tokenizer) -> batch collate function yielding "labels" (default: dynamic padding).
    collator: Callable[[Any], Any] | None = None
    #: compute_metrics(metric_names, logits, labels, label_names, extra) -> flat {name: float};
    #: an optional "_details" entry (per-class reports...) goes to metrics.json, not the table.
    compute_metrics: Callable[..., dict[str, Any]] | None = None
    #: predict(predictor, texts, text_pairs, batch_size) -> list of per-text dicts
    #: (default: softmax over the logits -> {"label", "score"}).
    predict: Callable[..., list[dict[str, Any]]] | None = None
    #: finalize(held_out_logits, held_out_labels, label_names) after training with the best weights
    #: -> {"meta": saved in nlp_transfer.json, "extra": passed to later compute_metrics, "metrics": ...}.
    finalize: Callable[..., dict[str, Any]] | None = None
    #: dtype of the label tensors of cached-feature batches (None: long; float32 for regression).
    label_dtype: Any = None
    #: Loss accepts per-class weights (train.class_weights).
    supports_class_weights: bool = False
    # ---- how the task is described and checked ----
    #: Words for the model card ("text classification"); None: the name with spaces.
    card_words: str | None = None
    #: ``problem_type`` written into a pushed config.json (e.g. "regression"); None: not set.
    problem_type: str | None = None
    #: Labels are class names, encoded to ids with the saved label names when scoring a new file.
    named_labels: bool = False
    #: card_decode(labels_repr or None) -> Python lines turning ``logits`` into predictions, for the
    #: model card's plain transformers snippet (None: argmax over ``labels``).
    card_decode: Callable[[str | None], str] | None = None
    #: check_config(recipe_config) -> None: raise ConfigError for settings the task cannot use.
    check_config: Callable[[Any], None] | None = None
    #: probabilities(logits array) -> per-label probabilities (``predict_proba``, ``top_k``);
    #: None: the task's outputs are not label probabilities (regression, token spans).
    probabilities: Callable[[Any], Any] | None = None
    #: The labels are mutually exclusive (softmax): ``top_k`` ranks them.
    exclusive_labels: bool = False
    #: transformers' auto class of this task's native model (``model.head=native``); None: no
    #: native model, the pooled head is used.
    auto_class: str | None = None

    @property
    def words(self) -> str:
        """How the model card names the task."""
        return self.card_words or self.name.replace("_", " ")


# --------------------------------------------------------------------------- strategies

def register_strategy(name_or_cls: Any, cls: type | None = None, *, replace: bool = False) -> type:
    """Register a strategy class under its ``name`` (``register_strategy(cls)``, also usable as a
    class decorator) or under ``name`` (``register_strategy("bitfit", cls)``). Returns the class.

    An existing name is only replaced with ``replace=True``."""
    if cls is None:
        cls, name = name_or_cls, getattr(name_or_cls, "name", None)
    else:
        name = name_or_cls
    if not isinstance(cls, type):
        raise TypeError(f"register_strategy: expected a class, got {type(cls).__name__}")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"register_strategy: expected a name of letters, digits, '_' or '-', got {name!r}")
    if name in STRATEGIES and STRATEGIES[name] is not cls and not replace:
        raise ValueError(f"register_strategy: '{name}' is already registered ({STRATEGIES[name].__name__}); "
                         "pass replace=True to replace it")
    STRATEGIES[name] = cls
    return cls


def unregister_strategy(name: str) -> type | None:
    """Remove a strategy; returns its class (None when it was not registered)."""
    return STRATEGIES.pop(name, None)


def strategy_class(name: str) -> type:
    """The class registered as ``name``; ConfigError listing the registered names otherwise."""
    cls = STRATEGIES.get(name)
    if cls is None:
        options = list(STRATEGIES)
        raise ConfigError("strategy", expected=f"one of {options}", found=repr(name),
                          fix=f"pass strategy=<one of {', '.join(options)}> (or register_strategy(...) yours first)")
    return cls


def strategy_defaults(name: str) -> dict[str, float]:
    """``epochs``/``lr``/``head_lr``/``patience`` used when the recipe leaves them empty."""
    return dict(strategy_class(name).defaults)  # type: ignore[attr-defined]


def check_strategy_config(cfg: Any) -> None:
    """The registered strategy's own checks of a ``StrategyConfig`` (name already validated)."""
    check = getattr(STRATEGIES.get(cfg.name), "check_config", None)
    if check is not None:
        check(cfg)


def check_strategy_recipe(cfg: Any) -> None:
    """The registered strategy's checks of a whole ``RecipeConfig`` (e.g. the tasks it supports)."""
    check = getattr(STRATEGIES.get(cfg.strategy.name), "check_recipe", None)
    if check is not None:
        check(cfg)


# --------------------------------------------------------------------------- tasks

def register_task(spec: TaskSpec, *, replace: bool = False) -> TaskSpec:
    """Register a task under ``spec.name``. Returns the spec. An existing name is only
    replaced with ``replace=True``."""
    if not isinstance(spec, TaskSpec):
        raise TypeError(f"register_task: expected a TaskSpec, got {type(spec).__name__}")
    if not _NAME_RE.match(spec.name or ""):
        raise ValueError(f"register_task: expected a name of letters, digits, '_' or '-', got {spec.name!r}")
    if spec.name in TASKS and TASKS[spec.name] is not spec and not replace:
        raise ValueError(f"register_task: '{spec.name}' is already registered; pass replace=True to replace it")
    TASKS[spec.name] = spec
    return spec


def unregister_task(name: str) -> TaskSpec | None:
    """Remove a task; returns its spec (None when it was not registered)."""
    return TASKS.pop(name, None)


def get_task(name: str) -> TaskSpec:
    """The TaskSpec registered as ``name``; ConfigError listing the registered tasks otherwise."""
    if name not in TASKS:
        options = list(TASKS)
        raise ConfigError("task", expected=f"one of {options}", found=repr(name),
                          fix=f"pass task=<one of {', '.join(options)}> (or register_task(...) yours first)")
    return TASKS[name]


def check_task_config(cfg: Any) -> None:
    """The registered task's own checks of a whole ``RecipeConfig`` (name already validated)."""
    spec = TASKS.get(cfg.task)
    if spec is not None and spec.check_config is not None:
        spec.check_config(cfg)
