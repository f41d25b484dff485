"""Streamed training data (``data.streaming=true``): a ``datasets`` IterableDataset read row by row.

Nothing is loaded or converted to Arrow: a corpus larger than memory or disk trains. The held-out
split is small and materialised: a validation split/file when there is one, else the first
``data.held_out_rows`` streamed rows (skipped for training). Label names come from
``data.label_names``, a ClassLabel feature, or the held-out rows (a training row with another
label stops the run naming it). Empty texts and rows whose text is in the held-out set are
dropped as the stream passes; exact duplicates *within* the stream are kept (finding them needs
the whole corpus).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset, IterableDataset, Value

from nlp_transfer.config import DataConfig, objects
from nlp_transfer.data import (BUILTIN, VALIDATION_NAMES, canonical_columns, column_roles, drop_empty, encode_labels,
                               file_reader, float_targets, infer_label_names, label_encoder, load_bbc_news, nonempty,
                               select_roles, split_files, text_hash)
from nlp_transfer.errors import DataError

#: Rows read from the start of a stream to check its columns (the errors of loaded data).
HEAD_ROWS = 200


@dataclass
class StreamedData:
    """The ``PreparedData`` of a stream: ``train`` is an IterableDataset with the canonical columns
    (labels encoded), ``held_out`` (and ``test``) are materialised Datasets."""
    train: Any
    held_out: Dataset
    test: Dataset | None
    label_names: list[str] | None
    stats: dict[str, Any] = field(default_factory=dict)
    has_pair: bool = False
    streamed = True


def stream_file(path: Path, cfg: DataConfig) -> IterableDataset:
    import datasets
    builder, kwargs = file_reader(path, cfg)
    return datasets.load_dataset(builder, data_files=str(path), split="train", streaming=True, **kwargs)


def open_streams(cfg: DataConfig) -> dict[str, Any]:
    """The splits of ``data.name`` as streams (a registered IterableDataset, a file or folder, a Hub id)."""
    name = cfg.name
    if name in BUILTIN:
        return {"train": load_bbc_news()["train"].to_iterable_dataset()}
    if objects.is_in_memory(name):
        found = objects.lookup(name)
        if found is None:
            raise DataError(f"data {name}", expected="the in-memory stream in this process",
                            found="only its fingerprint (a recipe.yaml read back in a new process)",
                            fix="pass the same IterableDataset again, or the path of its files")
        return {k: v.to_iterable_dataset() if isinstance(v, Dataset) and k == "train" else v
                for k, v in dict(found).items()}
    path = Path(name).expanduser()
    if path.is_file():
        return {"train": stream_file(path, cfg)}
    if path.is_dir():
        files = split_files(path)
        if "train" not in files:
            raise DataError(f"data folder {path}", expected="a train.<csv|tsv|jsonl|json|parquet> file",
                            found=str(sorted(p.name for p in path.iterdir())[:10]),
                            fix="name the training file train.<ext> or pass the file path")
        return {k: stream_file(v, cfg) for k, v in files.items()}
    import datasets
    try:
        return dict(datasets.load_dataset(name, cfg.subset, streaming=True))
    except Exception as e:
        raise DataError(f"dataset '{name}'", expected="a local path, 'bbc_news' or a reachable Hub dataset id",
                        found=f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}",
                        fix="check the id and your network, or pass data.streaming=false with a local copy") from None


def canonical_stream(ds: IterableDataset, cfg: DataConfig, split: str) -> IterableDataset:
    """The stream's role columns under their canonical names, checked on its first rows with the same
    errors as loaded data (a missing column names the ones there are)."""
    head = list(ds.take(HEAD_ROWS))
    if not head:
        raise DataError(f"{split} stream", expected="at least 2 labelled rows", found="an empty stream",
                        fix="check the file or the split name")
    canonical_columns(Dataset.from_list(head), cfg, split)
    return select_roles(ds, column_roles(cfg))


def materialise(ds: Any, cfg: DataConfig, split: str, limit: int | None) -> Dataset:
    """A small split (validation, test) read whole, with canonical columns and no empty texts."""
    if isinstance(ds, IterableDataset):
        ds = Dataset.from_list(list(ds.take(limit) if limit else ds))
    elif limit:
        ds = ds.select(range(min(limit, len(ds))))
    ds, _ = drop_empty(canonical_columns(ds, cfg, split), cfg.text_pair_column is not None)
    return ds


def prepare_stream(cfg: DataConfig, task: str = "sequence_classification") -> StreamedData:
    """Map columns, take the held-out rows, encode labels and drop empties/leaks as the stream passes."""
    splits = open_streams(cfg)
    if cfg.train_split not in splits:
        raise DataError("train split", expected=f"a split named '{cfg.train_split}'", found=f"splits {list(splits)}",
                        fix="pass data.train_split=<name>")
    has_pair = cfg.text_pair_column is not None
    train = canonical_stream(splits[cfg.train_split], cfg, "train")
    class_label = isinstance((train.features or {}).get("label"), ClassLabel)
    train = train.filter(nonempty(has_pair), batched=True, batch_size=1000)
    val_name = cfg.validation_split or next((s for s in splits if s in VALIDATION_NAMES), None)
    stats: dict[str, Any] = {"dataset": cfg.name, "streamed": True}
    if val_name is not None:
        if val_name not in splits:
            raise DataError("validation split", expected=f"a split named '{val_name}'", found=f"splits {list(splits)}",
                            fix="pass data.validation_split=<name> or leave it empty to hold out the first rows")
        held = materialise(splits[val_name], cfg, val_name, cfg.max_eval_samples)
        stats["held_out_source"] = f"split '{val_name}'"
    else:
        held = Dataset.from_list(list(train.take(cfg.held_out_rows)))
        train = train.skip(cfg.held_out_rows)
        stats["held_out_source"] = f"the first {len(held)} streamed rows (data.held_out_rows)"
        if cfg.max_eval_samples:
            held = held.select(range(min(cfg.max_eval_samples, len(held))))
    test_name = cfg.test_split or ("test" if "test" in splits else None)
    test = None
    if test_name in splits:
        try:
            test = materialise(splits[test_name], cfg, test_name, None)
        except DataError:
            test = None  # unlabeled test split (GLUE): cannot be scored
    if len(held) == 0:
        raise DataError("held-out data", expected="at least 1 row", found="an empty held-out split",
                        fix="check the validation file or raise data.held_out_rows")

    label_names = None
    if task == "sequence_classification":
        explicit_ids = cfg.label_names is not None or class_label
        label_names = (list(train.features["label"].names) if class_label else
                       [str(n) for n in cfg.label_names] if cfg.label_names else infer_label_names(held, cfg))
        if len(label_names) < 2:
            raise DataError("labels of the held-out rows", expected="at least 2 classes", found=f"{label_names}",
                            fix="pass data.label_names=[...] (a stream's classes are read from its held-out rows)")
        if not (class_label or cfg.label_names):
            stats["label_source"] = "the held-out rows (a training row with another label stops the run)"
        held = encode_labels(held, label_names, val_name or "held-out", explicit_ids)
        if test is not None:
            test = encode_labels(test, label_names, test_name, explicit_ids)
        train = train.map(label_encoder(label_names, "train", explicit_ids, class_label), batched=True,
                          batch_size=1000)
    elif task == "regression":
        held = held.map(float_targets, batched=True).cast_column("label", Value("float32"))
        if test is not None:
            test = test.map(float_targets, batched=True).cast_column("label", Value("float32"))
        train = train.map(float_targets, batched=True, batch_size=1000)
    if cfg.dedup:  # a held-out text never trains (the leak check of loaded data, row by row)
        seen = set(held.map(lambda b: text_hash(b, has_pair), batched=True)["_hash"])
        train = train.filter(lambda b: [h not in seen for h in text_hash(b, has_pair)["_hash"]], batched=True,
                             batch_size=1000)
    if cfg.max_train_samples:
        train = train.take(cfg.max_train_samples)
    stats.update(held_out_size=len(held), test_size=len(test) if test is not None else 0, train_size=None)
    return StreamedData(train=train, held_out=held, test=test, label_names=label_names, stats=stats,
                        has_pair=has_pair)
