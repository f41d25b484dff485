"""Data: file formats, column mapping, label names, dedup/leaks, held-out carving, errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from nlp_transfer.config import DataConfig
from nlp_transfer.data import load_bbc_news, prepare_data
from nlp_transfer.errors import DataError
from toy import make_rows, write_csv


def _cfg(path, **kw) -> DataConfig:
    return DataConfig(name=str(path), **kw)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "json", "parquet"])
def test_local_formats(tmp_path, fmt):
    rows = make_rows(40)
    p = tmp_path / f"train.{fmt}"
    if fmt in ("csv", "tsv"):
        write_csv(p, rows, delimiter="," if fmt == "csv" else "\t")
    elif fmt == "jsonl":
        p.write_text("\n".join(json.dumps(r) for r in rows))
    elif fmt == "json":
        p.write_text(json.dumps(rows))
    else:
        import pandas as pd
        pd.DataFrame(rows).to_parquet(p)
    d = prepare_data(_cfg(p))
    assert d.label_names == ["finance", "sport", "tech"]
    assert len(d.train) + len(d.held_out) == 40 and d.train.column_names == ["text", "label"]


def test_folder_with_validation_and_test_kept_separate(tmp_path):
    write_csv(tmp_path / "train.csv", make_rows(60))
    write_csv(tmp_path / "dev.csv", make_rows(12, seed=1))
    write_csv(tmp_path / "test.csv", make_rows(9, seed=2))
    d = prepare_data(_cfg(tmp_path))
    assert len(d.held_out) == 12 and len(d.test) == 9
    assert d.stats["held_out_source"] == "split 'validation'"


def test_column_mapping_and_pairs(tmp_path):
    rows = [{"s1": f"first {i}", "s2": f"second {i % 7}", "y": i % 2} for i in range(30)]
    p = write_csv(tmp_path / "pairs.csv", rows)
    d = prepare_data(_cfg(p, text_column="s1", text_pair_column="s2", label_column="y",
                          label_names=["different", "same"]))
    assert d.has_pair and d.label_names == ["different", "same"]
    assert set(d.train.column_names) == {"text", "text_pair", "label"}


def test_missing_column_names_found_columns(tmp_path):
    p = write_csv(tmp_path / "x.csv", make_rows(10))
    with pytest.raises(DataError) as e:
        prepare_data(_cfg(p, text_column="txt"))
    assert "expected a column named 'txt'" in str(e.value) and "['text', 'label']" in str(e.value)
    assert "did you mean 'text'" in str(e.value) and "data.text_column" in str(e.value)


def test_duplicates_and_leaks_are_dropped(tmp_path):
    rows = make_rows(30)
    write_csv(tmp_path / "train.csv", rows + rows[:5])          # 5 exact duplicates
    write_csv(tmp_path / "validation.csv", rows[10:14])          # 4 leaks into held-out
    d = prepare_data(_cfg(tmp_path))
    assert d.stats["duplicates_dropped"] == 5 and d.stats["leaked_dropped"] == 4
    assert not set(d.train["text"][:]) & set(d.held_out["text"][:])


def test_carved_held_out_is_stratified_seeded_and_disjoint(tmp_path):
    p = write_csv(tmp_path / "t.csv", make_rows(150))
    a, b = prepare_data(_cfg(p)), prepare_data(_cfg(p))
    assert a.held_out["text"][:] == b.held_out["text"][:]
    assert np.bincount(np.asarray(a.held_out["label"][:])).tolist() == [10, 10, 10]
    assert not set(a.train["text"][:]) & set(a.held_out["text"][:])
    c = prepare_data(_cfg(p, seed=7))
    assert c.held_out["text"][:] != a.held_out["text"][:]


def test_unseen_held_out_label(tmp_path):
    write_csv(tmp_path / "train.csv", make_rows(30))
    write_csv(tmp_path / "dev.csv", [{"text": "weather rain", "label": "weather"}])
    with pytest.raises(DataError, match=r"'weather', never seen in training"):
        prepare_data(_cfg(tmp_path))


def test_empty_dataset(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_text("text,label\n")
    with pytest.raises(DataError, match="found an empty dataset"):
        prepare_data(_cfg(p))


def test_float_labels_for_classification(tmp_path):
    p = write_csv(tmp_path / "f.csv", [{"text": f"t {i}", "label": i / 3} for i in range(20)])
    with pytest.raises(DataError, match="use task=regression"):
        prepare_data(_cfg(p))


def test_regression_targets(tmp_path):
    p = write_csv(tmp_path / "r.csv", [{"text": f"t {i}", "label": i / 3} for i in range(20)])
    d = prepare_data(_cfg(p), task="regression")
    assert d.label_names is None and d.train.features["label"].dtype == "float32"


def test_missing_path():
    with pytest.raises(DataError, match="does not exist"):
        prepare_data(DataConfig(name="./nope/train.csv"))


def test_bbc_news_builtin():
    raw = load_bbc_news()["train"]
    assert len(raw) == 2225
    d = prepare_data(DataConfig(name="bbc_news"))
    assert d.label_names == ["business", "entertainment", "politics", "sport", "tech"]
    assert 90 <= d.stats["duplicates_dropped"] <= 110
    assert len(d.train) + len(d.held_out) == 2225 - d.stats["duplicates_dropped"]


def test_sst2_shared_tsv(shared_data):
    d = prepare_data(DataConfig(name=str(shared_data / "sst2"), text_column="sentence",
                                label_names=["negative", "positive"]))
    assert len(d.held_out) == 872 and d.label_names == ["negative", "positive"]


def test_split_rows_dedups_drops_leaks_carves_and_caps_seeded():
    """The list-of-rows path of the multi-label and NER readers (rows: (text, labels))."""
    from nlp_transfer.data import split_rows

    train = [(f"t{i % 40}", [i % 3]) for i in range(50)]  # 10 exact duplicates of the first 10
    held = [("t1", [1]), ("t2", [2]), ("h", [0])]
    key = lambda row: row[0].encode()  # noqa: E731
    cfg = DataConfig(name="x", seed=3, max_eval_samples=2)
    tr, ho, stats = split_rows(train, held, key, cfg)
    assert stats == {"duplicates_dropped": 10, "leaked_dropped": 2, "held_out_source": "split 'validation'"}
    assert [t for t, _ in tr] == [f"t{i}" for i in range(40) if i not in (1, 2)]  # first occurrence, order kept
    assert len(ho) == 2 and all(row in held for row in ho)

    carved = split_rows(train, None, key, DataConfig(name="x", seed=3, held_out_fraction=0.25, max_train_samples=20),
                        unit="sentence", held_file="dev file")
    again = split_rows(train, None, key, DataConfig(name="x", seed=3, held_out_fraction=0.25, max_train_samples=20))
    assert carved[:2] == again[:2] and len(carved[1]) == 10 and len(carved[0]) == 20
    assert not {t for t, _ in carved[0]} & {t for t, _ in carved[1]}
    assert carved[2]["held_out_source"] == "carved 25% (seed 3)"

    with pytest.raises(DataError, match=r"at least 4 sentences .* found 3 sentence\(s\).* provide a dev file"):
        split_rows(train[:3], None, key, cfg, unit="sentence", held_file="dev file")
    with pytest.raises(DataError, match=r"at least 1 row.*check the validation file"):
        split_rows(train, [], key, cfg)
