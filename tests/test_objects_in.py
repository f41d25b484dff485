"""Objects in: ``Recipe(data=<DataFrame | Dataset | DatasetDict | list of dicts | {split: ...}>)`` and
``Recipe(model=<PreTrainedModel>)`` train like the same rows in a CSV file / the same folder, the
resolved recipe.yaml records content fingerprints, and bad objects fail in one line."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import recipe_kwargs
from toy import make_rows, write_csv

ROWS = make_rows(90)
TEXTS = ["goal match team", "bank stock market", "computer chip code"]


def _kw(tiny_model: Path, data, out: Path, strategy: str = "frozen", **sections) -> dict:
    sections["train"] = {"epochs": 2, **sections.get("train", {})}
    kw = recipe_kwargs(tiny_model, Path("unused"), out, strategy, **sections)
    kw["data"] = data
    return kw


@pytest.fixture(scope="module")
def csv_metrics(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from nlp_transfer import Recipe, train
    tmp = tmp_path_factory.mktemp("csv")
    path = write_csv(tmp / "train.csv", ROWS)
    kw = _kw(tiny_model, {"name": str(path)}, tmp / "out", output={"cache_dir": str(tmp / "cache")})
    return train(Recipe(**kw)).metrics


def _as(kind: str):
    import pandas as pd
    from datasets import Dataset, DatasetDict
    return {"dataframe": lambda: pd.DataFrame(ROWS), "dataset": lambda: Dataset.from_list(ROWS),
            "datasetdict": lambda: DatasetDict({"train": Dataset.from_list(ROWS)}),
            "list": lambda: list(ROWS),
            "name_dict": lambda: {"name": pd.DataFrame(ROWS), "text_column": "text"}}[kind]()


@pytest.mark.parametrize("kind", ["dataframe", "dataset", "datasetdict", "list", "name_dict"])
def test_each_data_object_trains_like_the_same_csv(kind, tiny_model, tmp_path, csv_metrics):
    from nlp_transfer import Recipe, train
    r = train(Recipe(**_kw(tiny_model, _as(kind), tmp_path / "out")))
    assert r.metrics["held_out"] == pytest.approx(csv_metrics["held_out"], abs=1e-6)
    assert r.metrics["data"]["held_out_size"] == csv_metrics["data"]["held_out_size"]
    saved = yaml.safe_load((tmp_path / "out" / "recipe.yaml").read_text())
    assert saved["data"]["name"].startswith("<in-memory ") and "90 rows, columns [text, label]" in saved["data"]["name"]


def test_explicit_splits_use_the_given_validation(tiny_model, tmp_path):
    import pandas as pd
    from nlp_transfer import Recipe, train
    data = {"train": pd.DataFrame(ROWS[:70]), "dev": pd.DataFrame(ROWS[70:])}
    r = train(Recipe(**_kw(tiny_model, data, tmp_path / "out")))
    assert r.metrics["data"]["held_out_source"] == "split 'validation'"
    assert r.metrics["data"]["held_out_size"] == 20 and r.metrics["data"]["train_size"] == 70
    assert r.metrics["held_out"]["accuracy"] >= 0.0
    # splits + column settings in one dict
    renamed = [{"review": x["text"], "stars": x["label"]} for x in ROWS]
    cfg = Recipe(data={"train": renamed[:70], "validation": renamed[70:], "text_column": "review",
                       "label_column": "stars"})
    from nlp_transfer.data import prepare_data
    prepared = prepare_data(cfg.data)
    assert len(prepared.held_out) == 20 and prepared.label_names == ["finance", "sport", "tech"]


@pytest.mark.parametrize("strategy", ["full", "frozen"])
def test_model_object_trains_saves_and_loads_without_it(strategy, tiny_model, tmp_path):
    from transformers import BertForSequenceClassification, BertModel

    from nlp_transfer import Recipe, load, train
    from nlp_transfer.config import objects
    import pandas as pd
    df = pd.DataFrame(ROWS)
    from_folder = train(Recipe(**_kw(tiny_model, df, tmp_path / "folder", strategy)))
    kw = _kw(tiny_model, df, tmp_path / "obj", strategy)
    model = BertModel.from_pretrained(tiny_model) if strategy == "full" \
        else BertForSequenceClassification.from_pretrained(tiny_model, num_labels=3)  # its base model is used
    kw["model"] = {**kw["model"], "name": model}
    r = train(Recipe(**kw))
    assert r.metrics["held_out"] == pytest.approx(from_folder.metrics["held_out"], abs=1e-5)
    saved = yaml.safe_load((tmp_path / "obj" / "recipe.yaml").read_text())
    assert saved["model"]["name"].startswith("<in-memory BertModel ")
    objects.OBJECTS.clear()  # a fresh process on another machine: only the output folder remains
    import shutil
    from nlp_transfer.model import in_memory_models_dir
    shutil.rmtree(in_memory_models_dir())
    assert (tmp_path / "obj" / "base_model").is_dir() == (strategy == "frozen")
    assert load(tmp_path / "obj")(TEXTS) == load(tmp_path / "folder")(TEXTS)


def test_model_object_with_explicit_tokenizer(tiny_model, tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertModel

    from nlp_transfer import Recipe
    from nlp_transfer.model import load_tokenizer, resolve_model
    model = BertModel(BertConfig.from_pretrained(tiny_model))  # built in memory: no folder to take a tokenizer from
    with pytest.raises(Exception, match=r"tokenizer of the in-memory BertModel: .*model=\{'name': model, 'tokenizer'"):
        Recipe(model=model)
    cfg = Recipe(model={"name": model, "tokenizer": AutoTokenizer.from_pretrained(tiny_model), "max_length": 32})
    path = resolve_model(cfg.model.name)
    assert Path(path).is_dir() and len(load_tokenizer(path)) == len(AutoTokenizer.from_pretrained(tiny_model))
    assert cfg.model.max_length == 32


def test_fingerprints_are_stable_and_resume_refuses_changed_data(tiny_model, tmp_path):
    import pandas as pd
    import torch
    from transformers import BertModel

    from nlp_transfer import ConfigError, Recipe, RecipeConfig, train
    from nlp_transfer.training.checkpoint import config_diff
    a, b = Recipe(data=pd.DataFrame(ROWS)), Recipe(data=[dict(r) for r in ROWS])
    assert a.data.name.split()[2] == b.data.name.split()[2]  # same rows, same content hash
    changed = [dict(r) for r in ROWS]
    changed[5]["text"] += " extra"
    c = Recipe(data=pd.DataFrame(changed))
    assert config_diff(a.to_dict(), Recipe(data=pd.DataFrame(ROWS)).to_dict()) == []
    assert [d.split()[0] for d in config_diff(a.to_dict(), c.to_dict())] == ["data.name"]
    assert RecipeConfig.from_dict(yaml.safe_load(a.to_yaml())).to_dict() == a.to_dict()
    m1, m2 = BertModel.from_pretrained(tiny_model), BertModel.from_pretrained(tiny_model)
    assert Recipe(model=m1).model.name == Recipe(model=m2).model.name
    with torch.no_grad():
        m2.pooler.dense.bias += 1
    assert Recipe(model=m1).model.name != Recipe(model=m2).model.name
    # a real resume with changed in-memory data refuses and names data.name
    out = tmp_path / "run"
    train(Recipe(**_kw(tiny_model, pd.DataFrame(ROWS), out)))  # 2 epochs: a checkpoint after the first
    with pytest.raises(ConfigError, match=r"data\.name \('<in-memory DataFrame"):
        train(Recipe(**_kw(tiny_model, pd.DataFrame(changed), out, output={"resume": "auto"})))


# --------------------------------------------------------------------------- bad inputs

def test_unsupported_data_object_names_the_accepted_types():
    from nlp_transfer import ConfigError, Recipe
    with pytest.raises(ConfigError, match=r"expected .*datasets\.Dataset or DatasetDict, a pandas DataFrame, "
                                          r"a list of dicts.*found set"):
        Recipe(data={1, 2})
    with pytest.raises(ConfigError, match=r"found a list of str"):
        Recipe(data=["a text", "another"])


def test_dataframe_without_label_column_names_columns_and_setting():
    import pandas as pd
    from nlp_transfer import DataError, Recipe
    from nlp_transfer.data import prepare_data
    cfg = Recipe(data=pd.DataFrame({"text": [r["text"] for r in ROWS], "stars": [r["label"] for r in ROWS]}))
    with pytest.raises(DataError,
                       match=r"label column 'label'.*found columns \['text', 'stars'\].*data\.label_column="):
        prepare_data(cfg.data)


def test_unknown_split_name_fails_in_one_line():
    import pandas as pd
    from nlp_transfer import ConfigError, Recipe
    with pytest.raises(ConfigError, match=r"data split 'eval': expected train, validation \(or dev\) and test, "
                                          r"found 'eval'") as e:
        Recipe(data={"train": pd.DataFrame(ROWS), "eval": pd.DataFrame(ROWS)})
    assert "\n" not in str(e.value)


def test_unsupported_model_object_and_lost_object():
    from nlp_transfer import ConfigError, DataError, Recipe
    from nlp_transfer.config import DataConfig, objects
    from nlp_transfer.data import load_raw
    with pytest.raises(ConfigError, match=r"model\.name: expected .*loaded transformers PreTrainedModel, found dict"):
        Recipe(model={"name": {"weights": 1}})
    with pytest.raises(ConfigError, match=r"model\.tokenizer: expected a tokenizer only next to a loaded model"):
        Recipe(model={"name": "minilm", "tokenizer": object()})
    name = Recipe(data=list(ROWS)).data.name
    objects.OBJECTS.pop(name)
    with pytest.raises(DataError, match=r"found only its fingerprint"):
        load_raw(DataConfig(name=name))
