"""Trainer users at home: TrainingArguments names as aliases, ``train --help`` generated from the
config, ``--version``, presets by name, py.typed and the feature-cache location."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from nlp_transfer import cli
from nlp_transfer.config import (TRAINER_ALIASES, RecipeConfig, load_config, preset_names, resolve_preset,
                                 section_fields)
from nlp_transfer.config import trainer_names
from nlp_transfer.errors import ConfigError
from nlp_transfer.model.features import default_cache_dir
from nlp_transfer.version import __version__

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _fresh_notices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Notices print once per process: start every test with none printed."""
    monkeypatch.setattr(trainer_names, "_noticed", set())
    monkeypatch.delenv("WORLD_SIZE", raising=False)


def test_every_alias_targets_a_real_field():
    fields_of = section_fields()
    for name, key in TRAINER_ALIASES.items():
        section, field = key.split(".")
        assert field in fields_of[section], f"{name} -> {key}"


def test_aliases_as_overrides_dotted_and_bare(capsys: pytest.CaptureFixture[str]):
    cfg = load_config(None, ["train.learning_rate=1e-4", "num_train_epochs=2", "per_device_eval_batch_size=8",
                             "gradient_accumulation_steps=4", "warmup_ratio=0.2", "weight_decay=0",
                             "lr_scheduler_type=cosine", "max_grad_norm=0.5", "seed=7", "max_steps=9",
                             "metric_for_best_model=eval_f1", "early_stopping_patience=3", "eval_steps=50",
                             "save_steps=100", "save_total_limit=2", "resume_from_checkpoint=true",
                             "output_dir=outputs/t", "report_to=none", "bf16=true", "fp16=false",
                             "push_to_hub=true", "hub_model_id=me/model", "logging_steps=5", "log_level=warning",
                             "run_name=r1"])
    t, e, o = cfg.train, cfg.eval, cfg.output
    assert t.lr == pytest.approx(1e-4) and t.epochs == 2 and e.batch_size == 8
    assert t.gradient_accumulation_steps == 4 and t.warmup_ratio == pytest.approx(0.2) and t.weight_decay == 0
    assert t.lr_scheduler == "cosine" and t.max_grad_norm == 0.5 and t.seed == 7 and t.max_steps == 9
    assert t.mixed_precision == "bf16"
    assert e.metric_for_best == "f1" and e.patience == 3 and e.every_steps == 50
    assert o.checkpoint_every_steps == 100 and o.keep_last_n == 2 and o.resume == "auto"
    assert o.dir == "outputs/t" and o.report_to == ["none"]
    assert cfg.hub.push is True and cfg.hub.repo_id == "me/model"
    assert o.logging_steps == 5 and o.verbosity == "warning" and o.run_name == "r1"
    err = capsys.readouterr().err
    assert ("[nlp_transfer] train.learning_rate is Trainer's name for train.lr: using train.lr=1e-4\n") in err
    assert "fp16=False is Trainer's name for train.mixed_precision: left as is" in err


def test_notice_printed_once(capsys: pytest.CaptureFixture[str]):
    load_config(None, ["learning_rate=1e-4"])
    load_config(None, ["learning_rate=1e-4"])
    lines = [line for line in capsys.readouterr().err.splitlines() if "learning_rate" in line]
    assert lines == ["[nlp_transfer] learning_rate is Trainer's name for train.lr: using train.lr=1e-4"]


def test_per_device_batch_becomes_the_global_batch(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]):
    assert load_config(None, ["per_device_train_batch_size=16"]).train.batch_size == 16
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert load_config(None, ["per_device_train_batch_size=8"]).train.batch_size == 32
    err = capsys.readouterr().err
    assert "using train.batch_size=32 (8 per process x 4 processes; ours is the global batch)" in err


def test_aliases_in_recipe_sections_and_yaml(tmp_path: Path):
    cfg = RecipeConfig(train={"learning_rate": 2e-5, "per_device_eval_batch_size": 4},
                       output={"output_dir": "outputs/r", "save_total_limit": 3})
    assert cfg.train.lr == pytest.approx(2e-5) and cfg.eval.batch_size == 4
    assert cfg.output.dir == "outputs/r" and cfg.output.keep_last_n == 3
    preset = tmp_path / "p.yaml"
    preset.write_text("learning_rate: 3e-5\ntrain:\n  num_train_epochs: 4\n  lr: 3.0e-5\n"
                      "output:\n  dir: outputs/y\nhub_model_id: me/m\n", encoding="utf-8")
    cfg = load_config(preset, ["train.weight_decay=0.0"])
    assert cfg.train.lr == pytest.approx(3e-5) and cfg.train.epochs == 4 and cfg.hub.repo_id == "me/m"
    # An override of the canonical key beats an alias from the file: not a conflict.
    assert load_config(preset, ["train.lr=1e-3"]).train.lr == pytest.approx(1e-3)


@pytest.mark.parametrize("make", [
    lambda: load_config(None, ["learning_rate=1e-4", "train.lr=3e-4"]),
    lambda: load_config(None, ["train.lr=3e-4", "train.learning_rate=1e-4"]),
    lambda: RecipeConfig(train={"lr": 1e-3, "learning_rate": 1e-4}),
    lambda: RecipeConfig.from_dict({"learning_rate": 1e-4, "train": {"lr": 1e-3}}),
])
def test_alias_and_key_with_different_values_is_one_line_error(make):
    with pytest.raises(ConfigError) as e:
        make()
    msg = str(e.value)
    assert "learning_rate" in msg and "train.lr" in msg and "same setting" in msg
    assert "Fix:" in msg and "\n" not in msg


def test_cli_conflict_is_one_error_line_and_no_notice(capsys: pytest.CaptureFixture[str]):
    assert cli.main(["train", "learning_rate=1e-4", "train.lr=3e-4"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == ["error: train.lr and learning_rate are the same setting: expected one value, found "
                     "train.lr=3e-4 and learning_rate=1e-4. Fix: keep one of them (e.g. remove learning_rate)"]


def test_alias_and_key_with_the_same_value_is_fine():
    assert load_config(None, ["learning_rate=1e-4", "train.lr=0.0001"]).train.lr == pytest.approx(1e-4)
    assert RecipeConfig(train={"lr": 1e-4, "learning_rate": 1e-4}).train.lr == pytest.approx(1e-4)


def test_unknown_keys_still_fail_and_unsupported_trainer_names_say_so():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.lrate'.*'batch_size'"):
        load_config(None, ["train.lrate=1e-3"])
    with pytest.raises(ConfigError, match=r"greater_is_better' is a transformers.TrainingArguments name "
                                          r"nlp_transfer does not support: the direction follows eval.metric_for_best"):
        load_config(None, ["greater_is_better=true"])
    with pytest.raises(ConfigError, match=r"'eval_strategy' is a transformers.TrainingArguments name"):
        RecipeConfig(train={"eval_strategy": "steps"})
    with pytest.raises(ConfigError, match=r"warmup_ratio"):
        load_config(None, ["train.warmup_steps=100"])


def test_train_help_lists_every_field_with_default_and_the_aliases(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for top in dataclasses.fields(RecipeConfig):
        section = top.default_factory() if top.default_factory is not dataclasses.MISSING else top.default
        if not dataclasses.is_dataclass(section):
            assert f"{top.name} (default: {section})" in out
            continue
        for f in dataclasses.fields(section):
            assert f"  {top.name}.{f.name} = {getattr(section, f.name)!r}" in out, f"{top.name}.{f.name}"
    assert "Global batch size" in out  # a `#:` comment as the one-line doc
    for name, key in TRAINER_ALIASES.items():
        assert f"  {name} -> {key}" in out
    assert "--preset" in out and "bbc_news" in out


def test_version(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"nlp-transfer {__version__}"


def test_presets_by_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    assert {"bbc_news", "sst2"} <= set(preset_names())
    assert resolve_preset("bbc_news").resolve() == (ROOT / "recipes/configs/bbc_news.yaml").resolve()
    assert resolve_preset("bbc_news.yaml").is_file()
    cfg = load_config("bbc_news")
    assert cfg == load_config(ROOT / "recipes/configs/bbc_news.yaml")
    with pytest.raises(ConfigError, match=r"preset 'bbc_nwes'.*did you mean 'bbc_news'"):
        load_config("bbc_nwes")
    # Relative data paths in a preset stay relative to the working directory, as before.
    monkeypatch.chdir(tmp_path)
    assert load_config("sms_spam").data.name == load_config(ROOT / "recipes/configs/sms_spam.yaml").data.name


def test_cli_train_preset_by_name(monkeypatch: pytest.MonkeyPatch):
    seen = {}
    import nlp_transfer.recipe as recipe
    monkeypatch.setattr(recipe, "train", lambda cfg, **kw: seen.setdefault("cfg", cfg))
    assert cli.main(["train", "--preset", "bbc_news", "learning_rate=1e-4", "output_dir=outputs/p"]) == 0
    assert seen["cfg"].data.name == "bbc_news" and seen["cfg"].train.lr == pytest.approx(1e-4)
    assert seen["cfg"].output.dir == "outputs/p"
    assert cli.main(["train", "--preset", "nope_preset"]) == 2
    assert cli.main(["train", "--preset", "bbc_news", "--config", "x.yaml"]) == 2


def test_package_is_typed_and_ships_presets():
    pkg = ROOT / "nlp_transfer"
    assert (pkg / "py.typed").is_file()
    assert (pkg / "presets" / "bbc_news.yaml").is_file()
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"py.typed"' in text and '"presets/*.yaml"' in text


def test_feature_cache_dir_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    for var in ("NLP_TRANSFER_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "nlp_transfer" / "features"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "nlp_transfer" / "features"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert default_cache_dir() == tmp_path / "hf" / "nlp_transfer" / "features"
    monkeypatch.setenv("NLP_TRANSFER_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine" / "features"


def test_readme_alias_table_is_the_config_table():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name, key in TRAINER_ALIASES.items():
        assert f"| `{name}` | `{key}` |" in readme, name
