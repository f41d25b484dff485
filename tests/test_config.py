"""Config: typed sections, shorthands, YAML presets, overrides and their error messages."""
from __future__ import annotations

from pathlib import Path

import pytest

from nlp_transfer.config import RecipeConfig, apply_overrides, load_config
from nlp_transfer.errors import ConfigError

# Multi-task presets have their own schema (nlp_transfer.multitask) and their own tests.
PRESETS = sorted(p for p in (Path(__file__).parents[1] / "recipes" / "configs").glob("*.yaml")
                 if not p.name.startswith("multitask"))


def test_shorthands_keep_the_common_case_short():
    cfg = RecipeConfig(model="minilm", data="bbc_news", strategy="lora", output="outputs/x")
    assert cfg.model.name == "minilm" and cfg.strategy.name == "lora" and cfg.output.dir == "outputs/x"


def test_overrides_dotted_and_bare():
    cfg = load_config(None, ["strategy=lora", "strategy.unfreeze_top_k=2", "train.lr=3e-5",
                             "eval.metrics=[accuracy,f1]", "data=some/file.csv"])
    assert cfg.strategy.name == "lora" and cfg.strategy.unfreeze_top_k == 2
    assert cfg.train.lr == pytest.approx(3e-5) and cfg.eval.metrics == ["accuracy", "f1"]
    assert cfg.data.name == "some/file.csv"


def test_unknown_key_names_valid_ones_and_suggests():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["train.lrate=1e-3"])  # (train.learning_rate is Trainer's alias of train.lr)
    msg = str(e.value)
    assert "unknown config key 'train.lrate'" in msg and "'lr'" in msg and "batch_size" in msg
    with pytest.raises(ConfigError, match=r"did you mean 'strategy'"):
        load_config(None, ["stratgy=lora"])
    with pytest.raises(ConfigError, match=r"unknown config key 'model.pooler'.*did you mean 'pooling'"):
        RecipeConfig(model={"pooler": "cls"})


@pytest.mark.parametrize("override,fragment", [
    ("strategy=lorra", "strategy.name: expected one of ['full', 'frozen', 'lora', 'partial', 'contrastive', 'auto'], found 'lorra' (did you mean 'lora'?)"),
    ("train.lr=0", "train.lr: expected a number > 0, found 0"),
    ("train.lr=-1e-3", "train.lr: expected a number > 0"),
    ("train.epochs=0", "train.epochs: expected a number > 0, found 0"),
    ("train.batch_size=0", "train.batch_size: expected a number > 0, found 0"),
    ("model.pooling=max", "model.pooling: expected one of ['auto', 'cls', 'mean', 'cls+normalize', 'mean+normalize']"),
    ("task=ner", "recipe.task: expected one of"),
    ("strategy.unfreeze_top_k=-1", "strategy.unfreeze_top_k: expected an integer >= 0"),
    ("data.held_out_fraction=1.5", "data.held_out_fraction: expected a float in (0, 1)"),
    ("hub.push=true", "hub.repo_id: expected user/name when hub.push=true"),
])
def test_invalid_values_fail_with_expected_found_fix(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert fragment in str(e.value) and "Fix:" in str(e.value) and "\n" not in str(e.value)


def test_unfreeze_top_k_needs_partial_or_lora():
    with pytest.raises(ConfigError, match="only with strategy=partial or strategy=lora"):
        load_config(None, ["strategy=full", "strategy.unfreeze_top_k=2"])


def test_override_without_equals():
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["strategy"])


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_presets_load_and_round_trip(preset, tmp_path):
    cfg = load_config(preset)
    again = RecipeConfig.from_dict(__import__("yaml").safe_load(cfg.to_yaml()))
    assert again == cfg


def test_resolved_train_uses_strategy_defaults():
    assert RecipeConfig(strategy="frozen").resolved_train()["epochs"] == 30
    assert RecipeConfig(strategy="full").resolved_train()["lr"] == pytest.approx(5e-5)
    assert RecipeConfig(strategy="full", train={"epochs": 1}).resolved_train()["epochs"] == 1


def test_apply_overrides_does_not_mutate_input():
    d = {"train": {"lr": 1.0}}
    apply_overrides(d, ["train.lr=2"])
    assert d == {"train": {"lr": 1.0}}
