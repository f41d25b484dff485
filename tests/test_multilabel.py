"""Tests for nlp_transfer.tasks.multilabel.labels: parsing, encoding, threshold tuning, scores, GoEmotions."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nlp_transfer.errors import DataError
from nlp_transfer.tasks.multilabel.labels import (
    apply_thresholds,
    decode,
    encode,
    f1_report,
    infer_label_names,
    parse_label_lists,
    read_goemotions,
    tune_thresholds,
)

GOEMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "goemotions"


# ------------------------------------------------------------------ parsing / encoding

def test_parse_label_list_variants():
    values = [
        ["joy", "love"],
        ("anger",),
        np.array(["fear"]),
        '["joy", "love"]',
        "['sadness', 'joy']",
        "[1, 2]",
        "[joy, 'love']",          # not valid JSON/Python: split by hand
        "joy,love",
        " joy , love ,",
        "surprise",
        7,
        np.int64(3),
        3.0,                       # pandas turns int columns with NaN into floats
        None,
        float("nan"),
        "",
        "[]",
        ["joy", "joy"],            # duplicates removed
    ]
    assert parse_label_lists(values) == [
        ["joy", "love"], ["anger"], ["fear"], ["joy", "love"], ["sadness", "joy"], ["1", "2"],
        ["joy", "love"], ["joy", "love"], ["joy", "love"], ["surprise"], ["7"], ["3"], ["3"],
        [], [], [], [], ["joy"],
    ]


def test_parse_label_lists_delimiters():
    assert parse_label_lists(["a|b", "c"]) == [["a", "b"], ["c"]]          # auto-detected
    assert parse_label_lists(["a;b", "c;d;e"]) == [["a", "b"], ["c", "d", "e"]]
    assert parse_label_lists(["a b", "c"], delimiter=" ") == [["a", "b"], ["c"]]
    assert parse_label_lists(["a b", "c"]) == [["a b"], ["c"]]              # no auto space split
    assert parse_label_lists(["27", "2,14"]) == [["27"], ["2", "14"]]       # GoEmotions-like


def test_parse_label_lists_rejects_bad_values():
    with pytest.raises(DataError, match="row 1"):
        parse_label_lists([["a"], {"a": 1}])
    with pytest.raises(DataError, match="boolean"):
        parse_label_lists([[True]])
    with pytest.raises(DataError, match="float 0.5"):
        parse_label_lists([0.5])


def test_encode_decode_and_unknown_label():
    names = ["anger", "joy", "love"]
    y = encode([["joy", "love"], [], ["anger"]], names)
    assert y.dtype == np.float32 and y.shape == (3, 3)
    np.testing.assert_array_equal(y, [[0, 1, 1], [0, 0, 0], [1, 0, 0]])
    assert decode(y, names) == [["joy", "love"], [], ["anger"]]
    with pytest.raises(DataError, match=r"label 'fear' in row 1: expected one of \['anger', "):
        encode([["joy"], ["fear"]], names)


def test_infer_label_names_numeric_order():
    assert infer_label_names([["10", "2"], ["1"]]) == ["1", "2", "10"]
    assert infer_label_names([["joy"], ["anger", "joy"]]) == ["anger", "joy"]


# ------------------------------------------------------------------ thresholds

def _constructed(n=400, seed=0):
    """Label 0: positives score ~U(0.25,0.35), negatives ~U(0,0.2) -> best threshold 0.25.
    Label 1: positives ~U(0.8,1), negatives ~U(0.6,0.75)            -> best threshold 0.75.
    Label 2: separable around 0.5 (positives 0.55-1, negatives 0-0.45)."""
    rng = np.random.default_rng(seed)
    t = (rng.random((n, 3)) < 0.3).astype(np.float32)
    p = np.empty((n, 3))
    p[:, 0] = np.where(t[:, 0] == 1, rng.uniform(0.25, 0.35, n), rng.uniform(0.0, 0.2, n))
    p[:, 1] = np.where(t[:, 1] == 1, rng.uniform(0.8, 1.0, n), rng.uniform(0.6, 0.75, n))
    p[:, 2] = np.where(t[:, 2] == 1, rng.uniform(0.55, 1.0, n), rng.uniform(0.0, 0.45, n))
    return p, t


def test_tune_thresholds_finds_known_thresholds_and_beats_fixed_half():
    p, t = _constructed()
    thr = tune_thresholds(p, t)
    assert thr.shape == (3,)
    assert thr[0] == pytest.approx(0.25)      # any of 0.20/0.25 separates; 0.25 is closer to 0.5
    assert thr[1] == pytest.approx(0.75)      # 0.75 or 0.8 separate; 0.75 is closer to 0.5
    assert thr[2] == pytest.approx(0.5)       # 0.5 is optimal: tie-break keeps it
    assert len(set(np.round(thr, 4))) == 3    # per-label thresholds differ

    # on fresh data from the same distribution, tuned thresholds win clearly
    p2, t2 = _constructed(seed=1)
    tuned = f1_report(apply_thresholds(p2, thr), t2)
    fixed = f1_report(apply_thresholds(p2, 0.5), t2)
    assert tuned["macro_f1"] == pytest.approx(1.0)
    assert fixed["per_label"]["0"]["f1"] == 0.0      # nothing of label 0 reaches 0.5
    assert fixed["per_label"]["1"]["precision"] < 0.6
    assert tuned["macro_f1"] > fixed["macro_f1"] + 0.3
    assert tuned["micro_f1"] > fixed["micro_f1"]


def test_tune_thresholds_ties_and_labels_without_positives():
    # label 0: one positive at 0.9, negatives at 0.1 -> every threshold in (0.1, 0.9] is
    # perfect; the tie goes to 0.5.  label 1: no positives -> 0.5.  label 2: positives never
    # ranked above negatives enough to score (prob 0) -> 0.5.
    p = np.array([[0.9, 0.7, 0.0], [0.1, 0.2, 0.3], [0.1, 0.99, 0.2]])
    t = np.array([[1, 0, 1], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(tune_thresholds(p, t), [0.5, 0.5, 0.5])
    # a custom default moves both the tie-break and the no-positive value
    np.testing.assert_allclose(tune_thresholds(p, t, default=0.3), [0.3, 0.3, 0.3])


def test_tune_thresholds_input_checks():
    with pytest.raises(DataError, match=r"shapes \(2, 2\) and \(2, 3\)"):
        tune_thresholds(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(DataError, match="only 0/1"):
        tune_thresholds(np.zeros((1, 2)), np.array([[0, 2]]))
    with pytest.raises(DataError, match=r"values in \(0, 1\)"):
        tune_thresholds(np.zeros((1, 1)), np.zeros((1, 1)), grid=[0.0, 0.5])


def test_apply_thresholds_per_label_and_shape_check():
    p = np.array([[0.3, 0.3], [0.6, 0.9]])
    np.testing.assert_array_equal(apply_thresholds(p, [0.25, 0.8]), [[1, 0], [1, 1]])
    np.testing.assert_array_equal(apply_thresholds(p, 0.5), [[0, 0], [1, 1]])
    with pytest.raises(DataError, match="2 values"):
        apply_thresholds(p, [0.5, 0.5, 0.5])


def test_f1_report_matches_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    t = (rng.random((50, 4)) < 0.3).astype(int)
    pr = (rng.random((50, 4)) < 0.3).astype(int)
    t[:, 3] = 0  # a label without support
    rep = f1_report(pr, t, ["a", "b", "c", "d"])
    assert rep["micro_f1"] == pytest.approx(sk.f1_score(t, pr, average="micro", zero_division=0))
    assert rep["macro_f1"] == pytest.approx(sk.f1_score(t, pr, average="macro", zero_division=0))
    assert rep["macro_recall"] == pytest.approx(
        sk.recall_score(t, pr, average="macro", zero_division=0))
    assert rep["per_label"]["d"]["support"] == 0
    assert rep["per_label"]["a"]["f1"] == pytest.approx(sk.f1_score(t[:, 0], pr[:, 0]))


# ------------------------------------------------------------------ GoEmotions

def test_read_goemotions_tmp(tmp_path):
    (tmp_path / "emotions.txt").write_text("anger\njoy\nneutral\n", encoding="utf-8")
    (tmp_path / "dev.tsv").write_text(
        '"Quoted" start, and a tab-free text\t1,0\tabc\nplain\t2\tdef\n', encoding="utf-8")
    rows, names = read_goemotions(tmp_path, split="dev")
    assert names == ["anger", "joy", "neutral"]
    assert rows == [{"text": '"Quoted" start, and a tab-free text', "labels": ["joy", "anger"],
                     "id": "abc"},
                    {"text": "plain", "labels": ["neutral"], "id": "def"}]
    (tmp_path / "bad.tsv").write_text("x\t5\tid\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.tsv line 1: expected label ids in 0..2"):
        read_goemotions(tmp_path / "bad.tsv")


def test_real_goemotions():
    if not (GOEMO / "dev.tsv").is_file():
        pytest.skip(f"GoEmotions data not found at {GOEMO}")
    rows, names = read_goemotions(GOEMO, split="dev")
    assert len(rows) == 5426 and len(names) == 28 and names[-1] == "neutral"
    y = encode([r["labels"] for r in rows], names)
    assert 1.1 < y.sum(1).mean() < 1.25           # ~1.18 labels per example (SOURCES.md)
    assert (y.sum(1) >= 1).all()
    assert any(r["text"].startswith('"') for r in rows)  # quotes kept verbatim
