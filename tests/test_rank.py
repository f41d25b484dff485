"""``rank-models``: ordering on a case with a known answer, layer aggregation, caching shared
with the frozen recipe, the recommendation rules and the CLI."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import recipe_kwargs
from nlp_transfer.cli import main
from nlp_transfer.config import RecipeConfig
from nlp_transfer.errors import ConfigError, ModelError
from nlp_transfer.selection.rank import extract_layer_features, rank_models, recommend_model, stratified_indices


def test_informative_model_outranks_blind_copy(tiny_model: Path, blind_model: Path, toy_csv: Path) -> None:
    res = rank_models(str(toy_csv), [str(blind_model), str(tiny_model)], layers="last,mean", sample=90,
                      max_length=32, pooling="mean", log=lambda s: None)
    assert res.sample_size == 90 and res.n_classes == 3 and res.chance == pytest.approx(1 / 3)
    assert [r["model"] for r in res.rows[:2]] == [str(tiny_model)] * 2
    assert {(r["model"], r["layers"]) for r in res.rows} == {(m, a) for m in (str(tiny_model), str(blind_model))
                                                               for a in ("last", "mean")}
    good = [r for r in res.rows if r["model"] == str(tiny_model)]
    blind = [r for r in res.rows if r["model"] == str(blind_model)]
    # every estimator orders them the same way, by a wide margin
    assert min(r["probe_mean"] for r in good) > 0.8 > 0.5 > max(r["probe_mean"] for r in blind)
    assert min(r["logme"] for r in good) > max(r["logme"] for r in blind)
    assert min(r["knn_mean"] for r in good) > max(r["knn_mean"] for r in blind)
    assert res.recommendation["model"] == str(tiny_model)
    assert res.recommendation["text"].startswith(f"Use {tiny_model} with layers=")
    assert not res.recommendation["warnings"]
    table = res.table()
    assert table.splitlines()[2].split()[1] == str(tiny_model)
    assert re.search(r"\d\.\d{3} ± \d\.\d{3}", table)


def test_blind_model_alone_warns_near_chance(blind_model: Path, toy_csv: Path) -> None:
    res = rank_models(str(toy_csv), [str(blind_model)], sample=90, max_length=32, pooling="mean",
                      log=lambda s: None)
    assert res.recommendation["warnings"] and "near chance" in res.recommendation["warnings"][0]


def test_features_are_cached_and_reused(tiny_model: Path, toy_csv: Path, tmp_path: Path) -> None:
    kw = dict(layers="last,mean", sample=60, max_length=32, pooling="mean", cache_dir=tmp_path / "c",
              log=lambda s: None)
    first = rank_models(str(toy_csv), [str(tiny_model)], **kw)
    second = rank_models(str(toy_csv), [str(tiny_model)], **kw)
    assert not any(r["cached"] for r in first.rows) and all(r["cached"] for r in second.rows)
    assert len(list((tmp_path / "c").glob("*.npy"))) == 2  # one entry per aggregation
    for a, b in zip(first.rows, second.rows):
        assert a["logme"] == b["logme"] and a["probe_mean"] == b["probe_mean"]


def test_mean_layers_is_the_average_of_pooled_hidden_states(tiny_model: Path, toy_csv: Path) -> None:
    from datasets import Dataset
    from transformers import AutoModel, AutoTokenizer

    texts = ["goal match team win", "bank stock market", "the chip and the phone today"]
    ext = extract_layer_features(str(tiny_model), Dataset.from_dict({"text": texts}), ["last", "mean"], 32, "mean")
    tok = AutoTokenizer.from_pretrained(tiny_model)
    enc = AutoModel.from_pretrained(tiny_model).eval()
    for i, t in enumerate(texts):
        with torch.no_grad():
            out = enc(**tok(t, return_tensors="pt"), output_hidden_states=True)
        layers = torch.stack([h[0].mean(0) for h in out.hidden_states[1:]])  # skip the embedding output
        np.testing.assert_allclose(ext["features"]["mean"][i], layers.mean(0).numpy(), atol=1e-5)
        np.testing.assert_allclose(ext["features"]["last"][i], out.last_hidden_state[0].mean(0).numpy(), atol=1e-5)
    assert not np.allclose(ext["features"]["mean"], ext["features"]["last"])


def test_last_layer_cache_is_shared_with_the_frozen_recipe(tiny_model: Path, toy_csv: Path, tmp_path: Path,
                                                           capsys) -> None:
    from nlp_transfer.recipe import train

    cache = tmp_path / "cache"
    rank_models(str(toy_csv), [str(tiny_model)], layers="last", sample=None, max_length=32, pooling="mean",
                cache_dir=cache, log=lambda s: None)
    kw = recipe_kwargs(tiny_model, toy_csv, tmp_path / "run", strategy="frozen", train={"epochs": 1},
                       output={"cache_dir": str(cache)})
    train(RecipeConfig(**kw))
    assert "train features from cache" in capsys.readouterr().out


def test_stratified_sample_keeps_class_shares() -> None:
    y = np.repeat([0, 1, 2], [600, 300, 100])
    idx = stratified_indices(y, len(y), 100, seed=0)
    assert list(np.bincount(y[idx])) == [60, 30, 10] and np.all(np.diff(idx) > 0)
    assert len(stratified_indices(y, len(y), None, 0)) == 1000


def test_recommendation_prefers_smaller_model_within_the_fold_spread() -> None:
    rows = [
        {"model": "big", "layers": "last", "path": "big", "params": 300_000_000, "probe_mean": 0.91,
         "probe_std": 0.02, "logme": 0.5, "knn_mean": 0.88},
        {"model": "small", "layers": "mean", "path": "small", "params": 22_000_000, "probe_mean": 0.90,
         "probe_std": 0.02, "logme": 0.6, "knn_mean": 0.87},
        {"model": "tiny", "layers": "last", "path": "tiny", "params": 4_000_000, "probe_mean": 0.80,
         "probe_std": 0.03, "logme": 0.1, "knn_mean": 0.70},
    ]
    rec = recommend_model(rows, "probe", chance=0.5, regression=False)
    assert rec["model"] == "small" and rec["layers"] == "mean"
    assert "within the fold spread (0.020) of the best (big [last] 0.910), with 13.6x fewer parameters" in rec["text"]
    assert "LogME prefers small [mean]" in rec["text"]
    assert recommend_model(rows, "logme", 0.5, False)["model"] == "small"


@pytest.mark.parametrize("kwargs, error, message", [
    ({"layers": "last,middle"}, ConfigError, "layers: expected a comma-separated subset of ['last', 'mean'], found 'middle'"),
    ({"models": []}, ConfigError, "models: expected at least one model"),
    ({"rank_by": "vibes"}, ConfigError, "rank_by: expected one of ['probe', 'logme', 'knn']"),
    ({"models": ["./no/such/model"]}, ModelError, "model path: expected an existing folder"),
])
def test_bad_arguments(kwargs, error, message, toy_csv: Path) -> None:
    args = {"data": str(toy_csv), "models": ["minilm"], "log": lambda s: None, **kwargs}
    with pytest.raises(error, match=re.escape(message)):
        rank_models(**args)


def test_cli_rank_models(tiny_model: Path, blind_model: Path, toy_csv: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "rank.json"
    rc = main(["rank-models", "--data", str(toy_csv), "--models", str(blind_model), str(tiny_model),
               "--layers", "last", "--sample", "60", "--max-length", "32", "--pooling", "mean", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert f"recommendation: Use {tiny_model} with layers=last" in printed
    saved = json.loads(out.read_text())
    assert saved["rows"][0]["model"] == str(tiny_model) and saved["recommendation"]["model"] == str(tiny_model)
    rc = main(["rank-models", "--data", str(toy_csv), "--models", "minilm", "--layers", "top"])
    assert rc == 2 and "layers: expected a comma-separated subset" in capsys.readouterr().err
