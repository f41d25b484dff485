"""Output folders in the ecosystem's own loaders: a fine-tuned model is a plain transformers (or PEFT)
folder that ``AutoModelFor<Task>`` / ``AutoPeftModelFor<Task>`` / ``pipeline`` load with the trained
head and the same predictions; every other folder refuses to load as a task model. Never a
silently random head."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import recipe_kwargs
from nlp_transfer import Recipe, load, train
from nlp_transfer.errors import ConfigError
from toy import TOPICS, write_csv
from toy_tasks import write_conll, write_multilabel_csv

TEXTS = ["goal match team win", "bank stock", "chip code robot software data and more", "the coach"]
AUTO = {"sequence_classification": "AutoModelForSequenceClassification", "pair": "AutoModelForSequenceClassification",
        "regression": "AutoModelForSequenceClassification", "multi_label": "AutoModelForSequenceClassification",
        "token_classification": "AutoModelForTokenClassification"}


def _pair_rows() -> list[dict]:
    rng = random.Random(0)
    topics = sorted(TOPICS)
    rows = []
    for _ in range(90):
        a, b = rng.choice(topics), rng.choice(topics)
        rows.append({"s1": " ".join(rng.sample(TOPICS[a], 3)), "s2": " ".join(rng.sample(TOPICS[b], 3)),
                     "label": "same" if a == b else "different"})
    return rows


@pytest.fixture(scope="module")
def task_data(tmp_path_factory: pytest.TempPathFactory, toy_csv: Path) -> dict[str, tuple[Path, dict, dict]]:
    """task -> (data path, data settings, recipe extras)."""
    d = tmp_path_factory.mktemp("native_data")
    reg = [{"text": " ".join(["goal"] * (i % 5 + 1) + ["the", str(i)]), "score": float(i % 5)} for i in range(80)]
    return {
        "sequence_classification": (toy_csv, {}, {}),
        "pair": (write_csv(d / "pair.csv", _pair_rows()), {"text_column": "s1", "text_pair_column": "s2"}, {}),
        "regression": (write_csv(d / "reg.csv", reg), {"label_column": "score"}, {"task": "regression"}),
        "multi_label": (write_multilabel_csv(d / "ml.csv", n=120), {"label_column": "labels"}, {"task": "multi_label"}),
        "token_classification": (write_conll(d / "conll", {"train": 80, "dev": 30}), {},
                                 {"task": "token_classification"}),
    }


def _train(tiny_model: Path, task_data: dict, task: str, strategy: str, out: Path, **model: str):
    data, data_kw, extra = task_data[task]
    kw = recipe_kwargs(tiny_model, data, out, strategy, data=data_kw, train={"epochs": 1},
                       strategy={"name": strategy, **({"pair_rounds": 2} if strategy == "contrastive" else {})})
    kw["model"] = {**kw["model"], "pooling": "auto", **model}
    kw.update(extra)
    return train(Recipe(**kw))


def _inputs(pred) -> dict[str, torch.Tensor]:
    pairs = list(reversed(TEXTS)) if pred.meta.get("text_pair") else None
    enc = pred.tokenizer(TEXTS, pairs, padding=True, truncation=True, max_length=32, return_tensors="pt")
    return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


def _ours(pred, enc) -> torch.Tensor:
    with torch.inference_mode():
        return pred.model(**enc)["logits"].float()


def _probs(task: str, z: torch.Tensor) -> torch.Tensor:
    return z if task == "regression" else torch.sigmoid(z) if task == "multi_label" else torch.softmax(z, -1)


CASES = [(t, s) for t in AUTO for s in ("full", "partial", "lora", "frozen")] + \
    [("sequence_classification", "contrastive")]


@pytest.mark.parametrize("task,strategy", CASES, ids=[f"{t}-{s}" for t, s in CASES])
def test_standard_loaders_predict_the_same_or_refuse(tiny_model, task_data, tmp_path, task, strategy):
    import transformers
    r = _train(tiny_model, task_data, task, strategy, tmp_path / "out")
    pred = load(r.output_dir)
    enc = _inputs(pred)
    ours = _ours(pred, enc)
    auto = getattr(transformers, AUTO[task])
    native = strategy in ("full", "partial")
    try:
        theirs_model = auto.from_pretrained(str(r.output_dir)).eval()
    except (OSError, ValueError) as e:
        assert not native, f"{strategy} should save a native folder: {e}"
        loaded = False
    else:
        assert native, f"{strategy} folder loaded as {AUTO[task]} (with which head?)"
        loaded = True
        with torch.inference_mode():
            theirs = theirs_model(**enc).logits.float()
        assert (_probs(task, theirs) - _probs(task, ours)).abs().max() <= 1e-4
        if pred.label_names and task != "regression":
            assert [theirs_model.config.id2label[i] for i in range(len(pred.label_names))] == pred.label_names
    assert loaded == native
    if strategy == "lora":  # PEFT's own loader, with the trained head from modules_to_save
        import peft
        cls = getattr(peft, "AutoPeft" + AUTO[task][len("Auto"):])
        n = r.model.config.num_labels
        m = cls.from_pretrained(str(r.output_dir), num_labels=n).eval()
        with torch.inference_mode():
            theirs = m(**enc).logits.float()
        assert (_probs(task, theirs) - _probs(task, ours)).abs().max() <= 1e-4


def test_pipeline_on_a_native_folder_gives_our_labels_and_scores(tiny_model, task_data, tmp_path):
    from transformers import pipeline
    r = _train(tiny_model, task_data, "sequence_classification", "full", tmp_path / "out")
    ours = load(r.output_dir)(TEXTS)
    theirs = pipeline("text-classification", model=str(r.output_dir))(TEXTS)
    assert [t["label"] for t in theirs] == [o["label"] for o in ours]
    assert max(abs(t["score"] - o["score"]) for t, o in zip(theirs, ours)) <= 1e-4
    # the model card leads with that pipeline, names the loader's library and the versions trained with
    import re

    import transformers

    from nlp_transfer.publish.card import ModelCardInfo, render_model_card
    card = render_model_card(ModelCardInfo.from_output_dir(r.output_dir, repo_id="alice/toy"))
    first = re.findall(r"```python\n(.*?)```", card, re.S)[0]
    assert 'pipeline("text-classification", model="alice/toy")' in first and len(first.strip().splitlines()) == 4
    assert "library_name: transformers" in card
    assert f"- transformers {transformers.__version__}" in card.split("## Framework versions")[1]


def test_head_auto_is_native_for_fine_tuning_and_pooled_for_features(tiny_model, task_data, tmp_path):
    full = _train(tiny_model, task_data, "sequence_classification", "full", tmp_path / "full")
    assert full.metrics["pooling"] == "native"
    pooled = _train(tiny_model, task_data, "sequence_classification", "full", tmp_path / "pooled", head="pooled")
    assert pooled.metrics["pooling"] == "cls"
    files = {p.relative_to(pooled.output_dir).as_posix() for p in pooled.output_dir.rglob("*") if p.is_file()}
    assert {"head.safetensors", "encoder/model.safetensors", "config.json"} <= files
    assert "model.safetensors" not in files  # nothing at the top that AutoModelFor<Task> would take
    # reloaded from encoder/ + head.safetensors, it predicts as the trained model did in memory
    from nlp_transfer.predict import Predictor
    reloaded = load(pooled.output_dir)
    trained = Predictor(pooled.model.eval(), reloaded.tokenizer, reloaded.meta, pooled.output_dir)
    assert (abs(reloaded.logits(TEXTS) - trained.logits(TEXTS))).max() <= 1e-5


def test_head_auto_keeps_the_pooling_a_sentence_transformers_checkpoint_declares(tiny_model, task_data, tmp_path,
                                                                                 monkeypatch):
    """A checkpoint that declares mean pooling (1_Pooling/config.json, like all-MiniLM-L6-v2) keeps it
    for full (pooled measured +1.0 pt on SST-2) while lora trains its native head (+0.6 pt on BBC)
    from ``native_head_min_train`` examples up, and keeps the pooling below (few-shot SST-2);
    model.head=native still gives the native folder."""
    from nlp_transfer.strategies.lora import LoraStrategy
    import json
    import shutil
    st = tmp_path / "st_model"
    shutil.copytree(tiny_model, st)
    (st / "1_Pooling").mkdir()
    (st / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    auto = _train(st, task_data, "sequence_classification", "full", tmp_path / "auto")
    assert auto.metrics["pooling"] == "mean" and (auto.output_dir / "encoder").is_dir()
    native = _train(st, task_data, "sequence_classification", "full", tmp_path / "native", head="native")
    assert native.metrics["pooling"] == "native" and (native.output_dir / "model.safetensors").is_file()
    n_train = auto.metrics["data"]["train_size"]
    assert n_train < LoraStrategy.native_head_min_train  # the toy set is a few-shot set for lora
    few = _train(st, task_data, "sequence_classification", "lora", tmp_path / "lora_few")
    assert few.metrics["pooling"] == "mean"  # the adapter with our head in modules_to_save (no task type)
    assert json.loads((few.output_dir / "adapter_config.json").read_text())["task_type"] is None
    import peft
    with pytest.raises(ValueError):  # PEFT's task loader refuses it rather than attach a random head
        peft.AutoPeftModelForSequenceClassification.from_pretrained(str(few.output_dir), num_labels=3)
    monkeypatch.setattr(LoraStrategy, "native_head_min_train", n_train)  # enough examples: native
    lora = _train(st, task_data, "sequence_classification", "lora", tmp_path / "lora")
    assert lora.metrics["pooling"] == "native" and (lora.output_dir / "adapter_config.json").is_file()
    assert not (lora.output_dir / "encoder").exists()
    undeclared = _train(tiny_model, task_data, "sequence_classification", "lora", tmp_path / "undeclared")
    assert undeclared.metrics["pooling"] == "native"  # nothing declared: the size does not matter


@pytest.mark.parametrize("settings,found", [
    ({"strategy": "frozen", "head": "native"}, "strategy=frozen"),
    ({"strategy": "full", "head": "native", "pooling": "mean"}, "model.pooling=mean"),
])
def test_native_head_refused_where_it_cannot_be(tiny_model, toy_csv, tmp_path, settings, found):
    kw = recipe_kwargs(tiny_model, toy_csv, tmp_path / "o", settings["strategy"])
    kw["model"] = {**kw["model"], "head": settings["head"], "pooling": settings.get("pooling", "auto")}
    with pytest.raises(ConfigError, match=found) as e:
        train(Recipe(**kw))
    assert "model.head=pooled" in str(e.value) and str(e.value).count("\n") == 0


def test_export_transformers_writes_a_checked_native_folder_and_refuses_a_pooled_head(tiny_model, task_data,
                                                                                       tmp_path):
    from transformers import pipeline

    from nlp_transfer.errors import ModelError
    from nlp_transfer.export.native import export_native
    lora = _train(tiny_model, task_data, "sequence_classification", "lora", tmp_path / "lora")
    report = export_native(lora.output_dir, tmp_path / "native")
    assert report["max_abs_logit_delta"] <= 1e-4 and report["checked_texts"] == 30  # the run's held-out rows
    ours = load(lora.output_dir)(TEXTS)
    theirs = pipeline("text-classification", model=str(tmp_path / "native"))(TEXTS)
    assert [t["label"] for t in theirs] == [o["label"] for o in ours]
    assert max(abs(t["score"] - o["score"]) for t, o in zip(theirs, ours)) <= 1e-4
    assert load(tmp_path / "native")(TEXTS) == ours  # and nlp_transfer reads it back
    pooled = _train(tiny_model, task_data, "sequence_classification", "full", tmp_path / "pooled", head="pooled")
    with pytest.raises(ModelError, match="no transformers class represents") as e:
        export_native(pooled.output_dir, tmp_path / "refused")
    assert "--format onnx" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "refused").exists()


def test_a_format_1_folder_still_loads(tiny_model, task_data, tmp_path):
    """Format 1 kept a pooled head's encoder at the top of the folder (beside head.safetensors)."""
    import json
    import shutil
    r = _train(tiny_model, task_data, "sequence_classification", "full", tmp_path / "v2", head="pooled")
    old = tmp_path / "v1"
    shutil.copytree(r.output_dir, old)
    for f in (old / "encoder").iterdir():
        shutil.move(str(f), old / f.name)
    (old / "encoder").rmdir()
    meta = json.loads((old / "nlp_transfer.json").read_text())
    (old / "nlp_transfer.json").write_text(json.dumps({**meta, "format_version": 1}))
    assert load(old)(TEXTS) == load(r.output_dir)(TEXTS)


@pytest.mark.parametrize("task", ["sequence_classification", "pair"])
def test_predictor_batches_by_token_count_and_returns_input_order(tiny_model, task_data, tmp_path, monkeypatch, task):
    """Batches are formed in token-count order (character counts mislead: one long word can be one
    token), across sort windows, and outputs come back in input order, equal to one text at a time."""
    r = _train(tiny_model, task_data, task, "full", tmp_path / "out")
    pred = load(r.output_dir)
    texts = ["x" * 60, "goal match team win", "a", "rain sun wind cloud storm snow", "team", "cloud " * 9] * 3
    pairs = list(reversed(texts)) if task == "pair" else None
    one_by_one = np.stack([pred.logits([t], [p] if pairs else None, batch_size=1)[0]
                           for t, p in zip(texts, pairs or texts)])
    seen: list[torch.Tensor] = []
    model = pred.model
    pred.model = lambda **inputs: seen.append(inputs["attention_mask"]) or model(**inputs)
    import nlp_transfer.predict
    monkeypatch.setattr(nlp_transfer.predict, "SORT_WINDOW", 8)
    z = pred.logits(texts, pairs, batch_size=3)
    assert np.abs(z - one_by_one).max() <= 1e-5
    assert sum(len(m) for m in seen) == len(texts) and len(seen) == 3 + 3 + 1  # windows of 8, 8, 2
    lengths = [m.sum(-1).tolist() for m in seen]
    for window in (lengths[:3], lengths[3:6]):  # inside a window: longest first, no batch mixes far lengths
        flat = [n for batch in window for n in batch]
        assert flat == sorted(flat, reverse=True)
