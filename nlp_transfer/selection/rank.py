"""``nlp-transfer rank-models``: which pretrained model fits this data, before training any.

For every candidate model, frozen sentence features of a stratified sample of the *train*
split are extracted once (and cached on disk), for one or more layer aggregations:

* ``last`` -- the pooled last hidden layer (exactly what ``strategy=frozen`` trains on, and
  stored under the same cache key, so a frozen run on the same tokens reuses it);
* ``mean`` -- the average over all transformer layers (``output_hidden_states``, the
  embedding output excluded) of the pooled hidden states: lower layers carry more
  lexical/surface information, which helps some tasks.

Each feature matrix is scored by :mod:`nlp_transfer.selection.transferability`: LogME, k-fold
logistic-regression (linear probe) accuracy with its spread over folds, and a cosine kNN
probe. Candidates are ranked by the probe (or ``rank_by="logme"``/``"knn"``); the
recommendation takes the smallest model whose probe is within the fold spread of the best
(and says so), and warns when every candidate is close to chance.

The held-out split is never touched: model selection happens on training data only.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from nlp_transfer.config import DataConfig
from nlp_transfer.errors import ConfigError, DataError

__all__ = ["LAYER_CHOICES", "RankResult", "rank_models", "extract_layer_features", "stratified_indices",
           "add_subcommand"]

LAYER_CHOICES = ("last", "mean")
RANK_BY = ("probe", "logme", "knn")
#: Normalised probe skill (probe - chance) / (1 - chance) under which features are "near chance".
NEAR_CHANCE_SKILL = 0.20


@dataclass
class RankResult:
    """Ranked candidates (best first) and the recommendation."""
    rows: list[dict[str, Any]]
    recommendation: dict[str, Any]
    sample_size: int
    n_classes: int | None
    chance: float
    rank_by: str
    task: str = "sequence_classification"
    settings: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        """Fixed-width ranked table (what the CLI prints)."""
        metric = "spearman" if self.task == "regression" else "acc"
        head = ["#", "model", "layers", "LogME", f"probe {metric}", f"kNN {metric}", "dim", "params", "features"]
        rows = []
        for i, r in enumerate(self.rows, 1):
            rows.append([str(i), r["model"], r["layers"], f"{r['logme']:.3f}",
                         f"{r['probe_mean']:.3f} ± {r['probe_std']:.3f}", f"{r['knn_mean']:.3f} ± {r['knn_std']:.3f}",
                         str(r["dim"]), _fmt_params(r["params"]),
                         "cached" if r["cached"] else f"{r['feature_s']:.1f} s"])
        widths = [max(len(h), *(len(x[i]) for x in rows)) for i, h in enumerate(head)]
        fmt = "  ".join(f"{{:<{w}}}" if i in (1, 2) else f"{{:>{w}}}" for i, w in enumerate(widths))
        return "\n".join([fmt.format(*head), "  ".join("-" * w for w in widths)] + [fmt.format(*r) for r in rows])

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "recommendation": self.recommendation, "sample_size": self.sample_size,
                "n_classes": self.n_classes, "chance": self.chance, "rank_by": self.rank_by, "task": self.task,
                "settings": self.settings}


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.1f}K"


# --------------------------------------------------------------------------- sampling

def stratified_indices(labels: np.ndarray | None, n_total: int, size: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded sample of ``size`` rows, stratified by ``labels`` when given
    (falls back to a plain random sample if a class is too small to stratify)."""
    if size is None or size >= n_total:
        return np.arange(n_total)
    from sklearn.model_selection import train_test_split
    idx = np.arange(n_total)
    try:
        keep, _ = train_test_split(idx, train_size=size, random_state=seed, stratify=labels)
    except ValueError:
        keep, _ = train_test_split(idx, train_size=size, random_state=seed)
    return np.sort(keep)


# --------------------------------------------------------------------------- features

def _cache_path(cache_dir: Path, key_parts: dict[str, Any], fingerprint: str) -> Path:
    from nlp_transfer.model.features import cache_key
    return cache_dir / f"{cache_key(fingerprint=fingerprint, **key_parts)}.npy"


def _save_atomic(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, np.ascontiguousarray(arr, dtype=np.float32))
    os.replace(tmp, path)


@torch.inference_mode()
def _extract(encoder: torch.nn.Module, ds: Any, collate: Any, batch_size: int, device: torch.device,
             pooling: str, layers: Sequence[str]) -> dict[str, np.ndarray]:
    """One encoder pass over ``ds`` (length-sorted batches, sharded over the processes as
    :func:`nlp_transfer.model.features.extract_features` does), every aggregation at once."""
    from nlp_transfer.data import MODEL_INPUTS
    from nlp_transfer.model.features import batch_rows, length_batches, sharded_map
    from nlp_transfer.model import pool

    encoder.eval()
    batches = length_batches(ds, batch_size)
    dim = encoder.config.hidden_size
    out = {agg: np.empty((len(ds), dim), dtype=np.float32) for agg in layers}
    keep = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in ds.column_names]
    view = ds.select_columns(keep)
    want_all = "mean" in layers

    def encode(b: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        batch = {k: v.to(device) for k, v in collate(batch_rows(view, batches[b])).items() if k in MODEL_INPUTS}
        res = encoder(**batch, output_hidden_states=want_all)
        mask = batch["attention_mask"]
        rows = {}
        if "last" in layers:
            rows["last"] = pool(res.last_hidden_state, mask, pooling).float().cpu().numpy()
        if want_all:
            states = res.hidden_states[1:] if len(res.hidden_states) > 1 else res.hidden_states
            rows["mean"] = torch.stack([pool(h, mask, pooling) for h in states]).mean(0).float().cpu().numpy()
        return batches[b], rows

    for idx, rows in sharded_map(len(batches), encode):
        for agg, arr in rows.items():
            out[agg][idx] = arr
    return out


def extract_layer_features(model_name: str, ds: Any, layers: Sequence[str], max_length: int, pooling: str = "auto",
                           batch_size: int = 64, cache_dir: Path | None = None, device: torch.device | None = None,
                           revision: str | None = None, trust_remote_code: bool = False, num_labels: int = 2
                           ) -> dict[str, Any]:
    """Pooled features of ``ds`` (a split with a ``text`` column) for each aggregation in ``layers``.

    Returns ``{"features": {agg: array}, "cached": {agg: bool}, "seconds": float, "params": int,
    "dim": int, "pooling": str, "path": str}``. Cache entries use the recipe's key scheme
    (:func:`nlp_transfer.model.features.cache_key`); ``mean`` gets ``pooling + "+layers=mean"``."""
    from transformers import AutoTokenizer

    from nlp_transfer.data import tokenize
    from nlp_transfer.model.features import all_processes_agree, process_state, token_fingerprint
    from nlp_transfer.model import build_model, count_params, weights_sha256
    from nlp_transfer.training.evaluate import default_collator

    t0 = time.perf_counter()
    model, resolved, pooling = build_model(model_name, "sequence_classification", num_labels, pooling,
                                           revision=revision, trust_remote_code=trust_remote_code, strategy="frozen")
    encoder = model.encoder
    _, total = count_params(encoder)
    limit = getattr(encoder.config, "max_position_embeddings", None)
    if limit and max_length > limit:
        raise ConfigError("max_length", expected=f"<= {limit} (the position limit of {model_name})",
                          found=str(max_length), fix=f"pass --max-length {min(limit, 512)}")
    tokenizer = AutoTokenizer.from_pretrained(resolved, revision=revision, trust_remote_code=trust_remote_code)
    tok = tokenize(ds, tokenizer, max_length)
    sha = weights_sha256(resolved) if Path(resolved).is_dir() else None
    fp = token_fingerprint(tok)
    feats: dict[str, np.ndarray] = {}
    cached: dict[str, bool] = {}
    paths: dict[str, Path | None] = {}
    for agg in layers:
        parts = {"model_id": resolved, "revision": revision, "weights_sha": sha,
                 "pooling": pooling if agg == "last" else f"{pooling}+layers={agg}", "max_length": max_length}
        paths[agg] = _cache_path(cache_dir, parts, fp) if cache_dir is not None else None
        p = paths[agg]
        if p is not None and p.is_file():
            try:
                arr = np.load(p)
                if arr.shape == (len(tok), encoder.config.hidden_size):
                    feats[agg], cached[agg] = arr, True
                    continue
            except (ValueError, OSError):
                pass
        cached[agg] = False
    state = process_state()
    missing = [agg for agg in layers if not all_processes_agree(cached[agg], state)]
    if missing:
        dev = device or state.device
        encoder.to(dev)
        new = _extract(encoder, tok, default_collator(tokenizer), batch_size, dev, pooling, missing)
        for agg, arr in new.items():
            feats[agg], cached[agg] = arr, False
            if paths[agg] is not None and state.is_local_main_process:
                _save_atomic(paths[agg], arr)
        state.wait_for_everyone()
    return {"features": feats, "cached": cached, "seconds": time.perf_counter() - t0, "params": int(total),
            "dim": int(encoder.config.hidden_size), "pooling": pooling, "path": resolved}


# --------------------------------------------------------------------------- ranking

def _data_config(data: str | DataConfig | dict[str, Any], **columns: Any) -> DataConfig:
    if isinstance(data, DataConfig):
        return data
    if isinstance(data, dict):
        return DataConfig(**data)
    kw = {k: v for k, v in columns.items() if v is not None}
    return DataConfig(name=str(data), **kw)


def _parse_layers(layers: str | Sequence[str]) -> list[str]:
    items = [x.strip() for x in (layers.split(",") if isinstance(layers, str) else layers) if x and x.strip()]
    bad = [x for x in items if x not in LAYER_CHOICES]
    if bad or not items:
        raise ConfigError("layers", expected=f"a comma-separated subset of {list(LAYER_CHOICES)}",
                          found=repr(",".join(bad) if bad else layers), fix="pass --layers last,mean")
    return list(dict.fromkeys(items))


def recommend_model(rows: Sequence[dict[str, Any]], rank_by: str, chance: float, regression: bool) -> dict[str, Any]:
    """The best row, or the smallest model within the best row's fold spread."""
    score = _score_key(rank_by)
    rows = sorted(rows, key=lambda r: (-r[score], -r["logme"], r["params"]))
    best = rows[0]
    if rank_by == "logme":
        pick, text_tie = best, ""
    else:
        spread = best[f"{rank_by}_std"]
        ties = [r for r in rows if r[score] >= best[score] - spread]
        pick = min(ties, key=lambda r: (r["params"], -r[score]))
        text_tie = ""
        if pick is not best:
            text_tie = (f" It scores {pick[score]:.3f}, within the fold spread ({spread:.3f}) of the best "
                        f"({best['model']} [{best['layers']}] {best[score]:.3f}), with "
                        f"{best['params'] / max(pick['params'], 1):.1f}x fewer parameters.")
    floor = 0.0 if regression else chance
    skill = (pick["probe_mean"] - floor) / (1 - floor) if floor < 1 else 0.0
    text = (f"Use {pick['model']} with layers={pick['layers']}: probe {pick['probe_mean']:.3f} ± "
            f"{pick['probe_std']:.3f}, LogME {pick['logme']:.3f}, kNN {pick['knn_mean']:.3f}"
            + ("" if regression else f" (chance {chance:.3f})") + "." + text_tie)
    logme_best = max(rows, key=lambda r: r["logme"])
    if rank_by != "logme" and (logme_best["model"], logme_best["layers"]) != (best["model"], best["layers"]):
        text += (f" LogME prefers {logme_best['model']} [{logme_best['layers']}] ({logme_best['logme']:.3f}); "
                 "the probe measures what a frozen head reaches, LogME is a cheaper proxy.")
    warnings = []
    if skill < NEAR_CHANCE_SKILL:
        warnings.append(f"every candidate is near chance (best probe skill {skill:.2f} < {NEAR_CHANCE_SKILL}): the "
                        "frozen features do not fit this task; fine-tune (strategy=full) or try other models")
    return {"model": pick["model"], "layers": pick["layers"], "path": pick["path"], "skill": skill, "text": text,
            "warnings": warnings, "best_by_score": {"model": best["model"], "layers": best["layers"]}}


def _score_key(rank_by: str) -> str:
    return {"probe": "probe_mean", "logme": "logme", "knn": "knn_mean"}[rank_by]


def _check_arguments(models: list[str], rank_by: str, task: str, sample: int | None) -> None:
    """One-line errors for the arguments, and every model path resolved before any extraction."""
    from nlp_transfer.model import resolve_model

    if not models:
        raise ConfigError("models", expected="at least one model", found="none", fix="pass --models minilm <other>")
    if rank_by not in RANK_BY:
        raise ConfigError("rank_by", expected=f"one of {list(RANK_BY)}", found=repr(rank_by), fix="pass --rank-by probe")
    if task not in ("sequence_classification", "regression"):
        raise ConfigError("task", expected="sequence_classification or regression", found=repr(task),
                          fix="rank models on a classification or regression dataset")
    if sample is not None and sample < 10:
        raise ConfigError("sample", expected="at least 10 examples", found=str(sample), fix="pass --sample 2000")
    for m in models:
        resolve_model(m)


def _row(model: str, layers: str, ext: dict[str, Any], sc: dict[str, Any]) -> dict[str, Any]:
    """One row of the ranking: a model's features (``ext``) at one layer aggregation, scored (``sc``)."""
    return {"model": model, "path": ext["path"], "layers": layers, "pooling": ext["pooling"],
            "params": ext["params"], "dim": ext["dim"], "logme": sc["logme"],
            "probe_mean": sc["linear_probe"]["mean"], "probe_std": sc["linear_probe"]["std"],
            "probe_scores": sc["linear_probe"]["scores"], "knn_mean": sc["knn"]["mean"],
            "knn_std": sc["knn"]["std"], "feature_s": round(ext["seconds"], 2), "cached": ext["cached"][layers],
            "score_s": sc["timings_s"], "metric": sc["linear_probe"]["metric"]}


def rank_models(data: str | DataConfig | dict[str, Any], models: Sequence[str], layers: str | Sequence[str] = "last",
                sample: int | None = 2000, text_column: str | None = None, label_column: str | None = None,
                label_names: list[str] | None = None, text_pair_column: str | None = None, max_length: int = 256,
                pooling: str = "auto", task: str = "sequence_classification", rank_by: str = "probe",
                folds: int = 5, seed: int = 0, batch_size: int = 64, cache_dir: str | Path | None = None,
                log: Any = None) -> RankResult:
    """Rank pretrained ``models`` (paths, Hub ids, ``minilm``) by how well their frozen
    features fit ``data``; see the module docstring.

    Args:
        data: dataset name/path or a ``DataConfig`` (column options as for ``train``).
        models: candidate encoders (duplicates are removed).
        layers: ``"last"``, ``"mean"`` or ``"last,mean"`` (or a list).
        sample: stratified sample of the train split to score (``None`` = all of it).
        rank_by: ``probe`` (linear-probe mean), ``logme`` or ``knn``.
        cache_dir: feature cache (default: the recipe's frozen-feature cache).
    """
    from nlp_transfer.data import prepare_data
    from nlp_transfer.model.features import default_cache_dir
    from nlp_transfer.selection.transferability import score_features

    import datasets
    import transformers

    datasets.disable_progress_bars()  # as train() does: our own lines report progress
    transformers.utils.logging.disable_progress_bar()
    from nlp_transfer.model.features import process_state
    main = process_state().is_main_process  # on N processes (torchrun): one printout
    say = log or (lambda s: print(s, flush=True) if main else None)
    models = list(dict.fromkeys(models))
    _check_arguments(models, rank_by, task, sample)
    agg = _parse_layers(layers)
    regression = task == "regression"
    cfg = _data_config(data, text_column=text_column, label_column=label_column, label_names=label_names,
                       text_pair_column=text_pair_column)
    prepared = prepare_data(cfg, task)
    train = prepared.train
    y_all = np.asarray(train["label"][:])
    idx = stratified_indices(None if regression else y_all, len(train), sample, seed)
    ds = train if len(idx) == len(train) else train.select(idx)  # all rows: same tokens as a frozen run
    y = y_all[idx]
    if not regression:
        counts = np.bincount(y, minlength=len(prepared.label_names or []))
        if (counts[counts > 0] < 2).any():
            raise DataError("rank-models sample", expected="at least 2 examples of every class",
                            found=f"class counts {counts.tolist()}", fix="raise --sample or merge rare classes")
    n_classes = None if regression else int(len(np.unique(y)))
    chance = 0.0 if regression else float(np.bincount(y).max() / len(y))
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    say(f"[rank-models] {len(models)} model(s) x layers {agg} on a {'stratified ' if not regression else ''}"
        f"sample of {len(ds):,} / {len(train):,} training examples"
        + ("" if regression else f", {n_classes} classes, chance {chance:.3f}"))
    rows: list[dict[str, Any]] = []
    for m in models:
        ext = extract_layer_features(m, ds, agg, max_length, pooling, batch_size, cache,
                                     num_labels=max(n_classes or 2, 2))
        for a in agg:
            sc = score_features(ext["features"][a], y, regression=regression, folds=folds, seed=seed)
            rows.append(_row(m, a, ext, sc))
            where = "cached features" if ext["cached"][a] else f"features in {ext['seconds']:.1f} s"
            say(f"[rank-models] {m} [{a}]: LogME {sc['logme']:.3f}, probe {sc['linear_probe']['mean']:.3f} ± "
                f"{sc['linear_probe']['std']:.3f}, kNN {sc['knn']['mean']:.3f} ({where})")
    key = _score_key(rank_by)
    rows.sort(key=lambda r: (-r[key], -r["logme"], r["params"]))
    rec = recommend_model(rows, rank_by, chance, regression)
    settings = {"data": cfg.name, "models": models, "layers": agg, "sample": sample, "max_length": max_length,
                "pooling": pooling, "folds": folds, "seed": seed, "task": task, "cache_dir": str(cache)}
    return RankResult(rows=rows, recommendation=rec, sample_size=len(ds), n_classes=n_classes, chance=chance,
                      rank_by=rank_by, task=task, settings=settings)


# --------------------------------------------------------------------------- CLI

def _cmd_rank(args: argparse.Namespace) -> int:
    from nlp_transfer.data.args import data_config_from_args
    res = rank_models(data_config_from_args(args), args.models, layers=args.layers, sample=args.sample,
                      max_length=args.max_length, pooling=args.pooling, task=args.task, rank_by=args.rank_by,
                      folds=args.folds, seed=args.seed, batch_size=args.batch_size, cache_dir=args.cache_dir)
    from nlp_transfer.model.features import process_state
    if not process_state().is_main_process:  # every process ranked the same features; one reports
        return 0
    print()
    print(res.table())
    print()
    print("recommendation: " + res.recommendation["text"])
    for w in res.recommendation["warnings"]:
        print("warning: " + w)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res.to_dict(), indent=1, default=str) + "\n")
        print(f"saved {args.out}")
    return 0


def add_subcommand(sub: "argparse._SubParsersAction") -> None:  # noqa: F821
    from nlp_transfer.data.args import add_data_arguments
    p = sub.add_parser("rank-models", help="rank pretrained models by frozen-feature transferability "
                                           "(LogME, linear probe, kNN) on a sample of your data",
                       description=__doc__.split("\n\n")[0])
    add_data_arguments(p)
    p.add_argument("--models", nargs="+", required=True, help="candidate models: paths, Hub ids or 'minilm'")
    p.add_argument("--layers", default="last", help="layer aggregations: last, mean or last,mean")
    p.add_argument("--sample", type=int, default=2000, help="stratified sample of the train split (default 2000)")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--pooling", default="auto", choices=["auto", "cls", "mean"])
    p.add_argument("--task", default="sequence_classification", choices=["sequence_classification", "regression"])
    p.add_argument("--rank-by", default="probe", choices=list(RANK_BY))
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--cache-dir", default=None, help="feature cache (default: the recipe's)")
    p.add_argument("--out", default=None, help="also write the result as JSON")
    p.set_defaults(func=_cmd_rank)
