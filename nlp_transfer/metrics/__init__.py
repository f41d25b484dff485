"""Evaluation metrics that work offline.

``evaluate.load("accuracy")`` fetches the metric script from the Hugging Face Hub, so it
fails without network. This package ships its own ``evaluate.Metric`` modules, one folder
per metric (``nlp_transfer/metrics/<name>/<name>.py``), so that
``evaluate.load(metric_path("accuracy"))`` works offline and the modules combine with
``evaluate.combine``.

- :func:`load_metric` -- an ``evaluate.EvaluationModule`` (ours, or a Hub metric when online);
- :func:`combine` -- ``evaluate.combine`` over names;
- :func:`compute` -- the one-call path used by the training loop: a flat
  ``{"accuracy": ..., "f1": ...}`` dict, with loaded modules cached between calls.

Metrics: accuracy, f1 / precision / recall (macro by default), matthews_correlation,
pearsonr, spearmanr (float inputs), seqeval (entity-level NER), multilabel (indicator
matrices: micro/macro/samples/per-label F1, subset accuracy).
"""
from __future__ import annotations

import difflib
import inspect
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from nlp_transfer.errors import ConfigError, DataError

if TYPE_CHECKING:  # importing evaluate pulls in transformers.pipelines (seconds): do it lazily
    import evaluate

__all__ = ["AVAILABLE", "ALIASES", "canonical_metric", "metric_path", "load_metric", "combine", "compute", "preload"]

#: Metrics shipped with nlp_transfer (each loadable offline).
AVAILABLE: tuple[str, ...] = (
    "accuracy", "f1", "precision", "recall", "matthews_correlation",
    "pearsonr", "spearmanr", "seqeval", "multilabel",
)

#: Common alternative spellings mapped to the shipped names.
ALIASES: dict[str, str] = {
    "acc": "accuracy",
    "mcc": "matthews_correlation",
    "matthews": "matthews_correlation",
    "pearson": "pearsonr",
    "spearman": "spearmanr",
    "f1_macro": "f1",
    "macro_f1": "f1",
}

_METRICS_DIR = Path(__file__).resolve().parent
_CACHE: dict[str, "evaluate.EvaluationModule"] = {}
_CACHE_LOCK = threading.Lock()


def canonical_metric(name: str) -> str | None:
    """Our metric name for ``name`` (case/dash-insensitive, aliases applied), else None."""
    key = str(name).strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    return key if key in AVAILABLE else None


def _closest(name: str) -> str | None:
    options = list(AVAILABLE) + list(ALIASES)
    match = difflib.get_close_matches(str(name).lower(), options, n=1, cutoff=0.5)
    return ALIASES.get(match[0], match[0]) if match else None


def _unknown(name: str, reason: str) -> ConfigError:
    guess = _closest(name)
    fix = (f"use '{guess}'" if guess else f"use one of {', '.join(AVAILABLE)}") + \
        " (Hub metric names only load with network access)"
    return ConfigError(f"metric {name!r}", expected=f"one of {list(AVAILABLE)} or a loadable Hub metric",
                       found=f"a name that could not be loaded ({reason})", fix=fix)


def metric_path(name: str) -> str:
    """Absolute path of the folder holding our ``<name>/<name>.py`` evaluate module.

    ``evaluate.load(metric_path("f1"))`` loads it without network access.

    Raises:
        ConfigError: ``name`` is not one of :data:`AVAILABLE` (or an alias).
    """
    canonical = canonical_metric(name)
    if canonical is None:
        raise _unknown(name, "not shipped with nlp_transfer")
    return str(_METRICS_DIR / canonical)


def _hub_offline() -> bool:
    return any(os.environ.get(v, "").upper() in {"1", "ON", "YES", "TRUE"}
               for v in ("HF_HUB_OFFLINE", "HF_EVALUATE_OFFLINE", "HF_DATASETS_OFFLINE"))


def load_metric(name: str, **init_kwargs: Any) -> evaluate.EvaluationModule:
    """Load a metric as an ``evaluate.EvaluationModule`` (a fresh instance each call).

    Our own modules (:data:`AVAILABLE`, aliases, any case) load from this package, offline.
    Any other name is passed to ``evaluate.load`` so Hub metrics (``"bleu"``,
    ``"user/metric"``) or a local script path still work when they can be reached.
    ``init_kwargs`` go to ``evaluate.load`` (``config_name``, ``num_process``,
    ``process_id``, ``experiment_id``, ...); ``keep_in_memory`` defaults to True for a
    single process, so no temporary Arrow files are written.

    Raises:
        ConfigError: the name is neither ours nor loadable; the message lists the available
        metrics and the closest one.
    """
    import evaluate

    canonical = canonical_metric(name)
    if int(init_kwargs.get("num_process", 1)) == 1:
        init_kwargs.setdefault("keep_in_memory", True)
    if canonical is not None:
        return evaluate.load(str(_METRICS_DIR / canonical), **init_kwargs)
    is_local = os.path.exists(str(name))
    if _hub_offline() and not is_local:
        raise _unknown(name, "not shipped with nlp_transfer and the Hub is offline (HF_HUB_OFFLINE)")
    try:
        return evaluate.load(str(name), **init_kwargs)
    except Exception as e:  # noqa: BLE001 - any loader failure becomes one clear message
        raise _unknown(name, f"{type(e).__name__}: {str(e)[:200]}") from e


def combine(names: Iterable[str], force_prefix: bool = False) -> evaluate.CombinedEvaluations:
    """``evaluate.combine`` over metric names (ours load offline).

    The classification metrics (accuracy, f1, precision, recall, matthews_correlation)
    accept the same keyword arguments (``average``, ``labels``, ``pos_label``,
    ``zero_division``, ``sample_weight``), so ``combine([...]).compute(..., average="weighted")``
    works; pearsonr + spearmanr combine the same way.
    """
    import evaluate

    names = [names] if isinstance(names, str) else list(names)
    return evaluate.combine([load_metric(n) for n in names], force_prefix=force_prefix)


def _cached(name: str) -> evaluate.EvaluationModule:
    key = canonical_metric(name) or str(name)
    module = _CACHE.get(key)
    if module is None:
        with _CACHE_LOCK:
            module = _CACHE.get(key)
            if module is None:
                module = load_metric(key)
                _CACHE[key] = module
    return module


def preload(names: Iterable[str]) -> list[str]:
    """Load (and cache for :func:`compute`) the shipped modules among ``names`` now; return them.

    The first load imports ``evaluate`` and SciPy's statistics (about 1.2 s on a laptop-class
    CPU). The engine calls this while it sets up, so that cost is paid once before training
    instead of inside the first evaluation. Other names (Hub metrics) still load on first use.
    """
    loaded = list(dict.fromkeys(c for c in map(canonical_metric, names) if c is not None))
    for name in loaded:
        _cached(name)
    return loaded


def _accepted_kwargs(module: evaluate.EvaluationModule) -> set[str] | None:
    """Keyword arguments ``module._compute`` takes (None when it takes ``**kwargs``)."""
    params = inspect.signature(module._compute).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return {n for n in params if n not in ("self", "predictions", "references")}


def _to_plain(x: Any) -> Any:
    """Tensors -> numpy (evaluate handles lists and numpy arrays)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if str(getattr(x, "dtype", "")) == "torch.bfloat16":
            x = x.float()
        return x.numpy()
    return x


def _flatten(result: dict[str, Any], out: dict[str, float], prefix: str = "") -> None:
    for key, value in result.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            _flatten(value, out, prefix=f"{name}_")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                out[f"{name}_{i}"] = float(v)
        else:
            out[name] = float(value)


def compute(names: Iterable[str] | str, predictions: Any, references: Any,
            **kwargs: Any) -> dict[str, float]:
    """Score ``predictions`` against ``references`` with several metrics, as one flat dict.

    Modules are loaded once per process and cached; for the shipped modules the scoring
    function is called directly (no Arrow round-trip through evaluate's cache, same
    numbers as ``load_metric(name).compute(...)``). Each keyword argument goes only to the
    metrics whose ``_compute`` accepts it (``average`` reaches f1/precision/recall, not
    pearsonr). Nested results are flattened with ``_``: seqeval's ``{"PER": {"f1": ..}}``
    becomes ``"PER_f1"``, multilabel's ``per_label_f1`` becomes ``"per_label_f1_<label>"``.

    Example:
        >>> compute(["accuracy", "f1"], [0, 1, 1, 0], [0, 1, 0, 0])
        {'accuracy': 0.75, 'f1': 0.7333333333333334}

    Raises:
        ConfigError: an unknown metric name, or a keyword argument no listed metric accepts.
        DataError: empty inputs, or predictions and references differ in length.
    """
    names = [names] if isinstance(names, str) else list(names)
    modules = [(n, _cached(n)) for n in names]
    predictions, references = _to_plain(predictions), _to_plain(references)
    used: set[str] = set()
    calls: list[dict[str, Any]] = []
    for _, module in modules:
        accepted = _accepted_kwargs(module)
        own = dict(kwargs) if accepted is None else {k: v for k, v in kwargs.items() if k in accepted}
        used.update(own)
        calls.append(own)
    unused = sorted(set(kwargs) - used)
    if unused:
        raise ConfigError(f"metric keyword argument(s) {unused}",
                          expected=f"arguments accepted by the metrics {names}",
                          found="arguments none of them takes",
                          fix="remove them or check their spelling (e.g. average, labels, zero_division)")
    if len(references) == 0:
        raise DataError("metric inputs", expected="at least one prediction/reference pair",
                        found="empty inputs", fix="check that the evaluation split is not empty")
    if len(predictions) != len(references):
        raise DataError("metric inputs", expected="as many predictions as references",
                        found=f"{len(predictions)} predictions and {len(references)} references",
                        fix="score the predictions of exactly the examples whose labels you pass")
    out: dict[str, float] = {}
    for (name, module), own in zip(modules, calls):
        if canonical_metric(name) is not None:
            # Our own modules: call the scoring function directly. Same numbers as
            # module.compute(), without the Arrow write/read round-trip (~10x faster).
            result = module._compute(predictions=predictions, references=references, **own)
        else:
            result = module.compute(predictions=predictions, references=references, **own)
        _flatten(result, out)
    return out
