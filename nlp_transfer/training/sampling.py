"""How the steps of an epoch are shared between tasks, and how task scores combine.

A one-task run is the degenerate case: every step draws its only task."""
from __future__ import annotations

import numpy as np

from nlp_transfer.errors import ConfigError, DataError
from nlp_transfer.config.multitask import SAMPLING



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
