"""Multi-label classification utilities: label parsing, encoding, threshold tuning, scores.

A multi-label column may hold Python lists, JSON-like list strings (``'["joy", "love"]'``),
delimiter-separated strings (``"joy,love"``), or single ints/strings. :func:`parse_label_lists`
normalises them to lists of strings, :func:`encode` turns them into a ``(n, L)`` float32
multi-hot matrix for a sigmoid/BCE head, :func:`tune_thresholds` picks one decision threshold
per label on held-out data, and :func:`f1_report` gives micro/macro/per-label scores.
"""
from __future__ import annotations

import ast
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nlp_transfer.errors import DataError

DEFAULT_GRID = np.round(np.linspace(0.05, 0.95, 19), 4)
_AUTO_DELIMITERS = (",", ";", "|")


# --------------------------------------------------------------------------------------------
# Parsing and encoding
# --------------------------------------------------------------------------------------------

def _scalar_to_str(v: Any, row: int) -> str:
    if isinstance(v, bool) or isinstance(v, np.bool_):
        raise DataError(f"label {v!r} in row {row}", expected="a label name or id",
                        found="a boolean", fix="use a multi-hot column via encode() instead, "
                                               "or list the label names")
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if math.isfinite(v) and float(v).is_integer():
            return str(int(v))
        raise DataError(f"label {v!r} in row {row}", expected="a label name or integer id",
                        found=f"the float {v!r}", fix="store label ids as integers")
    if isinstance(v, str):
        return v.strip()
    raise DataError(f"label {v!r} in row {row}", expected="a string or integer label",
                    found=type(v).__name__, fix="store labels as strings or ints")


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, (float, np.floating)) and math.isnan(v):
        return True
    return False


def _split_string(s: str, delimiter: str | None, row: int) -> list[Any]:
    s = s.strip()
    if not s:
        return []
    if s[0] == "[" and s[-1] == "]":
        for loader in (json.loads, ast.literal_eval):
            try:
                parsed = loader(s)
            except (ValueError, SyntaxError, TypeError):
                continue
            if isinstance(parsed, (list, tuple)):
                return list(parsed)
        # not valid JSON/Python, e.g. "[joy, 'love']": split and unquote by hand
        return [x.strip().strip("'\"") for x in s[1:-1].split(delimiter or ",")]
    if delimiter is None:
        return [s]
    return s.split(delimiter)


def _detect_delimiter(values: Sequence[Any]) -> str | None:
    """The auto-delimiter (``,`` ``;`` ``|``) found in most plain (non-list) string values."""
    counts = {d: 0 for d in _AUTO_DELIMITERS}
    for v in values:
        if isinstance(v, str):
            s = v.strip()
            if s[:1] == "[":
                continue
            for d in _AUTO_DELIMITERS:
                if d in s:
                    counts[d] += 1
    best = max(_AUTO_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else None


def parse_label_lists(values: Iterable[Any], delimiter: str | None = None) -> list[list[str]]:
    """Normalise a multi-label column to lists of label strings.

    Accepted per row: a list/tuple/array of labels; a JSON or Python list string
    (``'["a", "b"]'``, ``"['a', 'b']"``, ``"[1, 2]"``); a ``delimiter``-separated string
    (``"a,b"``); a single string or int; ``None``/NaN/empty (no labels). Ints become their
    decimal string (``3 -> "3"``). With ``delimiter=None`` the delimiter is detected once for
    the whole column among ``,`` ``;`` ``|`` (the one present in most string rows); pass
    ``delimiter=" "`` etc. explicitly for anything else. Items are stripped, empty items
    dropped, duplicates removed (first occurrence kept).

    Raises:
        DataError: a row holds something else (booleans, non-integral floats, dicts...).
    """
    values = list(values)
    if delimiter is None:
        delimiter = _detect_delimiter(values)
    out: list[list[str]] = []
    for row, v in enumerate(values):
        if _is_missing(v):
            items: list[Any] = []
        elif isinstance(v, str):
            items = _split_string(v, delimiter, row)
        elif isinstance(v, (list, tuple, np.ndarray)):
            items = list(v)
        elif isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
            items = [v]
        else:
            raise DataError(f"multi-label value in row {row} ({v!r})",
                            expected="a list of labels or a delimited string",
                            found=type(v).__name__, fix="store labels as lists or strings")
        labels: list[str] = []
        for it in items:
            s = _scalar_to_str(it, row)
            if s and s not in labels:
                labels.append(s)
        out.append(labels)
    return out


def infer_label_names(label_lists: Iterable[Sequence[str]]) -> list[str]:
    """Sorted unique labels (numerically if all are integer strings)."""
    names = {lab for labels in label_lists for lab in labels}
    if names and all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def encode(label_lists: Sequence[Sequence[str]], label_names: Sequence[str]) -> np.ndarray:
    """Multi-hot encode: ``(n, len(label_names))`` float32, 1.0 where the row has the label.

    Raises:
        DataError: a label is not in ``label_names`` (names the row and lists the known ones).
    """
    index = {name: j for j, name in enumerate(label_names)}
    if len(index) != len(label_names):
        raise DataError("multi-label names", expected="unique names",
                        found=f"{len(label_names) - len(index)} duplicate(s)",
                        fix="deduplicate label_names")
    out = np.zeros((len(label_lists), len(label_names)), dtype=np.float32)
    for i, labels in enumerate(label_lists):
        for lab in labels:
            try:
                out[i, index[lab]] = 1.0
            except KeyError:
                shown = list(label_names)[:30]
                raise DataError(f"label {lab!r} in row {i}",
                                expected=f"one of {shown}"
                                         + (" ..." if len(label_names) > 30 else ""),
                                found=repr(lab),
                                fix="add it to the label names or fix the data") from None
    return out


def decode(multi_hot: np.ndarray, label_names: Sequence[str]) -> list[list[str]]:
    """Inverse of :func:`encode` for a 0/1 (or boolean) matrix."""
    arr = np.asarray(multi_hot)
    return [[label_names[j] for j in np.flatnonzero(row > 0.5)] for row in arr]


# --------------------------------------------------------------------------------------------
# Thresholds
# --------------------------------------------------------------------------------------------

def _check_pair(probs: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    t = np.asarray(targets)
    if p.ndim != 2 or p.shape != t.shape:
        raise DataError("multi-label probabilities/targets",
                        expected="two (n_examples, n_labels) arrays of the same shape",
                        found=f"shapes {p.shape} and {t.shape}",
                        fix="pass sigmoid outputs and multi-hot targets of the same split")
    if not np.isin(t, (0, 1)).all():
        raise DataError("multi-label targets", expected="only 0/1 values",
                        found=f"values {np.unique(t)[:5].tolist()}",
                        fix="encode targets with multilabel.encode()")
    return p, t.astype(bool)


def _f1_counts(pred: np.ndarray, true: np.ndarray, axis: int | None = 0
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp = np.logical_and(pred, true).sum(axis=axis)
    fp = np.logical_and(pred, ~true).sum(axis=axis)
    fn = np.logical_and(~pred, true).sum(axis=axis)
    return tp, fp, fn


def _f1(tp: Any, fp: Any, fn: Any) -> np.ndarray:
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(denom), where=denom > 0)


def tune_thresholds(probs: Any, targets: Any, grid: Sequence[float] | np.ndarray = DEFAULT_GRID,
                    default: float = 0.5) -> np.ndarray:
    """Per-label decision thresholds that maximise each label's F1 on held-out data.

    A label is predicted when ``prob >= threshold``. Ties between grid values go to the one
    closest to ``default`` (0.5; then the lower one). Labels without any positive example in
    ``targets`` keep ``default``, as do labels whose best F1 is 0.

    Args:
        probs: ``(n, L)`` sigmoid probabilities on a held-out split (not the training split).
        targets: ``(n, L)`` 0/1 targets.
        grid: candidate thresholds, each in (0, 1).

    Returns:
        ``(L,)`` float64 thresholds.
    """
    p, t = _check_pair(probs, targets)
    g = np.asarray(grid, dtype=np.float64).ravel()
    if g.size == 0 or (g <= 0).any() or (g >= 1).any():
        raise DataError("threshold grid", expected="a non-empty list of values in (0, 1)",
                        found=str(g.tolist()[:5]), fix="e.g. np.linspace(0.05, 0.95, 19)")
    # visit candidates by closeness to the default so that strict '>' keeps the tie-break
    order = sorted(range(g.size), key=lambda k: (abs(g[k] - default), g[k]))
    n_labels = p.shape[1]
    best_f1 = np.zeros(n_labels)
    best_thr = np.full(n_labels, float(default))
    for k in order:
        pred = p >= g[k]
        f1 = _f1(*_f1_counts(pred, t))
        better = f1 > best_f1 + 1e-12
        best_f1[better] = f1[better]
        best_thr[better] = g[k]
    best_thr[~t.any(axis=0)] = float(default)
    return best_thr


def apply_thresholds(probs: Any, thresholds: Any) -> np.ndarray:
    """``(n, L)`` int64 0/1 predictions: ``probs >= thresholds`` (scalar or ``(L,)``)."""
    p = np.asarray(probs, dtype=np.float64)
    thr = np.asarray(thresholds, dtype=np.float64)
    if thr.ndim not in (0, 1) or (thr.ndim == 1 and thr.shape[0] != p.shape[-1]):
        raise DataError("multi-label thresholds",
                        expected=f"a scalar or {p.shape[-1]} values (one per label)",
                        found=f"shape {thr.shape}",
                        fix="use the thresholds saved with this model")
    return (p >= thr).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------

def f1_report(preds: Any, targets: Any, label_names: Sequence[str] | None = None
              ) -> dict[str, Any]:
    """Micro/macro precision, recall, F1 and per-label scores for 0/1 matrices.

    Returns:
        ``{"micro_precision", "micro_recall", "micro_f1", "macro_precision", "macro_recall",
        "macro_f1", "per_label": {name: {"precision", "recall", "f1", "support"}}}``;
        undefined ratios count as 0 (as scikit-learn's ``zero_division=0``).
    """
    _, t = _check_pair(preds, targets)
    pr = np.asarray(preds).astype(bool)
    tp, fp, fn = _f1_counts(pr, t)
    names = list(label_names) if label_names is not None else [str(j) for j in range(t.shape[1])]
    if len(names) != t.shape[1]:
        raise DataError("label names", expected=f"{t.shape[1]} names", found=str(len(names)),
                        fix="pass one name per column")

    def ratio(a: Any, b: Any) -> np.ndarray:
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        return np.divide(a, b, out=np.zeros_like(b), where=b > 0)

    prec, rec, f1 = ratio(tp, tp + fp), ratio(tp, tp + fn), _f1(tp, fp, fn)
    TP, FP, FN = tp.sum(), fp.sum(), fn.sum()
    return {
        "micro_precision": float(ratio(TP, TP + FP)),
        "micro_recall": float(ratio(TP, TP + FN)),
        "micro_f1": float(_f1(TP, FP, FN)),
        "macro_precision": float(prec.mean()),
        "macro_recall": float(rec.mean()),
        "macro_f1": float(f1.mean()),
        "per_label": {n: {"precision": float(prec[j]), "recall": float(rec[j]),
                          "f1": float(f1[j]), "support": int(t[:, j].sum())}
                      for j, n in enumerate(names)},
    }


# --------------------------------------------------------------------------------------------
# GoEmotions
# --------------------------------------------------------------------------------------------

def read_goemotions(path: str | Path, split: str = "train",
                    emotions_file: str | Path | None = None
                    ) -> tuple[list[dict[str, Any]], list[str]]:
    """Read a GoEmotions split (official TSV: ``text<TAB>ids<TAB>comment_id``, no header).

    Label ids are comma-separated indices into ``emotions.txt`` (28 names, one per line) and
    are mapped to names. Lines are split on tabs only: about 2.5% of texts start with a
    double quote, which CSV readers with default quoting would mangle.

    Args:
        path: the ``goemotions`` folder (then ``<split>.tsv`` is read) or a split file.
        emotions_file: defaults to ``emotions.txt`` next to the split file.

    Returns:
        ``(rows, label_names)`` with rows ``{"text", "labels" (names), "id"}``.

    Raises:
        DataError: missing files, a line without 3 tab-separated fields, or an unknown id.
    """
    p = Path(path)
    file = p / f"{split}.tsv" if p.is_dir() else p
    emo = Path(emotions_file) if emotions_file is not None else file.parent / "emotions.txt"
    for f in (file, emo):
        if not f.is_file():
            raise DataError(f"GoEmotions file {str(f)!r}", expected="an existing file",
                            found="no such file",
                            fix="point to the goemotions folder (train/dev/test.tsv + "
                                "emotions.txt)")
    names = [ln.strip() for ln in emo.read_text(encoding="utf-8").splitlines() if ln.strip()]
    rows: list[dict[str, Any]] = []
    with file.open(encoding="utf-8-sig", newline="") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 3:
                raise DataError(f"GoEmotions {file.name} line {lineno} ({line[:80]!r})",
                                expected="3 tab-separated fields (text, label ids, id)",
                                found=f"{len(parts)} field(s)", fix="fix or drop the line")
            text, ids, cid = parts
            labels = []
            for x in ids.split(","):
                x = x.strip()
                if not x.isdigit() or int(x) >= len(names):
                    raise DataError(f"GoEmotions {file.name} line {lineno}",
                                    expected=f"label ids in 0..{len(names) - 1}",
                                    found=repr(ids), fix="check emotions.txt and the file")
                labels.append(names[int(x)])
            rows.append({"text": text, "labels": labels, "id": cid})
    if not rows:
        raise DataError(f"GoEmotions file {str(file)!r}", expected="at least one row",
                        found="none", fix="check the file")
    return rows, names
