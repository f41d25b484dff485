"""Token classification (NER) as a task of the recipe: data, tokenisation, collation, loss,
entity-level metrics and span predictions.

Data (``data.name``):

- a folder of CoNLL files (one token per line, tag in the last column, blank lines between
  sentences, ``-DOCSTART-`` skipped); the split comes from the file name: ``*train*``,
  ``*dev*``/``*valid*``/``*testa*`` (held-out), ``*test*``/``*testb*`` (test), e.g. WNUT-17's
  ``wnut17train.conll``, ``emerging.dev.conll``, ``emerging.test.annotated``;
- a single CoNLL file (a held-out split is carved from it);
- a JSON/JSONL/Parquet file or folder, or a Hub dataset, with list columns of tokens and tags
  (``tokens``/``tags``, or ``ner_tags``, found automatically; else ``data.text_column`` /
  ``data.label_column``). Integer tags take their names from the dataset's ``ClassLabel`` or
  from ``data.label_names``.

Tags in IOB1, IO or BIOES are converted to BIO (one scheme for the whole corpus). Each word's
label goes on its first sub-token, -100 elsewhere (``data.label_all_subtokens=true`` labels
every sub-token). Scores are entity-level (exact span and type, as ``seqeval`` counts them).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nlp_transfer.tasks.ner import conll as ner
from nlp_transfer.errors import DataError

CONLL_SKIP_SUFFIXES = (".md", ".py", ".json", ".jsonl", ".parquet", ".csv", ".yaml", ".yml", ".sh", ".zip",
                       ".gz", ".tar")
STRUCTURED = (".json", ".jsonl", ".parquet", ".arrow")
TOKEN_COLUMNS = ("tokens", "words")
TAG_COLUMNS = ("tags", "ner_tags", "labels", "label")


# --------------------------------------------------------------------------- reading

def _split_of(name: str) -> str | None:
    n = name.lower()
    if "readme" in n or "license" in n:
        return None
    if "train" in n:
        return "train"
    if "testa" in n or "dev" in n or "valid" in n or n.startswith("val"):
        return "validation"
    if "test" in n:
        return "test"
    return None


def conll_split_files(folder: Path) -> dict[str, Path]:
    """Map train / validation / test to the CoNLL files of a folder (by file name)."""
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith(".") or p.suffix.lower() in CONLL_SKIP_SUFFIXES:
            continue
        split = _split_of(p.name)
        if split:
            found.setdefault(split, p)
    return found


def _pick(columns: list[str], wanted: str, defaults: Sequence[str], role: str, key: str) -> str:
    if wanted in columns:
        return wanted
    for c in defaults:
        if c in columns:
            return c
    raise DataError(f"{role} column '{wanted}'", expected=f"a list column named '{wanted}' or one of {list(defaults)}",
                    found=f"columns {columns}", fix=f"pass data.{key}=<one of {columns}>")


def _from_dataset(raw: Any, cfg: Any) -> dict[str, dict[str, list]]:
    """tokens/tags lists from a DatasetDict with list columns (tag ids mapped to names)."""
    from datasets import ClassLabel

    out: dict[str, dict[str, list]] = {}
    for split, ds in raw.items():
        cols = ds.column_names
        tok_col = _pick(cols, cfg.text_column, TOKEN_COLUMNS, "token", "text_column")
        tag_col = _pick(cols, cfg.label_column, TAG_COLUMNS, "tag", "label_column")
        tokens = [list(map(str, t)) for t in ds[tok_col][:]]
        tags_raw = ds[tag_col][:]
        feat = ds.features[tag_col]
        inner = feat[0] if isinstance(feat, list) and feat else getattr(feat, "feature", None)  # List/Sequence
        names = list(inner.names) if isinstance(inner, ClassLabel) else (list(cfg.label_names) if cfg.label_names else None)
        tags: list[list[str]] = []
        for i, row in enumerate(tags_raw):
            if isinstance(row, str):
                raise DataError(f"row {i} of the tag column '{tag_col}' in the {split} split",
                                expected="a list of tags (one per token)", found="a plain string",
                                fix="store tags as a list column")
            conv = []
            for t in row:
                if isinstance(t, str):
                    conv.append(t)
                elif names is not None and 0 <= int(t) < len(names):
                    conv.append(str(names[int(t)]))
                else:
                    raise DataError(f"tag id {t!r} in row {i} of the {split} split",
                                    expected="tag strings, or ids with names (ClassLabel or data.label_names)",
                                    found=repr(t), fix="pass data.label_names=[O, B-PER, I-PER, ...] (index = id)")
            tags.append(conv)
        ner.check_examples(tokens, tags)
        out[split] = {"tokens": tokens, "tags": tags}
    return out


def read_ner_splits(cfg: Any) -> dict[str, dict[str, list]]:
    """Raw splits ``{split: {"tokens": [[...]], "tags": [[...]]}}`` named train / validation / test
    (whatever the source calls them)."""
    from nlp_transfer.data import VALIDATION_NAMES, load_raw

    path = Path(cfg.name).expanduser()
    if path.is_dir():
        has_structured = any(p.suffix.lower() in STRUCTURED for p in path.iterdir() if p.is_file())
        if not has_structured:
            files = conll_split_files(path)
            if "train" not in files:
                raise DataError(f"NER data folder {path}", expected="a CoNLL file with 'train' in its name",
                                found=f"files {sorted(p.name for p in path.iterdir())[:10]}",
                                fix="name the training file *train*.conll, or pass the file path")
            return {s: _sentences(ner.read_conll(p, encoding=cfg.encoding or "utf-8-sig")) for s, p in files.items()}
    elif path.is_file() and path.suffix.lower() not in STRUCTURED:
        return {"train": _sentences(ner.read_conll(path, encoding=cfg.encoding or "utf-8-sig"))}
    raw = load_raw(cfg)
    splits = _from_dataset(raw, cfg)
    renamed: dict[str, dict[str, list]] = {}
    for s, v in splits.items():
        key = "validation" if s in VALIDATION_NAMES else s
        renamed[key] = v
    return renamed


def _sentences(rows: list[dict[str, list[str]]]) -> dict[str, list]:
    return {"tokens": [r["tokens"] for r in rows], "tags": [r["tags"] for r in rows]}


# --------------------------------------------------------------------------- prepare

def _hash_tokens(tokens: list[str]) -> bytes:
    return hashlib.blake2b("\x1f".join(tokens).encode("utf-8"), digest_size=8).digest()


def prepare_ner(cfg: Any) -> Any:
    """Read, convert tags to BIO, deduplicate, split: a ``PreparedData`` with ``tokens`` and
    ``tags`` (BIO strings) columns and the label names (``O`` first)."""
    from datasets import Dataset

    from nlp_transfer.data import PreparedData, split_rows

    raw = read_ner_splits(cfg)
    train_name = "train" if "train" in raw else cfg.train_split
    if train_name not in raw:
        raise DataError("train split", expected=f"a split named '{cfg.train_split}'", found=f"splits {list(raw)}",
                        fix="pass data.train_split=<name>")
    val_name = cfg.validation_split if cfg.validation_split in raw else ("validation" if "validation" in raw else None)
    if cfg.validation_split and cfg.validation_split not in raw:
        raise DataError("validation split", expected=f"a split named '{cfg.validation_split}'",
                        found=f"splits {list(raw)}", fix="pass data.validation_split=<name> or leave it empty")
    test_name = cfg.test_split if cfg.test_split in raw else ("test" if "test" in raw else None)
    parts = {"train": raw[train_name]}
    if val_name:
        parts["held_out"] = raw[val_name]
    if test_name:
        parts["test"] = raw[test_name]
    if not parts["train"]["tokens"]:
        raise DataError("training data", expected="at least 2 sentences", found="an empty dataset",
                        fix="check the file or the split name")

    # One tagging scheme for the whole corpus, converted to BIO.
    all_tags = [t for p in parts.values() for t in p["tags"]]
    scheme = ner.detect_scheme(all_tags)
    bio = ner.to_bio(all_tags)
    pos = 0
    for p in parts.values():
        n = len(p["tags"])
        p["tags"], pos = bio[pos:pos + n], pos + n
    label_names = [str(x) for x in cfg.label_names] if cfg.label_names else ner.label_list(bio)
    if label_names[0] != "O" and "O" in label_names:
        label_names = ["O"] + [n for n in label_names if n != "O"]

    stats: dict[str, Any] = {"dataset": cfg.name, "tag_scheme": scheme, "empty_dropped": 0,
                             "duplicates_dropped": 0, "leaked_dropped": 0}
    held_rows = list(zip(parts["held_out"]["tokens"], parts["held_out"]["tags"])) if "held_out" in parts else None
    rows, held_rows, split_stats = split_rows(list(zip(parts["train"]["tokens"], parts["train"]["tags"])), held_rows,
                                              lambda row: _hash_tokens(row[0]), cfg, unit="sentence",
                                              held_name=str(val_name), held_file="dev file")
    stats.update(split_stats)
    train = {"tokens": [t for t, _ in rows], "tags": [g for _, g in rows]}
    held = {"tokens": [t for t, _ in held_rows], "tags": [g for _, g in held_rows]}
    unknown = sorted({t for p in (train, held, parts.get("test")) if p for seq in p["tags"] for t in seq}
                     - set(label_names))
    if unknown:
        raise DataError("NER tags", expected=f"tags among data.label_names {label_names}", found=f"{unknown[:5]}",
                        fix="add them to data.label_names or leave it empty to collect them from the data")

    def to_ds(p: dict[str, list] | None) -> Any:
        return None if p is None else Dataset.from_dict({"tokens": p["tokens"], "tags": p["tags"]})

    test = parts.get("test")
    stats.update(train_size=len(train["tokens"]), held_out_size=len(held["tokens"]),
                 test_size=len(test["tokens"]) if test else 0,
                 entity_types=sorted({n[2:] for n in label_names if n != "O"}))
    return PreparedData(train=to_ds(train), held_out=to_ds(held), test=to_ds(test), label_names=label_names,
                        stats=stats)


# --------------------------------------------------------------------------- tokenise / collate

def tokenize_ner(ds: Any, tokenizer: Any, max_length: int, label_names: list[str], data_cfg: Any = None) -> Any:
    """Sub-word tokenisation with word labels aligned (``label``: ids, -100 where ignored)."""
    label2id = {n: i for i, n in enumerate(label_names)}
    all_sub = bool(getattr(data_cfg, "label_all_subtokens", False))

    def tok(batch: dict[str, list]) -> dict[str, Any]:
        enc = ner.align_labels(tokenizer, batch["tokens"], batch["tags"], label2id, max_length,
                               label_all_subtokens=all_sub, return_word_ids=False)
        out = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
        out["label"] = enc["labels"]
        out["length"] = [len(x) for x in enc["input_ids"]]
        return out

    return ds.map(tok, batched=True, batch_size=1000, remove_columns=[c for c in ("tokens", "tags") if c in ds.column_names])


class TokenCollator:
    """``DataCollatorForTokenClassification`` (labels padded with -100) that accepts our
    ``label`` column and returns ``labels``; rows without labels (feature extraction) work too."""

    def __init__(self, tokenizer: Any) -> None:
        from transformers import DataCollatorForTokenClassification
        self.inner = DataCollatorForTokenClassification(tokenizer, label_pad_token_id=ner.IGNORE_INDEX)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        rows = [{("labels" if k == "label" else k): v for k, v in f.items() if k != "length"} for f in features]
        return dict(self.inner(rows))


def token_collator(tokenizer: Any) -> TokenCollator:
    return TokenCollator(tokenizer)


# --------------------------------------------------------------------------- loss / metrics

def token_ce(logits: Any, labels: Any, weight: Any = None) -> Any:
    """Cross-entropy over every labelled token (positions with -100 ignored)."""
    import torch
    return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.long().reshape(-1),
                                             ignore_index=ner.IGNORE_INDEX,
                                             weight=None if weight is None else weight.float())


def ner_metrics(metric_names: list[str], logits: np.ndarray, labels: np.ndarray, label_names: list[str] | None,
                extra: dict[str, Any]) -> dict[str, Any]:
    """Entity-level precision / recall / F1 (micro over entities) and token accuracy; the
    per-entity-type scores go to ``_details["per_type"]``."""
    from nlp_transfer.metrics import compute

    if not label_names:
        raise DataError("NER evaluation", expected="label names", found="none", fix="train with label names")
    id2label = dict(enumerate(label_names))
    preds = np.asarray(logits).argmax(-1)
    pred_tags, true_tags = ner.seqeval_inputs(preds, np.asarray(labels), id2label)
    res = compute(["seqeval"], predictions=pred_tags, references=true_tags)
    types = sorted({k.rsplit("_", 1)[0] for k in res if not k.startswith("overall_")})
    per_type = {t: {"precision": res[f"{t}_precision"], "recall": res[f"{t}_recall"], "f1": res[f"{t}_f1"],
                    "support": int(res[f"{t}_number"])} for t in types}
    return {"precision": res["overall_precision"], "recall": res["overall_recall"], "f1": res["overall_f1"],
            "accuracy": res["overall_accuracy"], "_details": {"per_type": per_type}}


# --------------------------------------------------------------------------- predict

def predict_entities(predictor: Any, texts: list[str], text_pairs: list[str] | None = None,
                     batch_size: int = 32) -> list[dict[str, Any]]:
    """Entity spans with character offsets in each text:
    ``{"entities": [{"entity", "text", "start", "end", "score"}, ...]}`` per text."""
    import torch

    if text_pairs is not None:
        from nlp_transfer.errors import ModelError
        raise ModelError("NER prediction input", expected="single texts", found="text pairs",
                         fix="call the predictor with texts only")
    tok = predictor.tokenizer
    ner._require_fast(tok)
    id2label = dict(enumerate(predictor.label_names))
    max_length = predictor.meta["max_length"]
    spans = [ner.words_to_char_spans(t) for t in texts]
    results: list[dict[str, Any]] = [{"entities": []} for _ in texts]
    todo = [i for i in np.argsort([-len(s) for s in spans], kind="stable") if spans[i]]  # no words: no entities
    with torch.inference_mode():
        for start in range(0, len(todo), batch_size):
            idx = [int(i) for i in todo[start:start + batch_size]]
            words = [[texts[i][s:e] for s, e in spans[i]] for i in idx]
            enc = tok(words, is_split_into_words=True, truncation=True, max_length=max_length, padding=True,
                      return_tensors="pt")
            inputs = {k: v.to(predictor.device) for k, v in enc.items()
                      if k in ("input_ids", "attention_mask", "token_type_ids")}
            probs = torch.softmax(predictor.model(**inputs)["logits"].float(), -1).cpu().numpy()
            for b, i in enumerate(idx):
                wids = enc.word_ids(b)
                pos = np.flatnonzero(enc["attention_mask"][b].numpy())  # the row's tokens, any padding side
                wid = [wids[p] for p in pos]
                offsets = [(0, 0) if w is None else spans[i][w] for w in wid]
                results[i]["entities"] = ner.decode_entities(texts[i], offsets, probs[b, pos], id2label, wid)
    return results
