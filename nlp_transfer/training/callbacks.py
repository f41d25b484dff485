"""Callbacks: user code called at the points of a run, able to stop it.

    class StopAt90(Callback):
        def on_evaluate(self, state, metrics):
            if metrics["accuracy"] >= 0.9:
                state.should_stop = True

    train(recipe, callbacks=[StopAt90()])

Any object with some of the ``on_*`` methods works (duck typing). A ``transformers.TrainerCallback``
works too, through :class:`TrainerCallbackAdapter`: it receives Trainer's ``(args, state,
control, **kwargs)`` and may set ``control.should_training_stop``.

``compute_metrics`` (Trainer's ``EvalPrediction`` in, a dict out) adds its values to every
held-out and train-sample evaluation, next to the named metrics.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from nlp_transfer.errors import ConfigError

HOOKS = ("on_train_begin", "on_step_end", "on_log", "on_evaluate", "on_save", "on_train_end")


@dataclass
class TrainState:
    """What a callback sees; ``should_stop = True`` ends training after the current step."""
    output_dir: Path
    total_steps: int
    step: int = 0
    epoch: float = 0.0
    #: The last evaluation's held-out scores (per task for a multi-task run).
    metrics: dict[str, Any] = field(default_factory=dict)
    #: The best combined held-out value so far and where it was reached.
    best: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    should_stop: bool = False


class Callback:
    """Base class with every hook as a no-op; override the ones you need."""

    def on_train_begin(self, state: TrainState) -> None: ...
    def on_step_end(self, state: TrainState) -> None: ...
    def on_log(self, state: TrainState, logs: dict[str, float]) -> None: ...
    def on_evaluate(self, state: TrainState, metrics: dict[str, Any]) -> None: ...
    def on_save(self, state: TrainState, path: Path) -> None: ...
    def on_train_end(self, state: TrainState) -> None: ...


class TrainerCallbackAdapter(Callback):
    """A ``transformers.TrainerCallback`` on our loop: Trainer's ``TrainerState``/``TrainerControl``
    are kept in step with ours; ``control.should_training_stop`` stops the run."""

    def __init__(self, callback: Any, args: Any = None) -> None:
        from transformers import TrainerControl, TrainerState
        self.callback, self.args = callback, args
        self.state, self.control = TrainerState(), TrainerControl()

    @property
    def name(self) -> str:
        return type(self.callback).__name__

    def _call(self, hook: str, state: TrainState, **kwargs: Any) -> None:
        s = self.state
        s.global_step, s.epoch, s.max_steps = state.step, state.epoch, state.total_steps
        s.log_history = list(state.history)
        getattr(self.callback, hook)(self.args, s, self.control, **kwargs)
        if self.control.should_training_stop:
            state.should_stop = True

    def on_train_begin(self, state: TrainState) -> None:
        self._call("on_train_begin", state)

    def on_step_end(self, state: TrainState) -> None:
        self._call("on_step_end", state)

    def on_log(self, state: TrainState, logs: dict[str, float]) -> None:
        self._call("on_log", state, logs=logs)

    def on_evaluate(self, state: TrainState, metrics: dict[str, Any]) -> None:
        self._call("on_evaluate", state, metrics=metrics)

    def on_save(self, state: TrainState, path: Path) -> None:
        self._call("on_save", state)

    def on_train_end(self, state: TrainState) -> None:
        self._call("on_train_end", state)


def as_callbacks(objects: Any, trainer_args: Callable[[], Any] | None = None) -> list[Any]:
    """The user's callbacks, TrainerCallbacks wrapped; anything with no ``on_*`` hook is refused."""
    if objects is None:
        return []
    objects = list(objects) if isinstance(objects, (list, tuple)) else [objects]
    out = []
    for obj in objects:
        if isinstance(obj, type):
            obj = obj()  # Trainer also accepts a callback class
        try:
            from transformers import TrainerCallback
        except ImportError:  # pragma: no cover - transformers is a dependency
            TrainerCallback = ()  # noqa: N806
        if isinstance(obj, TrainerCallback):
            out.append(TrainerCallbackAdapter(obj, trainer_args() if trainer_args else None))
        elif any(callable(getattr(obj, h, None)) for h in HOOKS):
            out.append(obj)
        else:
            raise ConfigError("callbacks", expected=f"objects with some of the methods {list(HOOKS)} "
                              "(nlp_transfer.Callback) or transformers.TrainerCallback instances",
                              found=f"{type(obj).__name__} {obj!r}"[:120],
                              fix="subclass nlp_transfer.training.callbacks.Callback and override its hooks")
    return out


def callback_name(cb: Any) -> str:
    return getattr(cb, "name", None) or type(cb).__name__


def metrics_function(fn: Any) -> Callable[[np.ndarray, np.ndarray], dict[str, float]] | None:
    """``compute_metrics(EvalPrediction) -> dict`` as ``f(logits, labels) -> {name: float}``."""
    if fn is None:
        return None
    if not callable(fn):
        raise ConfigError("compute_metrics", expected="a function EvalPrediction -> dict (as for Trainer)",
                          found=f"{type(fn).__name__} {fn!r}"[:120], fix="pass compute_metrics=my_function")

    def compute(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        from transformers import EvalPrediction
        out = fn(EvalPrediction(predictions=logits, label_ids=labels))
        if not isinstance(out, dict):
            raise ConfigError("compute_metrics", expected="a dict of metric name -> number",
                              found=f"{type(out).__name__} {out!r}"[:120], fix="return e.g. {'my_f1': 0.8}")
        return {str(k): float(v) for k, v in out.items()}
    return compute
