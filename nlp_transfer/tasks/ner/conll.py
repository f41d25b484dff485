"""Token-classification (NER) data and label utilities.

Everything here is model-agnostic and pure: reading CoNLL files, tagging-scheme detection and
conversion to BIO, aligning word-level tags to sub-word tokens, turning per-token predictions
back into entity spans with character offsets in the original text, and preparing
``seqeval`` inputs.

Typical flow::

    sents = read_conll("wnut17train.conll")                  # [{"tokens": [...], "tags": [...]}]
    tags = to_bio([s["tags"] for s in sents])                 # IOB1 / IO / BIOES -> BIO
    labels = label_list(tags)                                 # ["O", "B-x", ..., "I-x", ...]
    enc = align_labels(tok, [s["tokens"] for s in sents], tags,
                       {l: i for i, l in enumerate(labels)}, max_length=128)

and at prediction time::

    enc, offsets, word_ids = encode_text(tok, "Ada Lovelace met Charles Babbage.", 128)
    probs = softmax(model(**enc).logits)[0]                   # (seq_len, num_labels)
    decode_entities(text, offsets, probs, id2label, word_ids)
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nlp_transfer.errors import DataError, ModelError

IGNORE_INDEX = -100
"""Label id ignored by the loss (sub-tokens after the first, special tokens, padding)."""

_TAG_RE = re.compile(r"^(O|[BIES]-\S+)$")
DOCSTART = "-DOCSTART-"


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

def read_conll(path: str | Path, token_col: int = 0, tag_col: int = -1,
               encoding: str = "utf-8-sig") -> list[dict[str, list[str]]]:
    """Read a CoNLL-style file into sentences.

    Format: one token per line; columns separated by a tab (if the line has one) or else by
    runs of spaces; the tag is in column ``tag_col`` (default: last), the token in
    ``token_col`` (default: first). Blank or whitespace-only lines end a sentence;
    ``-DOCSTART-`` lines are skipped (and end a sentence). Extra columns (POS, chunk) are
    ignored.

    Returns:
        ``[{"tokens": [...], "tags": [...]}, ...]`` in file order; empty sentences are dropped.

    Raises:
        DataError: the file is missing or empty, or a line has too few columns, an empty
            token, or a tag that is not ``O`` / ``B-x`` / ``I-x`` / ``E-x`` / ``S-x``
            (message gives file, line number and the line).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"CoNLL file {str(p)!r}", expected="an existing file",
                        found="no such file", fix="check the path")
    sentences: list[dict[str, list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []

    def flush() -> None:
        nonlocal tokens, tags
        if tokens:
            sentences.append({"tokens": tokens, "tags": tags})
        tokens, tags = [], []

    with p.open(encoding=encoding, newline="") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.rstrip("\r\n")
            stripped = line.strip()
            if not stripped:
                flush()
                continue
            if stripped.split()[0] == DOCSTART:
                flush()
                continue
            if "\t" in stripped:
                cols = [c.strip() for c in stripped.split("\t")]
            else:
                cols = stripped.split()
            where = f"{p.name} line {lineno}"
            try:
                token, tag = cols[token_col], cols[tag_col]
            except IndexError:
                raise DataError(
                    f"CoNLL {where} ({line!r})",
                    expected=f"a token column {token_col} and a tag column {tag_col} "
                             "separated by a tab or spaces",
                    found=f"{len(cols)} column(s)",
                    fix="fix the line, or set token_col/tag_col to the right columns") from None
            if len(cols) < 2:
                raise DataError(f"CoNLL {where} ({line!r})",
                                expected="a token and a tag separated by a tab or spaces",
                                found="1 column", fix="add the tag (e.g. 'O') to the line")
            if not token:
                raise DataError(f"CoNLL {where} ({line!r})", expected="a non-empty token",
                                found="an empty token column", fix="fix the line")
            if not _TAG_RE.match(tag):
                raise DataError(f"CoNLL {where} ({line!r})",
                                expected="a tag 'O' or 'B-<type>'/'I-<type>' (also E-/S-)",
                                found=f"tag {tag!r} in column {tag_col}",
                                fix="set tag_col to the column holding the entity tags, "
                                    "or fix the tag")
            tokens.append(token)
            tags.append(tag)
    flush()
    if not sentences:
        raise DataError(f"CoNLL file {str(p)!r}", expected="at least one sentence",
                        found="no token lines", fix="check the file and its format")
    return sentences


def check_examples(tokens_batch: Sequence[Sequence[str]],
                   tags_batch: Sequence[Sequence[Any]]) -> None:
    """Check ``tokens``/``tags`` list columns: same number of rows and of items per row.

    Raises:
        DataError: naming the first offending row.
    """
    if len(tokens_batch) != len(tags_batch):
        raise DataError("token/tag columns", expected="as many tag rows as token rows",
                        found=f"{len(tokens_batch)} token rows and {len(tags_batch)} tag rows",
                        fix="pass matching columns")
    for i, (toks, tags) in enumerate(zip(tokens_batch, tags_batch)):
        if isinstance(toks, str) or isinstance(tags, str):
            raise DataError(f"row {i} of the token/tag columns",
                            expected="lists of tokens and tags", found="a plain string",
                            fix="split the sentence into a list of tokens with one tag each")
        if len(toks) != len(tags):
            raise DataError(f"row {i} of the token/tag columns",
                            expected="one tag per token",
                            found=f"{len(toks)} tokens and {len(tags)} tags",
                            fix="fix that row")


# --------------------------------------------------------------------------------------------
# Tagging schemes
# --------------------------------------------------------------------------------------------

def _split_tag(tag: str) -> tuple[str, str | None]:
    """``"B-person" -> ("B", "person")``; ``"O" -> ("O", None)``."""
    if tag == "O":
        return "O", None
    if not _TAG_RE.match(tag):
        raise DataError(f"tag {tag!r}", expected="'O' or '<B|I|E|S>-<type>'",
                        found=repr(tag), fix="convert the tags to BIO/IOB1/IO/BIOES strings")
    return tag[0], tag[2:]


def detect_scheme(tag_seqs: Sequence[Sequence[str]]) -> str:
    """Guess the tagging scheme of a corpus.

    Returns:
        ``"BIOES"`` if any ``E-``/``S-`` tag occurs; ``"IO"`` if there are ``I-`` tags but no
        ``B-``; ``"IOB1"`` if some ``I-x`` starts an entity (first token, after ``O`` or after
        another type); otherwise ``"BIO"`` (also for all-``O`` corpora).
    """
    has_b = has_i = orphan_i = False
    for seq in tag_seqs:
        prev_type: str | None = None
        for tag in seq:
            prefix, typ = _split_tag(tag)
            if prefix in ("E", "S"):
                return "BIOES"
            if prefix == "B":
                has_b = True
            elif prefix == "I":
                has_i = True
                if typ != prev_type:
                    orphan_i = True
            prev_type = typ
    if has_i and not has_b:
        return "IO"
    return "IOB1" if orphan_i else "BIO"


def iob1_to_bio(tags: Sequence[str]) -> list[str]:
    """Convert one IOB1 (or IO) sequence to BIO: an ``I-x`` that starts an entity becomes
    ``B-x``. Idempotent on valid BIO; orphan ``I-x`` in BIO are repaired the way ``seqeval``
    reads them (as an entity start)."""
    out: list[str] = []
    prev_type: str | None = None
    for tag in tags:
        prefix, typ = _split_tag(tag)
        if prefix == "I" and typ != prev_type:
            out.append(f"B-{typ}")
        else:
            out.append(tag)
        prev_type = typ
    return out


def bioes_to_bio(tags: Sequence[str]) -> list[str]:
    """Convert one BIOES sequence to BIO (``S-x -> B-x``, ``E-x -> I-x``)."""
    out = []
    for tag in tags:
        prefix, typ = _split_tag(tag)
        out.append({"S": f"B-{typ}", "E": f"I-{typ}"}.get(prefix, tag))
    return iob1_to_bio(out)


def to_bio(tag_seqs: Sequence[Sequence[str]]) -> list[list[str]]:
    """Return the corpus converted to BIO, whatever its scheme (BIO, IOB1, IO, BIOES)."""
    scheme = detect_scheme(tag_seqs)
    if scheme == "BIOES":
        return [bioes_to_bio(s) for s in tag_seqs]
    return [iob1_to_bio(s) for s in tag_seqs]


def label_list(tag_seqs: Sequence[Sequence[str]], complete: bool = True) -> list[str]:
    """Sorted label names with ``"O"`` first.

    With ``complete`` (default), every entity type seen gets both ``B-`` and ``I-`` labels,
    so that sub-token continuation labels and test-only tags always have an id.
    """
    seen: set[str] = set()
    for seq in tag_seqs:
        for tag in seq:
            prefix, typ = _split_tag(tag)
            if prefix == "O":
                continue
            seen.add(tag)
            if complete and prefix in ("B", "I"):
                seen.update({f"B-{typ}", f"I-{typ}"})
    return ["O"] + sorted(seen)


def entity_type(label: str) -> str | None:
    """``"B-PER" -> "per"``; ``"O" -> None``."""
    prefix, typ = _split_tag(label)
    return None if typ is None else typ.lower()


# --------------------------------------------------------------------------------------------
# Sub-word alignment
# --------------------------------------------------------------------------------------------

def _require_fast(tokenizer: Any) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError("tokenizer for token classification",
                         expected="a fast (Rust) tokenizer, needed for word_ids()/offsets",
                         found=type(tokenizer).__name__,
                         fix="load it with AutoTokenizer.from_pretrained(..., use_fast=True) "
                             "or pick a model that ships tokenizer.json")


def align_labels(tokenizer: Any, tokens_batch: Sequence[Sequence[str]],
                 tags_batch: Sequence[Sequence[str | int]], label2id: Mapping[str, int],
                 max_length: int, label_all_subtokens: bool = False,
                 return_word_ids: bool = True) -> Any:
    """Tokenize pre-split words and align word tags to sub-tokens.

    The first sub-token of each word gets the word's label; the others get ``-100``
    (or, with ``label_all_subtokens``, the word's label with ``B-x`` turned into ``I-x``).
    Special tokens get ``-100``. Words cut off by ``max_length`` are lost (truncation on).
    Words the tokenizer maps to no sub-token at all (e.g. a lone zero-width space) carry no
    label either.

    Args:
        tags_batch: tag strings (looked up in ``label2id``) or ready label ids.

    Returns:
        The tokenizer's ``BatchEncoding`` (no padding) with ``"labels"`` and, unless
        ``return_word_ids=False``, ``"word_ids"`` (word index per sub-token, ``-1`` for
        special tokens, so that the column stays integer-typed). Drop ``word_ids`` before
        ``DataCollatorForTokenClassification``: it does not pad that key.

    Raises:
        ModelError: the tokenizer is not fast.
        DataError: mismatched tokens/tags, or a tag missing from ``label2id``.
    """
    _require_fast(tokenizer)
    check_examples(tokens_batch, tags_batch)
    id2label = {v: k for k, v in label2id.items()}
    enc = tokenizer([list(t) for t in tokens_batch], is_split_into_words=True,
                    truncation=True, max_length=max_length)
    all_labels: list[list[int]] = []
    all_word_ids: list[list[int]] = []
    for i, tags in enumerate(tags_batch):
        ids = [_tag_id(t, label2id, id2label, i) for t in tags]
        labels: list[int] = []
        prev: int | None = None
        wids = enc.word_ids(i)
        for w in wids:
            if w is None:
                labels.append(IGNORE_INDEX)
            elif w != prev:
                labels.append(ids[w])
            elif label_all_subtokens:
                labels.append(_continuation_id(ids[w], label2id, id2label))
            else:
                labels.append(IGNORE_INDEX)
            prev = w
        all_labels.append(labels)
        all_word_ids.append([-1 if w is None else w for w in wids])
    enc["labels"] = all_labels
    if return_word_ids:
        enc["word_ids"] = all_word_ids
    return enc


def _tag_id(tag: str | int, label2id: Mapping[str, int], id2label: Mapping[int, str],
            row: int) -> int:
    if isinstance(tag, (int, np.integer)) and not isinstance(tag, bool):
        if int(tag) not in id2label:
            raise DataError(f"label id {int(tag)} in row {row}",
                            expected=f"an id in 0..{len(label2id) - 1}", found=str(int(tag)),
                            fix="use tag strings or ids from the same label list")
        return int(tag)
    try:
        return label2id[tag]
    except KeyError:
        raise DataError(f"tag {tag!r} in row {row}",
                        expected=f"one of {sorted(label2id)}", found=repr(tag),
                        fix="build label2id with label_list() over all splits, "
                            "after to_bio()") from None


def _continuation_id(label_id: int, label2id: Mapping[str, int],
                     id2label: Mapping[int, str]) -> int:
    name = id2label[label_id]
    if name.startswith("B-"):
        cont = "I-" + name[2:]
        if cont not in label2id:
            raise DataError(f"continuation label {cont!r}", expected="present in label2id",
                            found="missing",
                            fix="build labels with label_list(..., complete=True)")
        return label2id[cont]
    return label_id


# --------------------------------------------------------------------------------------------
# Prediction: spans with character offsets
# --------------------------------------------------------------------------------------------

def _is_punct(ch: str) -> bool:
    """Punctuation as BERT's pre-tokenizer sees it: ASCII symbols and Unicode P* classes."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def words_to_char_spans(text: str) -> list[tuple[int, int]]:
    """Split ``text`` into words the way CoNLL data is tokenized, with character spans.

    Words are runs of non-space, non-punctuation characters; every punctuation character is a
    word of its own (as BERT's pre-tokenizer does; CoNLL tokenizers split punctuation off
    too). Any Unicode whitespace separates words. ``text[s:e]`` gives each word.
    """
    spans: list[tuple[int, int]] = []
    start: int | None = None
    for i, ch in enumerate(text):
        if ch.isspace() or unicodedata.category(ch) in ("Cf", "Cc"):
            if start is not None:
                spans.append((start, i))
                start = None
        elif _is_punct(ch):
            if start is not None:
                spans.append((start, i))
                start = None
            spans.append((i, i + 1))
        elif start is None:
            start = i
    if start is not None:
        spans.append((start, len(text)))
    return spans


def encode_text(tokenizer: Any, text: str, max_length: int, **kwargs: Any
                ) -> tuple[Any, list[tuple[int, int]], list[int | None]]:
    """Tokenize a raw string for NER prediction the same way training data was fed.

    The text is split with :func:`words_to_char_spans` and passed with
    ``is_split_into_words=True``, so word boundaries match CoNLL-style training tokens for
    every tokenizer family. (Byte-level BPE tokenizers such as RoBERTa's need
    ``add_prefix_space=True`` when loaded.)

    Returns:
        ``(encoding, offsets, word_ids)``: ``offsets[j]`` is the character span in ``text``
        of the word sub-token ``j`` belongs to (``(0, 0)`` for special tokens), ready for
        :func:`decode_entities`. Extra ``kwargs`` go to the tokenizer (e.g.
        ``return_tensors="pt"``).
    """
    _require_fast(tokenizer)
    spans = words_to_char_spans(text)
    enc = tokenizer([text[s:e] for s, e in spans], is_split_into_words=True, truncation=True,
                    max_length=max_length, **kwargs)
    word_ids = enc.word_ids(0)
    offsets = [(0, 0) if w is None else spans[w] for w in word_ids]
    return enc, offsets, word_ids


def _label_of(id2label: Mapping[Any, str], idx: int) -> str:
    if idx in id2label:
        return id2label[idx]
    if str(idx) in id2label:
        return id2label[str(idx)]
    raise ModelError(f"predicted label id {idx}", expected=f"a key of id2label "
                     f"({len(id2label)} labels)", found="missing",
                     fix="save id2label with the model")


def predicted_tags(scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(tag ids, token scores)`` of one sequence: the argmax and its probability of
    ``(seq_len, num_labels)`` probabilities, or ``(seq_len,)`` label ids with score 1.0."""
    arr = np.asarray(scores)
    if arr.ndim == 2:
        tag_ids = arr.argmax(-1)
        return tag_ids, arr[np.arange(arr.shape[0]), tag_ids].astype(float)
    if arr.ndim == 1:
        return arr.astype(int), np.ones(arr.shape[0])
    raise ModelError("NER scores", expected="(seq_len, num_labels) probabilities or "
                     "(seq_len,) label ids", found=f"shape {arr.shape}",
                     fix="pass one sequence at a time")


def word_spans(offsets: Sequence[Sequence[int]], word_ids: Sequence[int | None]) -> dict[int, list[int]]:
    """word -> ``[first sub-token position, start, end]`` in characters, in order of appearance;
    special tokens (word id ``None`` or negative) are skipped."""
    words: dict[int, list[int]] = {}
    for j, w in enumerate(word_ids):
        if w is None or w < 0:
            continue
        s, e = int(offsets[j][0]), int(offsets[j][1])
        if w not in words:
            words[w] = [j, s, e]
        else:
            words[w][1] = min(words[w][1], s)
            words[w][2] = max(words[w][2], e)
    return words


def decode_entities(text: str, offsets: Sequence[Sequence[int]], scores: Any,
                    id2label: Mapping[Any, str], word_ids: Sequence[int | None],
                    ) -> list[dict[str, Any]]:
    """Turn per-sub-token predictions into entity spans over the original text.

    Args:
        text: the string the user passed.
        offsets: per sub-token ``(start, end)`` character offsets into ``text`` (from
            ``return_offsets_mapping=True`` on the raw text, or from :func:`encode_text`).
        scores: either probabilities of shape ``(seq_len, num_labels)`` (softmax output; the
            predicted tag is the argmax, its probability the token score) or a 1-D sequence of
            predicted label ids (score 1.0 each).
        id2label: label id -> BIO label (int or str keys).
        word_ids: word index per sub-token, ``None`` or negative for special tokens.

    Each word takes the prediction of its first sub-token; its character span runs from the
    start of its first sub-token to the end of its last. Words are grouped into entities the
    way ``seqeval`` reads BIO (``B-x`` starts; ``I-x`` continues an ``x`` entity, or starts
    one after ``O``/another type).

    Returns:
        ``[{"entity": "person", "text": "Ada Lovelace", "start": 0, "end": 12,
        "score": 0.98}, ...]`` with ``text == text[start:end]``; ``entity`` is the label's
        type without prefix, lower-cased; ``score`` is the mean word score over the span.
    """
    tag_ids, tok_scores = predicted_tags(scores)
    if not (len(offsets) == len(word_ids) == len(tag_ids)):
        raise ModelError("NER decoding inputs", expected="offsets, word_ids and scores of "
                         "equal length", found=f"{len(offsets)}, {len(word_ids)}, "
                         f"{len(tag_ids)}", fix="pass the encoding of the same sequence")

    words = word_spans(offsets, word_ids)
    entities: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None

    def close() -> None:
        nonlocal cur
        if cur is not None:
            start, end = cur["start"], cur["end"]
            entities.append({"entity": cur["entity"], "text": text[start:end],
                             "start": start, "end": end,
                             "score": float(np.mean(cur["scores"]))})
        cur = None

    for w in sorted(words):
        j, s, e = words[w]
        prefix, typ = _split_tag(_label_of(id2label, int(tag_ids[j])))
        typ = typ.lower() if typ else None
        if prefix == "O":
            close()
            continue
        if prefix in ("B", "S") or cur is None or cur["entity"] != typ:
            close()
            cur = {"entity": typ, "start": s, "end": e, "scores": [tok_scores[j]]}
        else:  # I-/E- continuing the same type
            cur["end"] = max(cur["end"], e)
            cur["scores"].append(tok_scores[j])
        if prefix in ("S", "E"):
            close()
    close()
    return entities


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------

def seqeval_inputs(pred_ids: Any, label_ids: Any, id2label: Mapping[Any, str]
                   ) -> tuple[list[list[str]], list[list[str]]]:
    """Map predicted/gold label ids to tag strings, dropping positions labelled ``-100``.

    Args:
        pred_ids: ``(n, seq_len)`` predicted ids, or ``(n, seq_len, num_labels)`` logits
            (argmax taken); rows may be ragged lists.
        label_ids: ``(n, seq_len)`` gold ids with ``-100`` on ignored positions (padding,
            special tokens, non-first sub-tokens).

    Returns:
        ``(pred_tags, true_tags)``: lists of tag sequences, one per example, for
        ``seqeval``.
    """
    if len(pred_ids) != len(label_ids):
        raise DataError("NER predictions", expected=f"{len(label_ids)} rows like the labels",
                        found=f"{len(pred_ids)} rows", fix="pass predictions for every row")
    preds_out: list[list[str]] = []
    trues_out: list[list[str]] = []
    for p_row, l_row in zip(pred_ids, label_ids):
        p = np.asarray(p_row)
        if p.ndim == 2:
            p = p.argmax(-1)
        lab = np.asarray(l_row)
        keep = lab != IGNORE_INDEX
        n = min(len(p), len(lab))
        keep = keep[:n]
        preds_out.append([_label_of(id2label, int(x)) for x in p[:n][keep]])
        trues_out.append([_label_of(id2label, int(x)) for x in lab[:n][keep]])
    return preds_out, trues_out
