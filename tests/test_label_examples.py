"""data.label_examples: class names as training rows (SetFit's get_templated_dataset).

The rows join the training split only, last, in the count asked; the train-sample metric leaves
them out; contrastive turns them on by default where the names are words, the other strategies
do not; names that are not words, other tasks and text pairs are refused in one line when asked
for explicitly. (What they gain: benchmarks/fewshot.py, README "Few-shot".)"""
from __future__ import annotations

import pytest
import yaml
from safetensors.torch import load_file

from conftest import recipe_kwargs
from nlp_transfer import Recipe, train
from nlp_transfer.config import DataConfig
from nlp_transfer.data import add_label_examples, nameless_labels, prepare_data
from nlp_transfer.errors import ConfigError, DataError
from nlp_transfer.publish.card import ModelCardInfo, render_model_card
from toy import make_rows, write_csv


def _rows(names: tuple[str, ...] = ("negative", "positive"), n: int = 6) -> list[dict]:
    return [{"text": f"{name} words number {i}", "label": name} for name in names for i in range(n)]


def test_class_names_join_the_training_rows_last_and_never_the_held_out():
    rows = _rows(("sadness", "joy", "not_angry"))
    data = prepare_data(DataConfig(name={"train": rows, "validation": rows[:3]}, dedup=False))
    out = add_label_examples(data, 2, "This sentence is {}", "sequence_classification")
    assert out.train[:len(rows)] == data.train[:]  # the user's rows first, untouched
    names = data.label_names
    assert names == ["joy", "not_angry", "sadness"]
    assert out.train[len(rows):] == {"text": [f"This sentence is {n}" for n in ("joy", "not angry", "sadness")
                                              for _ in range(2)],
                                     "label": [i for i in range(3) for _ in range(2)]}
    assert out.train.features == data.train.features  # the same ClassLabel: ids mean the same names
    assert out.held_out[:] == data.held_out[:]
    assert out.stats["label_example_rows"] == 6 and out.stats["train_size"] == len(rows) + 6


@pytest.mark.parametrize("names", [("0", "1"), ("LABEL_0", "LABEL_1"), ("class 1", "class 2"), ("+", "-")])
def test_class_names_that_are_not_words_are_refused_naming_them(names):
    assert nameless_labels(list(names)) == list(names)
    data = prepare_data(DataConfig(name={"train": _rows(names), "validation": _rows(names, 1)}, dedup=False))
    with pytest.raises(DataError, match=r"data.label_examples.*class names that are words.*found class names "
                                        r".*not words.*data.label_names=\[\.\.\.\], or pass data.label_examples=0"):
        add_label_examples(data, 2, "This sentence is {}", "sequence_classification")
    assert nameless_labels(["sport", "tech2", "label", "not_spam"]) == []


def test_other_tasks_and_text_pairs_are_refused():
    rows = [{**r, "pair": "another sentence"} for r in _rows()]
    pair = prepare_data(DataConfig(name={"train": rows, "validation": rows[:2]}, text_pair_column="pair",
                                   dedup=False))
    with pytest.raises(DataError, match="found a text pair column"):
        add_label_examples(pair, 2, "This sentence is {}", "sequence_classification")
    plain = prepare_data(DataConfig(name={"train": _rows(), "validation": _rows(n=1)}, dedup=False))
    with pytest.raises(DataError, match="found task=multi_label"):
        add_label_examples(plain, 2, "This sentence is {}", "multi_label")


@pytest.mark.parametrize("value", [-1, 1.5, True, "two"])
def test_a_count_that_is_not_a_whole_number_is_refused(value):
    with pytest.raises(ConfigError, match=r"data.label_examples.*integer >= 0"):
        DataConfig(label_examples=value)
    assert DataConfig(label_examples="3").label_examples == 3  # key=value overrides arrive as text
    with pytest.raises(ConfigError, match=r"data.label_template.*one \{\}"):
        DataConfig(label_template="no slot")


def _saved(out) -> dict:
    return yaml.safe_load((out / "recipe.yaml").read_text())["data"]


def test_contrastive_adds_them_by_default_frozen_does_not_and_the_saved_recipe_says_so(tiny_model, toy_csv,
                                                                                    tmp_path):
    kw = dict(strategy={"name": "contrastive", "pair_rounds": 2}, train={"epochs": 2},
              eval={"patience": 50, "train_sample_size": 1000})
    r = train(Recipe(**recipe_kwargs(tiny_model, toy_csv, tmp_path / "c", "contrastive", **kw)))
    assert _saved(r.output_dir)["label_examples"] == 2
    n_user = r.metrics["data"]["train_size"] - 6  # 3 topics x 2 copies
    # the train-sample metric is on the user's rows only, even with a sample larger than them
    assert r.metrics["data"]["train_sample_size"] == n_user
    card = render_model_card(ModelCardInfo.from_output_dir(r.output_dir, repo_id="alice/toy"), plot_name=None)
    assert "| Class-name examples | 6 of the training examples are `This sentence is {}` filled" in card
    off = train(Recipe(**recipe_kwargs(tiny_model, toy_csv, tmp_path / "c0", "contrastive",
                                       data={"label_examples": 0}, **kw)))
    assert off.metrics["data"]["train_size"] == n_user and _saved(off.output_dir)["label_examples"] == 0
    tuned = [load_file(str(x.output_dir / "encoder" / "model.safetensors")) for x in (r, off)]
    assert any(not (tuned[0][k] == tuned[1][k]).all() for k in tuned[0]), "the class-name rows did not train"
    frozen = train(Recipe(**recipe_kwargs(tiny_model, toy_csv, tmp_path / "f", "frozen", train={"epochs": 1})))
    assert _saved(frozen.output_dir)["label_examples"] == 0 and "label_example_rows" not in frozen.metrics["data"]


def test_names_that_are_not_words_turn_the_default_off_but_an_explicit_count_fails(tiny_model, tmp_path):
    rows = [{**r, "label": str(sorted({x["label"] for x in make_rows(3)}).index(r["label"]))} for r in make_rows(60)]
    data = write_csv(tmp_path / "d" / "train.csv", rows)
    kw = recipe_kwargs(tiny_model, data, tmp_path / "o", "contrastive", strategy={"name": "contrastive",
                                                                                  "pair_rounds": 1},
                       train={"epochs": 1})
    r = train(Recipe(**kw))
    assert _saved(r.output_dir)["label_examples"] == 0
    kw["data"] = {**kw["data"], "label_examples": 2}
    kw["output"] = {**kw["output"], "dir": str(tmp_path / "o2")}
    with pytest.raises(DataError, match=r"data.label_examples.*class names \['0', '1', '2'\] that are not words"):
        train(Recipe(**kw))
