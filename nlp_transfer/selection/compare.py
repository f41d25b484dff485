"""``nlp-transfer compare``: every strategy at every training-set size, same splits, seeds and budget.

For each seed, size and strategy one ordinary :func:`nlp_transfer.recipe.train` run is made:

* **Same splits.** The data section is identical for every run except
  ``data.max_train_samples`` (a stratified subset drawn with the fixed ``data.seed``), so at a
  given size every strategy and every seed sees the same training examples, and every run is
  scored on the same held-out split. The spread over seeds is therefore the spread of
  training randomness (head initialisation, dropout, batch order), on fixed subsets.
* **Same budget.** ``budget_epochs`` epochs for the strategies that train the encoder
  (``lora``, ``full``, ``partial``, ``scratch``); ``frozen`` trains only its head on cached
  features for its default epochs (a single encoder pass, so it never costs more).
  ``min_steps`` (default: the config's ``train.min_steps``) raises the epochs of small subsets so
  that every run makes at least that many optimizer steps (otherwise 100 examples x 3 epochs =
  12 steps measures under-training, not the strategy); the engine applies it, evaluating as often
  as the default epochs would.
* **scratch** is the same architecture from random initialisation: the model's config is
  instantiated once with ``AutoModel.from_config`` (seeded), saved with the same tokenizer
  (and pooling declaration) into a cache folder, and trained with ``strategy=full`` and the
  full strategy's hyper-parameters.
* **Frozen features** go through the recipe's on-disk cache (shared ``output.cache_dir``):
  extracted once per (subset, held-out), reused by every seed and by later comparisons.

Outputs in ``out_dir``: ``compare.json`` (settings, every run, summary, recommendation),
``compare.md`` (Markdown table + findings), ``learning_curve.png`` and ``report.html``
(self-contained). Each run's folder keeps ``metrics.json`` and ``run.json``; with ``resume``
a finished run whose settings are unchanged is read back instead of re-trained.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import io
import json
import math
import os
import platform
import shutil
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from nlp_transfer.selection import report
from nlp_transfer.config import DataConfig, RecipeConfig, apply_overrides, stretched_epochs
from nlp_transfer.data.args import add_data_arguments, data_config_from_args  # noqa: F401  (also importable from here)
from nlp_transfer.registry import strategy_class
from nlp_transfer.errors import ConfigError, NLPTransferError

__all__ = ["STRATEGY_CHOICES", "CompareResult", "compare", "summarize", "recommend", "build_scratch_model",
           "work_units", "add_subcommand", "PeakMemory"]

#: Strategies ``compare`` knows; ``scratch`` is ``full`` on a randomly initialised copy.
STRATEGY_CHOICES = ("frozen", "lora", "full", "partial", "contrastive", "scratch")
#: Held-out difference under which two strategies count as equally good (absolute metric
#: units), unless the best one's seed spread is larger.
TOLERANCE = 0.01
FORMAT_VERSION = 1
#: Seed of the random initialisation of the ``scratch`` model (one model for every run).
SCRATCH_SEED = 1234


@dataclass
class CompareResult:
    """What :func:`compare` returns (everything is also in ``compare.json``)."""
    out_dir: Path
    metric: str
    runs: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    recommendation: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        return report.text_table(self.summary, self.metric)

    def markdown(self) -> str:
        return report.markdown_table(self.summary, self.metric)


# --------------------------------------------------------------------------- measuring

class PeakMemory:
    """Peak resident memory (sampled in a thread) and peak CUDA allocation of a block.

    RSS is the whole process's (what the OS must provide while the run is going);
    CUDA is ``torch.cuda.max_memory_allocated`` after a reset, ``None`` without CUDA."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak_rss_mb: float = 0.0
        self.cuda_peak_mb: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def rss_mb() -> float:
        try:
            import psutil
            return psutil.Process().memory_info().rss / 2**20
        except ImportError:  # Linux fallback
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak_rss_mb = max(self.peak_rss_mb, self.rss_mb())
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        import torch
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self.peak_rss_mb = self.rss_mb()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_rss_mb = max(self.peak_rss_mb, self.rss_mb())
        if torch.cuda.is_available():
            self.cuda_peak_mb = torch.cuda.max_memory_allocated() / 2**20


# --------------------------------------------------------------------------- scratch model

def build_scratch_model(model_name: str, cache_dir: str | Path | None = None, seed: int = SCRATCH_SEED,
                        revision: str | None = None, trust_remote_code: bool = False) -> Path:
    """A randomly initialised copy of ``model_name``'s architecture, saved once and reused.

    The folder holds the model (``AutoModel.from_config`` under ``torch.manual_seed(seed)``),
    the original tokenizer, and the original sentence-transformers pooling declaration
    (``1_Pooling/``) if any, so that the only difference from the pretrained model is the
    weights. It is keyed by the source's config, weights hash and the seed."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from nlp_transfer.model.features import default_cache_dir
    from nlp_transfer.model import copy_sentence_files, resolve_model, weights_sha256

    resolved = resolve_model(model_name)
    root = Path(cache_dir) if cache_dir else default_cache_dir().parent / "scratch"
    config = AutoConfig.from_pretrained(resolved, revision=revision, trust_remote_code=trust_remote_code)
    sha = weights_sha256(resolved) if Path(resolved).is_dir() else None
    key = hashlib.sha256(json.dumps({"source": resolved, "config": config.to_dict(), "weights": sha, "seed": seed,
                                     "revision": revision}, sort_keys=True, default=str).encode()).hexdigest()[:16]
    target = root / f"{Path(resolved).name or 'model'}-random-{key}"
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{key}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    torch.manual_seed(seed)
    model = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    model.save_pretrained(tmp, safe_serialization=True)
    AutoTokenizer.from_pretrained(resolved, revision=revision,
                                  trust_remote_code=trust_remote_code).save_pretrained(tmp)
    copy_sentence_files(Path(resolved), tmp)
    (tmp / "SCRATCH.json").write_text(json.dumps({"source": resolved, "source_sha256": sha, "seed": seed,
                                                  "note": "random initialisation of the source architecture"},
                                                 indent=2))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


# --------------------------------------------------------------------------- summary

def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None, None
    arr = np.asarray(vals)
    return float(arr.mean()), (float(arr.std(ddof=1)) if len(arr) > 1 else None)


def _size_order(size: int | str) -> float:
    return math.inf if size == "all" else float(size)


def summarize(runs: Sequence[dict[str, Any]], metric: str, strategies: Sequence[str] | None = None
              ) -> list[dict[str, Any]]:
    """One row per (strategy, size): held-out mean and sample std over seeds (ddof=1),
    train-sample mean, gap mean/std, params, mean wall time, max peak memory."""
    ok = [r for r in runs if "error" not in r]
    order = list(strategies) if strategies else list(dict.fromkeys(r["strategy"] for r in ok))
    sizes = sorted({r["size"] for r in ok}, key=_size_order)
    rows = []
    for s in order:
        for size in sizes:
            group = [r for r in ok if r["strategy"] == s and r["size"] == size]
            if not group:
                continue
            ho_m, ho_s = _mean_std([r["held_out"].get(metric) for r in group])
            tr_m, _ = _mean_std([r["train_sample"].get(metric) for r in group])
            gap_m, gap_s = _mean_std([r["gap"] for r in group])
            wall_m, _ = _mean_std([r["wall_s"] for r in group])
            cuda = [r["cuda_peak_mb"] for r in group if r.get("cuda_peak_mb") is not None]
            other = {}
            for name in group[0]["held_out"]:
                other[name] = _mean_std([r["held_out"].get(name) for r in group])[0]
            rows.append({
                "strategy": s, "size": size, "n_train": int(group[0]["n_train"]), "n_seeds": len(group),
                "seeds": [r["seed"] for r in group],
                "held_out_mean": ho_m, "held_out_std": ho_s, "train_sample_mean": tr_m,
                "gap_mean": gap_m, "gap_std": gap_s,
                "trainable_params": int(group[0]["trainable_params"]), "total_params": int(group[0]["total_params"]),
                "wall_s_mean": wall_m, "peak_rss_mb": max(r["peak_rss_mb"] for r in group),
                "cuda_peak_mb": max(cuda) if cuda else None,
                "epochs": group[0].get("epochs"), "held_out_means": other,
            })
    return rows


def recommend(summary: Sequence[dict[str, Any]], metric: str, tolerance: float = TOLERANCE,
              gap_warning: float = 0.05) -> dict[str, Any]:
    """Read the summary: per size, the best strategy and the cheapest one within
    ``max(tolerance, std of the best)`` of it; then the findings the rules of thumb are about
    (where frozen is competitive, where fine-tuning pulls ahead, how far scratch lags, where
    the train/held-out gap exceeds ``gap_warning``)."""
    if not summary:
        return {"headline": "no successful runs", "findings": [], "by_size": []}
    sizes = sorted({(r["size"], r["n_train"]) for r in summary}, key=lambda x: x[1])
    by_size = []
    for size, n in sizes:
        rows = [r for r in summary if r["size"] == size]
        best = max(rows, key=lambda r: r["held_out_mean"])
        tol = max(tolerance, best["held_out_std"] or 0.0)
        competitive = [r for r in rows if r["held_out_mean"] >= best["held_out_mean"] - tol]
        cheapest = min(competitive, key=lambda r: (r["wall_s_mean"] or 0.0, r["trainable_params"]))
        by_size.append({"size": size, "n_train": n, "best": best["strategy"], "best_mean": best["held_out_mean"],
                        "best_std": best["held_out_std"], "tolerance": tol,
                        "competitive": [r["strategy"] for r in competitive], "recommended": cheapest["strategy"],
                        "recommended_mean": cheapest["held_out_mean"], "recommended_wall_s": cheapest["wall_s_mean"],
                        "best_wall_s": best["wall_s_mean"]})
    findings = []
    for b in by_size:
        line = (f"n={b['n_train']:,}: best {b['best']} {report.fmt_mean_std(b['best_mean'], b['best_std'])}")
        if b["recommended"] != b["best"]:
            line += (f"; {b['recommended']} is within {b['tolerance']:.3f} "
                     f"({report.fmt_num(b['recommended_mean'])}) in {report.fmt_seconds(b['recommended_wall_s'])} "
                     f"instead of {report.fmt_seconds(b['best_wall_s'])}")
        findings.append(line + ".")

    def mean_of(s: str, size: Any) -> dict[str, Any] | None:
        return next((r for r in summary if r["strategy"] == s and r["size"] == size), None)

    strategies = list(dict.fromkeys(r["strategy"] for r in summary))
    if "frozen" in strategies:
        comp = [b["n_train"] for b in by_size if "frozen" in b["competitive"]]
        if comp:
            findings.append("frozen is within tolerance of the best at n = " + ", ".join(f"{n:,}" for n in comp) + ".")
        else:
            findings.append("frozen is never within tolerance of the best strategy.")
        for s in strategies:
            if s in ("frozen", "scratch"):
                continue
            diffs = []
            for b in by_size:
                a, f = mean_of(s, b["size"]), mean_of("frozen", b["size"])
                if a and f:
                    diffs.append((b["n_train"], a["held_out_mean"] - f["held_out_mean"]))
            if diffs:
                findings.append(f"{s} minus frozen: " + ", ".join(f"{d:+.3f} at n={n:,}" for n, d in diffs) + ".")
    if "scratch" in strategies:
        lags = []
        for b in by_size:
            sc = mean_of("scratch", b["size"])
            others = [r for r in summary if r["size"] == b["size"] and r["strategy"] != "scratch"]
            if sc and others:
                top = max(others, key=lambda r: r["held_out_mean"])
                lags.append((b["n_train"], top["held_out_mean"] - sc["held_out_mean"], top["strategy"]))
        if lags:
            findings.append("scratch lags the best pretrained strategy by " + ", ".join(
                f"{d:.3f} at n={n:,} ({s})" for n, d, s in lags) + ".")
    over = [r for r in summary if r["gap_mean"] is not None and r["gap_mean"] > gap_warning]
    if over:
        findings.append(f"overfitting (train-sample − held-out {metric} > {gap_warning}): " + ", ".join(
            f"{r['strategy']} at n={r['n_train']:,} ({r['gap_mean']:+.3f})" for r in over) + ".")
    else:
        findings.append(f"no strategy/size has a mean train-sample − held-out gap above {gap_warning}.")
    last = by_size[-1]
    headline = (f"With {last['n_train']:,} labelled examples use {last['recommended']} "
                f"(held-out {metric} {report.fmt_num(last['recommended_mean'])}"
                + (f", best is {last['best']} {report.fmt_num(last['best_mean'])}" if last["recommended"] != last["best"]
                   else "") + ").")
    return {"headline": headline, "findings": findings, "by_size": by_size, "tolerance": tolerance,
            "gap_warning": gap_warning}


# --------------------------------------------------------------------------- planning

def _parse_sizes(sizes: Sequence[int | str]) -> list[int | str]:
    out: list[int | str] = []
    for s in sizes:
        if isinstance(s, str) and s.strip().lower() == "all":
            out.append("all")
            continue
        try:
            v = int(s)
        except (TypeError, ValueError):
            v = -1
        if v < 2 or (isinstance(s, float) and not float(s).is_integer()):
            raise ConfigError("compare sizes", expected="integers >= 2 or 'all'", found=repr(s),
                              fix="pass e.g. --sizes 100 500 all")
        out.append(v)
    if not out:
        raise ConfigError("compare sizes", expected="at least one size", found="none", fix="pass --sizes 100 all")
    return out


def work_units(strategy: str, n: int, epochs: int, batch_size: int, n_eval: int,
               evaluations: int | None = None) -> float:
    """Rough cost of a run in optimizer-step equivalents, to extrapolate run times for the ETA.

    ``frozen``: one encoder forward pass over train + held-out (the head epochs are negligible).
    Others: per epoch, ``ceil(n / batch)`` steps, plus ``evaluations`` (default: one an epoch)
    of ``n_eval`` examples (forward only, about a third of a training step per example)."""
    if strategy == "frozen":
        return (n + n_eval) / batch_size
    if strategy == "contrastive":  # SetFit's 20 rounds x 2 pairs per example, 16 pairs (32 sentences) a step
        return (n + n_eval) / batch_size + 2 * 20 * n / 16 * (32 / batch_size)
    evaluations = epochs if evaluations is None else evaluations
    return epochs * math.ceil(n / batch_size) + evaluations * n_eval / (3 * batch_size)


def _eta(done: Sequence[dict[str, Any]], remaining: Sequence[tuple[str, int, float]]) -> float | None:
    """Seconds left for ``remaining`` ``(strategy, n_train, work_units)``: the mean time of the
    same (strategy, n) when seen, else the strategy's seconds per work unit so far, else the
    mean run time."""
    ok = [r for r in done if "error" not in r and r.get("wall_s") is not None]
    if not ok:
        return None
    overall = float(np.mean([r["wall_s"] for r in ok]))
    total = 0.0
    for s, n, units in remaining:
        same = [r["wall_s"] for r in ok if r["strategy"] == s and r["n_train"] == n]
        if same:
            total += float(np.mean(same))
            continue
        rates = [r["wall_s"] / r["work_units"] for r in ok if r["strategy"] == s and r.get("work_units")]
        total += float(np.mean(rates)) * units if rates else overall
    return total


def _settings_key(cfg: RecipeConfig, strategy: str) -> str:
    d = cfg.to_dict()
    d.pop("output", None)
    d.pop("hub", None)
    return json.dumps({"cfg": d, "compare_strategy": strategy}, sort_keys=True, default=str)


def _resolve_metric(task: str, metric: str | None, base: dict[str, Any]) -> str:
    from nlp_transfer.model import get_task
    spec = get_task(task)
    ev = base.get("eval") or {}
    return metric or ev.get("metric_for_best") or spec.metric_for_best


# --------------------------------------------------------------------------- the comparison

def _check_grid(strategies: Sequence[str], sizes: Sequence[int | str], seeds: int | Sequence[int],
                budget_epochs: int | None) -> tuple[list[str], list[int | str], list[int]]:
    """The strategies, sizes and seeds of a comparison, validated before any work."""
    unknown = [s for s in strategies if s not in STRATEGY_CHOICES]
    if unknown or not strategies:
        raise ConfigError("compare strategies", expected=f"some of {list(STRATEGY_CHOICES)}",
                          found=repr(list(unknown or strategies)), fix="pass e.g. --strategies frozen lora full scratch")
    seed_list = list(range(int(seeds))) if isinstance(seeds, (int, np.integer)) else [int(s) for s in seeds]
    if not seed_list:
        raise ConfigError("compare seeds", expected="at least 1 seed", found=repr(seeds), fix="pass --seeds 3")
    if budget_epochs is not None and budget_epochs < 1:
        raise ConfigError("compare budget_epochs", expected="an integer >= 1", found=repr(budget_epochs),
                          fix="pass --budget-epochs 3")
    return list(dict.fromkeys(strategies)), _parse_sizes(sizes), seed_list


def _base_recipe(data: str | DataConfig | dict[str, Any], model: str, task: str, max_length: int | None,
                 batch_size: int | None, overrides: Sequence[str]) -> dict[str, Any]:
    """The recipe every run of the comparison shares (as a dict, before the per-run changes)."""
    if isinstance(data, DataConfig):
        data_d: dict[str, Any] = dict(vars(data))
    elif isinstance(data, dict):
        data_d = dict(data)
    else:
        data_d = {"name": str(data)}
    base: dict[str, Any] = {"model": {"name": model}, "data": data_d, "task": task, "train": {}, "eval": {},
                            "output": {}}
    if max_length is not None:
        base["model"]["max_length"] = int(max_length)
    if batch_size is not None:
        base["train"]["batch_size"] = int(batch_size)
    return apply_overrides(base, list(overrides))


@dataclass
class _Grid:
    """How each (strategy, size, seed) of a comparison becomes a recipe, and what it costs."""
    base: dict[str, Any]
    base_cfg: RecipeConfig
    out: Path
    feature_cache: Path
    n_of: dict[int | str, int]
    held_out_size: int
    budget_epochs: int | None
    min_steps: int | None
    resolved: str
    scratch_dir: Path | None = None

    @property
    def batch(self) -> int:
        return self.base_cfg.train.batch_size * self.base_cfg.train.gradient_accumulation_steps

    def epochs(self, strategy: str, size: int | str, concrete: str) -> int | None:
        """The explicit ``train.epochs`` of a run, or None to leave them to the strategy and the
        engine's step budget. With ``budget_epochs`` and ``min_steps`` both given, a small subset's
        budgeted epochs are raised here to reach ``min_steps`` optimizer steps (explicit epochs win
        over the engine's budget, so compare applies it)."""
        epochs = self.base["train"].get("epochs")
        budgeted = strategy_class(concrete).step_budget  # fine-tuning strategies (not frozen, contrastive)
        if budgeted and self.budget_epochs is not None:
            epochs = int(self.budget_epochs)
        if budgeted and epochs is not None:
            epochs = stretched_epochs(self.min_steps or 0, math.ceil(self.n_of[size] / self.batch), int(epochs))
        return epochs

    def config(self, strategy: str, size: int | str, seed: int) -> RecipeConfig:
        d = copy.deepcopy(self.base)
        concrete = "full" if strategy == "scratch" else strategy
        d["strategy"] = {**(d.get("strategy") if isinstance(d.get("strategy"), dict) else {}), "name": concrete}
        d["data"] = {**d["data"], "max_train_samples": None if size == "all" else int(size)}
        d["train"] = {**d.get("train", {}), "seed": int(seed)}
        epochs = self.epochs(strategy, size, concrete)
        if epochs is not None:
            d["train"]["epochs"] = int(epochs)
        if self.min_steps is not None:  # else the config's train.min_steps (the engine's step budget)
            d["train"]["min_steps"] = int(self.min_steps)
        if strategy == "scratch":
            d["model"] = {**d["model"], "name": str(self.scratch_dir)}
            if self.base_cfg.model.pooling == "auto":  # the pretrained model's fine-tuning pooling
                from nlp_transfer.model import declared_pooling
                d["model"]["pooling"] = declared_pooling(self.resolved) or "cls"
        d["output"] = {**d.get("output", {}), "dir": str(self.out / "runs" / f"{strategy}_n{size}_s{seed}"),
                       "report_to": ["none"], "overwrite": True, "progress_bars": False,
                       "cache_dir": str(self.feature_cache)}
        if "checkpoint_every_epoch" not in (self.base.get("output") or {}):
            # compare resumes whole runs; per-epoch training checkpoints (weights + optimizer) only cost I/O
            d["output"]["checkpoint_every_epoch"] = False
        return RecipeConfig.from_dict(d)

    def units(self, strategy: str, size: int | str, cfg: RecipeConfig) -> float:
        n = self.n_of[size]
        epochs = evals = cfg.resolved_train()["epochs"]
        if cfg.train.epochs is None and strategy_class(cfg.strategy.name).step_budget:
            # the engine's step budget: more epochs, as many evaluations as the default epochs
            epochs = stretched_epochs(cfg.train.min_steps, math.ceil(n / self.batch), epochs)
        return round(work_units(strategy, n, epochs, self.batch,
                                self.held_out_size + min(cfg.eval.train_sample_size, n), evals), 2)


def _plan_sizes(size_list: list[int | str], n_full: int, say: Callable[[str], None]) -> list[int | str]:
    """Sizes at or above the train split's size collapse into ``"all"``; smallest first."""
    plan_sizes: list[int | str] = []
    collapsed = []
    for s in size_list:
        if s != "all" and int(s) >= n_full:
            collapsed.append(s)
            s = "all"
        if s not in plan_sizes:
            plan_sizes.append(s)
    plan_sizes.sort(key=_size_order)
    if collapsed:
        say(f"[compare] sizes {collapsed} >= the {n_full:,} training examples: run as 'all'")
    return plan_sizes


def _reuse(record_path: Path, key: str) -> dict[str, Any] | None:
    """A finished run of the same settings (``resume``), else None."""
    if not record_path.is_file():
        return None
    try:
        old = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return None
    return old if old.get("settings_key") == key and "error" not in old else None


def _run_grid(grid: _Grid, plan: list[tuple[str, int | str, int]], metric: str, resume: bool, keep_models: bool,
              settings: dict[str, Any], say: Callable[[str], None], t_start: float) -> list[dict[str, Any]]:
    """Every run of the plan in order (finished ones reused), ``compare.json`` updated after each."""
    from nlp_transfer.recipe import train

    runs: list[dict[str, Any]] = []
    for i, (strategy, size, seed) in enumerate(plan, 1):
        cfg = grid.config(strategy, size, seed)
        key = _settings_key(cfg, strategy)
        old = _reuse(Path(cfg.output.dir) / "run.json", key) if resume else None
        if old is not None:
            old["resumed"] = True
            old["work_units"] = grid.units(strategy, size, cfg)
            runs.append(old)
            say(f"[compare] {i}/{len(plan)} {strategy} n={grid.n_of[size]:,} seed={seed}: reused finished run "
                f"({metric} {report.fmt_num(old['held_out'].get(metric))})")
            continue
        eta = _eta(runs, [(s, grid.n_of[z], grid.units(s, z, grid.config(s, z, sd))) for s, z, sd in plan[i - 1:]])
        say(f"[compare] {i}/{len(plan)} {strategy} n={grid.n_of[size]:,} seed={seed} "
            f"epochs={cfg.train.epochs or 'default'} | elapsed {report.fmt_seconds(time.time() - t_start)}"
            + (f", ETA {report.fmt_seconds(eta)}" if eta is not None else ""))
        rec = _run_one(train, cfg, strategy, size, seed, metric, key, keep_models)
        rec["work_units"] = grid.units(strategy, size, cfg)
        if "error" in rec and not any("error" not in r for r in runs):
            raise NLPTransferError(f"compare run {strategy} n={size} seed={seed}", expected="a successful run",
                                   found=rec["error"], fix=f"see {rec.get('log')}")
        runs.append(rec)
        if "error" in rec:
            say(f"[compare]   FAILED: {rec['error']} (log: {rec.get('log')})")
        else:
            say(f"[compare]   {metric} held-out {rec['held_out'][metric]:.4f} train-sample "
                f"{rec['train_sample'].get(metric, float('nan')):.4f} gap {rec['gap']:+.4f} in "
                f"{report.fmt_seconds(rec['wall_s'])} (best epoch {rec['best_epoch']} of {rec['epochs_run']})")
        _write_json(grid.out / "compare.json", {"format_version": FORMAT_VERSION, "settings": settings,
                                               "metric": metric, "runs": runs, "complete": False})
    return runs


def compare(data: str | DataConfig | dict[str, Any], model: str = "minilm",
            strategies: Sequence[str] = ("frozen", "lora", "full", "scratch"),
            sizes: Sequence[int | str] = (100, 500, 2000, "all"), seeds: int | Sequence[int] = 3,
            out_dir: str | Path = "outputs/compare", budget_epochs: int | None = None,
            min_steps: int | None = None, max_length: int | None = None, batch_size: int | None = None,
            metric: str | None = None, task: str = "sequence_classification",
            overrides: Sequence[str] = (), cache_dir: str | Path | None = None, resume: bool = True,
            keep_models: bool = False, title: str | None = None, tolerance: float = TOLERANCE,
            max_size: dict[str, int] | None = None, log: Callable[[str], None] | None = None) -> CompareResult:
    """Run ``strategies x sizes x seeds`` recipes on the same splits and budget, and write
    the table, the learning-curve PNG, the HTML report and ``compare.json`` into ``out_dir``.

    Args:
        data: dataset name/path (``"bbc_news"``, a file or folder), a ``DataConfig`` or its dict.
        model: the pretrained encoder (path, Hub id or ``"minilm"``).
        strategies: among ``frozen, lora, full, partial, scratch``.
        sizes: training-set sizes (stratified subsets of the train split) or ``"all"``;
            sizes at or above the train split's size collapse into ``"all"``.
        seeds: how many training seeds (0..N-1) or the explicit seeds.
        budget_epochs: epochs for the encoder-training strategies (default: each strategy's).
        min_steps: lower bound on optimizer steps per fine-tuning run (raises epochs for small
            subsets); None keeps the config's ``train.min_steps``, 0 turns the budget off.
        max_length / batch_size: ``model.max_length`` / ``train.batch_size`` for every run.
        metric: the held-out metric to compare (default: the task's ``metric_for_best``).
        overrides: recipe ``key=value`` overrides applied to every run (e.g. ``train.lr=3e-5``).
        cache_dir: feature cache for frozen runs (default: the recipe's); the random-init
            model for ``scratch`` is kept next to it.
        resume: reuse finished runs whose settings are unchanged.
        max_size: per-strategy cap on the training-set size (``{"full": 200}``): larger sizes
            are not run for that strategy (to fit expensive strategies into a CPU budget).
        keep_models: keep each run's weights (otherwise deleted after its metrics are read).
        log: progress printer (default: ``print`` to stdout, flushed).
    """
    from nlp_transfer.data import prepare_data
    from nlp_transfer.model.features import default_cache_dir
    from nlp_transfer.model import resolve_model

    import datasets
    import transformers

    datasets.disable_progress_bars()  # as train() does: the [compare] lines report progress
    transformers.utils.logging.disable_progress_bar()
    say = log or (lambda s: print(s, flush=True))
    t_start = time.time()
    strategies, size_list, seed_list = _check_grid(strategies, sizes, seeds, budget_epochs)
    base = _base_recipe(data, model, task, max_length, batch_size, overrides)
    base_cfg = RecipeConfig.from_dict(base)  # validates every key once, before any work
    metric = _resolve_metric(task, metric, base)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    feature_cache = Path(cache_dir) if cache_dir else (Path(base_cfg.output.cache_dir) if base_cfg.output.cache_dir
                                                       else default_cache_dir())

    # ---- the data once: sizes, held-out, labels -------------------------------------
    prepared = prepare_data(base_cfg.data, task)
    n_full = len(prepared.train)
    plan_sizes = _plan_sizes(size_list, n_full, say)
    grid = _Grid(base, base_cfg, out, feature_cache, {s: (n_full if s == "all" else int(s)) for s in plan_sizes},
                 len(prepared.held_out), budget_epochs, min_steps, resolve_model(model))
    if "scratch" in strategies:
        grid.scratch_dir = build_scratch_model(model, feature_cache.parent / "scratch",
                                               revision=base_cfg.model.revision,
                                               trust_remote_code=base_cfg.model.trust_remote_code)
        say(f"[compare] scratch model (random init of {grid.resolved}): {grid.scratch_dir}")
    limits = dict(max_size or {})
    bad = [k for k in limits if k not in strategies]
    if bad:
        raise ConfigError("compare max_size", expected=f"strategies among {strategies}", found=repr(bad),
                          fix="cap only strategies that are compared, e.g. --max-size full=200")
    plan = [(strategy, size, seed) for seed in seed_list for size in plan_sizes for strategy in strategies
            if strategy not in limits or grid.n_of[size] <= int(limits[strategy])]
    settings = {
        "data": base_cfg.data.name, "model": model, "model_path": grid.resolved, "task": task, "metric": metric,
        "strategies": strategies, "sizes": [str(s) for s in plan_sizes], "seeds": seed_list,
        "budget_epochs": budget_epochs, "min_steps": min_steps, "max_size": limits or None,
        "max_length": base_cfg.model.max_length, "batch_size": base_cfg.train.batch_size,
        "overrides": list(overrides), "train_size_full": n_full, "held_out_size": len(prepared.held_out),
        "held_out_source": prepared.stats.get("held_out_source"), "label_names": prepared.label_names,
        "held_out_chance": _majority_share(prepared.held_out) if task == "sequence_classification" else None,
        "data_seed": base_cfg.data.seed, "feature_cache": str(feature_cache),
        "scratch_model": str(grid.scratch_dir) if grid.scratch_dir else None,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, torch threads {_torch_threads()}, {_device()}",
        "python": platform.python_version(),
    }
    say(f"[compare] {len(plan)} runs: {len(strategies)} strategies x {len(plan_sizes)} sizes "
        f"{[report.fmt_size(s, n_full) for s in plan_sizes]} x {len(seed_list)} seeds; "
        f"held-out {len(prepared.held_out):,} examples; metric {metric}")
    runs = _run_grid(grid, plan, metric, resume, keep_models, settings, say, t_start)
    return _conclude(out, runs, metric, strategies, settings, tolerance, base_cfg, title, model, say, t_start)


def _conclude(out: Path, runs: list[dict[str, Any]], metric: str, strategies: list[str], settings: dict[str, Any],
              tolerance: float, base_cfg: RecipeConfig, title: str | None, model: str, say: Callable[[str], None],
              t_start: float) -> CompareResult:
    """Summary, recommendation, table/plot/HTML/JSON outputs and the closing printout."""
    summary = summarize(runs, metric, strategies)
    rec_ = recommend(summary, metric, tolerance=tolerance, gap_warning=base_cfg.eval.gap_warning)
    title = title or f"nlp-transfer compare: {Path(str(base_cfg.data.name)).name} with {Path(model).name}"
    files = _write_outputs(out, title, summary, runs, metric, rec_, settings)
    total = time.time() - t_start
    payload = {"format_version": FORMAT_VERSION, "title": title, "settings": settings, "metric": metric,
               "runs": runs, "summary": summary, "recommendation": rec_, "complete": True,
               "total_wall_s": round(total, 1), "runs_wall_s": round(sum(r.get("wall_s") or 0.0 for r in runs), 1),
               "resumed_runs": sum(1 for r in runs if r.get("resumed")),
               "files": {k: p.name for k, p in files.items()}}
    _write_json(out / "compare.json", payload)
    files["json"] = out / "compare.json"
    say(report.text_table(summary, metric))
    say("[compare] " + rec_["headline"])
    for f in rec_["findings"]:
        say(f"[compare]   - {f}")
    say(f"[compare] done in {report.fmt_seconds(total)}: " + ", ".join(str(p) for p in files.values()))
    return CompareResult(out_dir=out, metric=metric, runs=runs, summary=summary, recommendation=rec_, files=files,
                         settings=settings)


def _majority_share(ds: Any) -> float:
    """Accuracy of always predicting the most frequent held-out class (the plot's chance line)."""
    y = np.asarray(ds["label"][:])
    return float(np.bincount(y).max() / len(y))


def _torch_threads() -> int:
    import torch
    return torch.get_num_threads()


def _device() -> str:
    import torch
    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return "cpu"


def _run_one(train: Callable[[RecipeConfig], Any], cfg: RecipeConfig, strategy: str, size: int | str, seed: int,
             metric: str, key: str, keep_models: bool) -> dict[str, Any]:
    """One recipe run with its stdout captured to a log, timed and memory-watched."""
    run_dir = Path(cfg.output.dir)
    log_path = run_dir.parent / f"{run_dir.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    rec: dict[str, Any] = {"strategy": strategy, "size": size, "seed": seed, "epochs": cfg.train.epochs,
                           "output_dir": str(run_dir), "log": str(log_path), "settings_key": key}
    buf = io.StringIO()
    t0 = time.perf_counter()
    with PeakMemory() as mem, warnings.catch_warnings(record=True) as caught, \
            contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        warnings.simplefilter("always")
        try:
            result = train(cfg)
        except Exception as e:  # recorded; the caller decides whether to stop
            result = None
            rec["error"] = f"{type(e).__name__}: {e}"
    rec["wall_s"] = round(time.perf_counter() - t0, 2)
    rec["peak_rss_mb"] = round(mem.peak_rss_mb, 1)
    rec["cuda_peak_mb"] = round(mem.cuda_peak_mb, 1) if mem.cuda_peak_mb is not None else None
    rec["warnings"] = sorted({str(w.message) for w in caught if "overfitting" in str(w.message)})
    log_path.write_text(buf.getvalue() + "".join(f"WARNING {w.message}\n" for w in caught))
    if result is None:
        return rec
    m = result.metrics
    ho, tr = m["held_out"], m.get("train_sample") or {}
    rec.update({
        "n_train": int(m["data"]["train_size"]), "held_out": ho, "train_sample": tr,
        "gap": (tr[metric] - ho[metric]) if metric in tr and metric in ho else None,
        "best_epoch": m["best_epoch"], "epochs_run": m["epochs_run"], "stopped_early": m["stopped_early"],
        "trainable_params": int(m["trainable_params"]), "total_params": int(m["total_params"]),
        "recipe_wall_s": m["wall_s"], "hyperparameters": m.get("hyperparameters"), "pooling": m.get("pooling"),
    })
    if rec["epochs"] is None:  # left to the strategy (and the step budget): what the engine resolved
        rec["epochs"] = (m.get("hyperparameters") or {}).get("epochs")
    if metric not in ho:
        rec["error"] = f"metric '{metric}' not among the held-out metrics {sorted(ho)}"
    if not keep_models:  # keep the metrics, drop the weights (and any training checkpoints)
        for p in run_dir.glob("*.safetensors"):
            p.unlink()
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    _write_json(run_dir / "run.json", rec)
    return rec


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def _write_outputs(out: Path, title: str, summary: list[dict[str, Any]], runs: list[dict[str, Any]], metric: str,
                   rec: dict[str, Any], settings: dict[str, Any]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    if summary:
        chance = settings.get("held_out_chance") if metric == "accuracy" else None
        files["png"] = report.learning_curve_png(summary, out / "learning_curve.png", metric, title,
                                                 gap_warning=rec.get("gap_warning"), chance=chance)
    notes = [
        "Held-out: the same split for every run; std is the sample std (ddof=1) over training seeds on fixed "
        "stratified subsets (one subset per size, drawn with data.seed).",
        "Each run keeps its best epoch by held-out metric (early stopping on the held-out split, identical for "
        "every strategy), so absolute numbers are slightly optimistic; comparisons between strategies are fair.",
        "Wall time is the whole train() call (data, model loading, training, evaluations, saving); "
        "frozen runs extract features once per subset (cached on disk), later seeds read the cache.",
        "Peak RSS is the peak resident memory of the whole process during the run.",
    ]
    md = [f"# {title}", "", report.markdown_table(summary, metric), "", f"**Recommendation.** {rec['headline']}", ""]
    md += [f"- {f}" for f in rec["findings"]]
    md += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    (out / "compare.md").write_text("\n".join(md) + "\n")
    files["md"] = out / "compare.md"
    (out / "report.html").write_text(report.html_report(title, summary, runs, metric, rec, files.get("png"),
                                                        {k: v for k, v in settings.items()}, notes))
    files["html"] = out / "report.html"
    return files


# --------------------------------------------------------------------------- CLI

def _parse_limits(items: Sequence[str] | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items or []:
        name, _, value = item.partition("=")
        try:
            out[name.strip()] = int(value)
        except ValueError:
            raise ConfigError("--max-size", expected="STRATEGY=N, e.g. full=200", found=repr(item),
                              fix="pass --max-size full=200 lora=500") from None
    return out


def _cmd_compare(args: argparse.Namespace) -> int:
    res = compare(data_config_from_args(args), model=args.model, strategies=args.strategies, sizes=args.sizes,
                  seeds=args.seeds, out_dir=args.out, budget_epochs=args.budget_epochs, min_steps=args.min_steps,
                  max_length=args.max_length, batch_size=args.batch_size, metric=args.metric, task=args.task,
                  overrides=args.set or [], cache_dir=args.cache_dir, resume=not args.no_resume,
                  keep_models=args.keep_models, title=args.title, max_size=_parse_limits(args.max_size))
    print(f"report: {res.files.get('html')}")
    return 0


def add_subcommand(sub: "argparse._SubParsersAction") -> None:  # noqa: F821
    p = sub.add_parser("compare", help="train every strategy x training-set size x seed on the same splits; "
                                       "table, learning curves, HTML report",
                       description=__doc__.split("\n\n")[0])
    add_data_arguments(p)
    p.add_argument("--model", default="minilm", help="pretrained encoder (path, Hub id or 'minilm')")
    p.add_argument("--strategies", nargs="+", default=["frozen", "lora", "full", "scratch"],
                   choices=STRATEGY_CHOICES, metavar="STRATEGY",
                   help=f"some of {', '.join(STRATEGY_CHOICES)} (scratch = same architecture, random init)")
    p.add_argument("--sizes", nargs="+", default=["100", "500", "2000", "all"],
                   help="training-set sizes (stratified subsets) or 'all'")
    p.add_argument("--seeds", type=int, default=3, help="number of training seeds (0..N-1)")
    p.add_argument("--out", default="outputs/compare", help="output folder")
    p.add_argument("--budget-epochs", type=int, default=None,
                   help="epochs for lora/full/partial/scratch (frozen trains its head on cached features)")
    p.add_argument("--min-steps", type=int, default=None,
                   help="at least this many optimizer steps per fine-tuning run (more epochs for small "
                   "subsets; default: the config's train.min_steps, 0 turns it off)")
    p.add_argument("--max-size", nargs="+", metavar="STRATEGY=N", default=None,
                   help="skip sizes above N for that strategy, e.g. --max-size full=200 (CPU budgets)")
    p.add_argument("--max-length", type=int, default=None, help="model.max_length for every run")
    p.add_argument("--batch-size", type=int, default=None, help="train.batch_size for every run")
    p.add_argument("--metric", default=None, help="held-out metric to compare (default: the task's)")
    p.add_argument("--task", default="sequence_classification", choices=["sequence_classification", "regression"])
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="recipe override for every run, e.g. --set train.lr=3e-5 (repeatable)")
    p.add_argument("--cache-dir", default=None, help="frozen feature cache (default: the recipe's)")
    p.add_argument("--title", default=None)
    p.add_argument("--no-resume", action="store_true", help="re-train runs that already finished")
    p.add_argument("--keep-models", action="store_true", help="keep each run's weights")
    p.set_defaults(func=_cmd_compare)

