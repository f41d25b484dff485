"""``strategy: auto`` wiring: measured signals and resolve_auto decisions on constructed data."""
from __future__ import annotations

import json
from dataclasses import replace
import re
from pathlib import Path

import pytest

from conftest import recipe_kwargs
from nlp_transfer.config import RecipeConfig
from nlp_transfer.errors import ConfigError
from nlp_transfer.selection.auto import device_info, measure_signals, resolve_auto
from toy import make_rows, write_csv


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,500 toy rows -> 1,200 training examples, 400 per class."""
    return write_csv(tmp_path_factory.mktemp("big") / "train.csv", make_rows(1500, seed=1))


def cfg_for(model: Path, data: Path, out: Path, **sections) -> RecipeConfig:
    return RecipeConfig(**recipe_kwargs(model, data, out, strategy="auto", **sections))


def test_few_labels_resolve_to_lora_with_measured_numbers(tiny_model: Path, toy_csv: Path, tmp_path: Path,
                                                          capsys) -> None:
    cfg = cfg_for(tiny_model, toy_csv, tmp_path / "out")
    new, d = resolve_auto(cfg)
    assert cfg.strategy.name == "auto" and new.strategy.name == "lora" == d.strategy
    assert new.model == cfg.model and new.data == cfg.data  # only the strategy changes
    m = d.measurements
    assert m["n_train"] == 120 and m["class_counts"] == {"finance": 40, "sport": 40, "tech": 40}
    assert m["probe"]["sample"] == 120 and m["probe"]["folds"] == 5 and 0.5 < m["probe"]["mean"] <= 1.0
    assert d.signals["n_train"] == 120 and d.signals["min_per_class"] == 40
    assert d.signals["probe_chance"] == pytest.approx(1 / 3) and d.signals["model_params"] > 20_000
    assert "few labels: n_train=120 < few_labels_total=1,000; LoRA trained for at least train.min_steps" in d.reasons[0]
    printed = capsys.readouterr().out
    assert "[nlp_transfer] strategy: auto -> lora" in printed and "few labels" in printed


@pytest.fixture
def small_regression_csv(tmp_path: Path) -> Path:
    rows = [{"text": r["text"], "label": float(len(r["text"].split()))} for r in make_rows(100)]
    return write_csv(tmp_path / "reg" / "train.csv", rows)


def test_train_with_auto_records_the_decision_and_reuses_probe_features(tiny_model: Path, small_regression_csv: Path,
                                                                         tmp_path: Path, capsys) -> None:
    """Through recipe.train: resolve (a small regression set -> frozen), train it, record; the card shows it."""
    from nlp_transfer.publish.card import write_model_card
    from nlp_transfer.recipe import train

    result = train(cfg_for(tiny_model, small_regression_csv, tmp_path / "out", task="regression",
                           train={"epochs": 2}))
    out = capsys.readouterr().out
    assert "strategy: auto -> frozen" in out
    assert "train features from cache" in out  # the probe's features of every training example
    assert result.metrics["strategy"] == "frozen"
    saved = json.loads((result.output_dir / "metrics.json").read_text())["auto"]
    n = saved["signals"]["n_train"]
    assert saved["decision"] == "frozen" and saved["measurements"]["probe"]["sample"] == n
    assert "strategy: auto -> frozen" in saved["explanation"]
    card = write_model_card(result.output_dir).read_text()
    assert "chosen automatically (`strategy=auto`): **frozen**" in card
    assert f"few labels: n_train={n} < few_labels_total=1,000 for regression" in card


def test_moderate_data_with_useless_features_goes_lora_and_warns(blind_model: Path, big_csv: Path,
                                                                 tmp_path: Path) -> None:
    new, d = resolve_auto(cfg_for(blind_model, big_csv, tmp_path / "o"), verbose=False)
    assert d.signals["n_train"] == 1200 and d.signals["min_per_class"] == 400
    assert d.measurements["probe"]["sample"] == 1000  # stratified probe sample, not all 1,200
    assert d.signals["probe_score"] < 0.5
    assert new.strategy.name == "lora" and d.preferred == "lora"
    assert d.warnings and "near chance" in d.warnings[0] and "rank-models" in d.warnings[0]


def test_fitting_features_on_moderate_data_stay_frozen(tiny_model: Path, big_csv: Path, tmp_path: Path) -> None:
    new, d = resolve_auto(cfg_for(tiny_model, big_csv, tmp_path / "o"), verbose=False)
    assert d.signals["probe_score"] >= 0.9
    assert new.strategy.name == "frozen"
    assert "frozen features already fit" in d.reasons[0]


def test_threshold_overrides_and_time_budget(blind_model: Path, big_csv: Path, tmp_path: Path) -> None:
    cfg = cfg_for(blind_model, big_csv, tmp_path / "o")
    cfg.strategy.unfreeze_top_k = 1  # the hybrid, meaningful only if auto picks lora
    new, d = resolve_auto(cfg, thresholds={"large_data": 1000}, verbose=False)
    assert new.strategy.name == "full" and "n_train=1,200 >= large_data=1,000" in " ".join(d.reasons)
    assert new.strategy.unfreeze_top_k is None and "unfreeze_top_k=1 dropped" in d.reasons[-1]
    # a budget far below one epoch excludes full, then lora: frozen, with the timing on record
    new, d = resolve_auto(cfg, thresholds={"large_data": 1000}, time_budget_s=0.001, verbose=False)
    assert new.strategy.name == "frozen" and d.preferred == "full"
    t = d.measurements["timing"]
    assert t["timed_steps"] == 3 and t["batches_per_epoch"] == 75 and t["est_full_epoch_s"] > 0
    assert d.signals["est_full_epoch_s"] == t["est_full_epoch_s"]
    assert set(d.excluded) == {"full", "lora"} and "time_budget_s=0" in d.excluded["full"]


def test_run_lengths_follow_the_step_budget(tiny_model: Path, toy_csv: Path, tmp_path: Path) -> None:
    from nlp_transfer.selection.auto import run_lengths
    cfg = cfg_for(tiny_model, toy_csv, tmp_path / "o", train={"min_steps": 200, "epochs": None})
    assert run_lengths(cfg, 2) == {"run_epochs": 100.0, "contrastive_epochs": 80.0}  # 20 rounds x 2 pairs x 2
    assert run_lengths(replace(cfg, train=replace(cfg.train, min_steps=0)), 2)["run_epochs"] == 1.0  # no budget
    assert run_lengths(cfg, 500)["run_epochs"] == 1.0  # one epoch passes 200 steps: min_epochs (3) rules
    assert run_lengths(cfg, 2) != run_lengths(replace(cfg, train=replace(cfg.train, gradient_accumulation_steps=4)), 2)
    fixed = RecipeConfig(**recipe_kwargs(tiny_model, toy_csv, tmp_path / "o", train={"min_steps": 200, "epochs": 3},
                                         strategy={"name": "auto", "pair_rounds": 5}))
    assert run_lengths(fixed, 2) == {"run_epochs": 3.0, "contrastive_epochs": 20.0}  # explicit epochs: no budget


def test_measure_signals_without_budget_skips_timing(tiny_model: Path, toy_csv: Path, tmp_path: Path) -> None:
    signals, meas = measure_signals(cfg_for(tiny_model, toy_csv, tmp_path / "o"), probe_sample=60)
    assert "timing" not in meas and signals.est_full_epoch_s is None and signals.time_budget_s is None
    assert meas["probe"]["sample"] == 60
    assert signals.device == device_info()["device"]


def test_regression_signals(tiny_model: Path, tmp_path: Path) -> None:
    rows = [{"text": r["text"], "label": float(len(r["text"].split()))} for r in make_rows(100)]
    data = write_csv(tmp_path / "reg" / "train.csv", rows)
    cfg = RecipeConfig(**recipe_kwargs(tiny_model, data, tmp_path / "o", strategy="auto", task="regression"))
    signals, meas = measure_signals(cfg)
    assert signals.n_classes is None and signals.min_per_class is None and signals.probe_chance == 0.0
    assert meas["probe"]["metric"] == "spearman" and 0.0 <= signals.probe_score <= 1.0


def test_errors(tiny_model: Path, toy_csv: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("resolve_auto: expected a recipe with strategy=auto, "
                                                    "found strategy=lora")):
        resolve_auto(RecipeConfig(**recipe_kwargs(tiny_model, toy_csv, tmp_path, strategy="lora")))
    cfg = RecipeConfig(**recipe_kwargs(tiny_model, toy_csv, tmp_path, strategy="auto", task="token_classification"))
    with pytest.raises(ConfigError, match=re.escape("strategy=auto: expected a task among")):
        measure_signals(cfg)
