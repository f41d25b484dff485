"""Objects passed where a recipe takes a path: ``Recipe(data=<Dataset | DatasetDict | DataFrame |
list of dicts | {"train": ..., "validation": ...}>)`` and ``Recipe(model=<PreTrainedModel>)``.

The config keeps only text: a fingerprint that names the content (``<in-memory DataFrame
3f2a..., 150 rows, columns [text, label]>``), so ``recipe.yaml`` stays YAML and resume's config
comparison and the feature cache compare *content* (a sha256 of the Arrow table / of the weights,
stable across processes). The objects themselves live in a table of this process, looked up by
that text: ``data.load_raw`` turns it into the raw splits, ``model.resolve_model`` into a folder.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from nlp_transfer.errors import ConfigError

#: Every in-memory name starts with this (a path or Hub id never does).
PREFIX = "<in-memory "
#: Split names a ``data={split: object}`` mapping accepts, as the file reader understands them.
SPLIT_NAMES = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation",
               "dev": "validation", "held_out": "validation", "test": "test"}
DATA_TYPES = ("a path, Hub id or 'bbc_news', a datasets.Dataset or DatasetDict, a pandas DataFrame, "
              "a list of dicts, or {'train': ..., 'validation': ..., 'test': ...} of those")
#: name -> raw DatasetDict (data) or {"model", "tokenizer", "sha"} (model), for this process.
OBJECTS: dict[str, Any] = {}


def is_in_memory(name: Any) -> bool:
    """Whether a ``data.name`` / ``model.name`` names an object passed in memory."""
    return isinstance(name, str) and name.startswith(PREFIX)


def lookup(name: str) -> Any | None:
    """The object (raw DatasetDict, or model entry) registered under ``name`` in this process."""
    return OBJECTS.get(name)


def fingerprint_of(name: str) -> str:
    """The hex fingerprint inside an in-memory name (``<in-memory X <hex>, ...>``)."""
    return name[len(PREFIX):].split()[1].rstrip(",>")


# --------------------------------------------------------------------------- data

def _is_dataframe(obj: Any) -> bool:
    return type(obj).__module__.startswith("pandas") and type(obj).__name__ == "DataFrame"


def _found(obj: Any) -> str:
    if isinstance(obj, list) and obj:
        return f"a list of {type(obj[0]).__name__}"
    return f"{type(obj).__module__}.{type(obj).__name__}".replace("builtins.", "")


def to_dataset(obj: Any, where: str = "data") -> Any:
    """A ``datasets.Dataset`` from a Dataset, DataFrame (index dropped) or list of dicts."""
    from datasets import Dataset
    if isinstance(obj, Dataset):
        return obj
    if _is_dataframe(obj):
        return Dataset.from_pandas(obj, preserve_index=False)
    if isinstance(obj, list) and all(isinstance(r, dict) for r in obj):
        return Dataset.from_list(obj)
    raise ConfigError(where, expected=DATA_TYPES, found=_found(obj),
                      fix="pass a DataFrame, a datasets.Dataset, a list of {'text': ..., 'label': ...} dicts "
                          "or a file path")


def is_data_object(obj: Any) -> bool:
    from datasets import Dataset, DatasetDict, IterableDataset
    return isinstance(obj, (Dataset, DatasetDict, IterableDataset, list)) or _is_dataframe(obj)


def table_sha256(ds: Any) -> str:
    """sha256 of a Dataset's rows as Arrow IPC (schema without metadata, then fixed slices of
    64k rows in one chunk each): equal rows give equal hashes in any process."""
    import pyarrow as pa
    table = ds.with_format("arrow")[:] if len(ds) else ds.data.table.slice(0, 0)
    # pandas gives large_string, a list of dicts string: the same rows hash alike either way
    schema = pa.schema([pa.field(f.name, pa.string() if pa.types.is_large_string(f.type) else
                                 pa.binary() if pa.types.is_large_binary(f.type) else f.type) for f in table.schema])
    h = hashlib.sha256(str(schema).encode())
    step = 1 << 16
    for start in range(0, table.num_rows, step):
        piece = table.slice(start, step).replace_schema_metadata(None).cast(schema).combine_chunks()
        for batch in piece.to_batches():
            h.update(batch.serialize().to_pybytes() if hasattr(batch, "serialize") else
                     pa.ipc.serialize_record_batch(batch).to_pybytes())
    h.update(str(table.num_rows).encode())
    return h.hexdigest()


def _splits(obj: Any) -> tuple[dict[str, Any], str]:
    from datasets import DatasetDict
    if isinstance(obj, DatasetDict):
        return dict(obj), "DatasetDict"
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            split = SPLIT_NAMES.get(str(key).lower())
            if split is None:
                raise ConfigError(f"data split '{key}'", expected="train, validation (or dev) and test",
                                  found=repr(key), fix=f"name it data={{'train': ..., 'validation': ...}}; "
                                  f"the other keys are data.* settings ({list(SPLIT_NAMES)})")
            if split in out:
                raise ConfigError(f"data split '{key}'", expected="each split once", found=f"two {split} splits",
                                  fix="pass one validation split (validation or dev)")
            out[split] = to_dataset(value, f"data split '{key}'")
        if "train" not in out:
            raise ConfigError("data splits", expected="a 'train' split", found=f"splits {list(obj)}",
                              fix="pass data={'train': ..., 'validation': ...}")
        return out, "splits"
    return {"train": to_dataset(obj)}, type(obj).__name__


def is_stream_object(obj: Any) -> bool:
    """A ``datasets.IterableDataset`` / ``IterableDatasetDict`` (or a split mapping holding one):
    data that is streamed, never loaded (``data.streaming``)."""
    from datasets import IterableDataset, IterableDatasetDict
    if isinstance(obj, (IterableDataset, IterableDatasetDict)):
        return True
    return isinstance(obj, dict) and any(isinstance(v, IterableDataset) for v in obj.values())


#: Rows of a stream hashed into its fingerprint (a stream cannot be hashed whole).
STREAM_FINGERPRINT_ROWS = 1000


def _register_stream(obj: Any) -> str:
    """An IterableDataset's name: its features, shard count and first rows hashed (a stream has no
    content hash; the same stream object in this process is what the name looks up)."""
    from datasets import Dataset, IterableDataset, IterableDatasetDict
    splits = dict(obj) if isinstance(obj, (IterableDatasetDict, dict)) else {"train": obj}
    h = hashlib.sha256()
    for split in sorted(splits):
        ds = splits[split]
        if isinstance(ds, Dataset):
            h.update(f"{split}:{table_sha256(ds)}".encode())
            continue
        if not isinstance(ds, IterableDataset):
            raise ConfigError(f"data split '{split}'", expected="a datasets.IterableDataset or Dataset",
                              found=_found(ds), fix="pass every split as a datasets object")
        h.update(f"{split}:{ds.n_shards}:{ds.features}".encode())
        for row in ds.take(STREAM_FINGERPRINT_ROWS):
            h.update(json.dumps(row, sort_keys=True, default=str).encode())
    if "train" not in splits:
        raise ConfigError("data splits", expected="a 'train' split", found=f"splits {list(splits)}",
                          fix="pass data={'train': stream, 'validation': ...}")
    name = f"{PREFIX}IterableDataset {h.hexdigest()[:16]}, streamed, splits [{', '.join(splits)}]>"
    OBJECTS[name] = {SPLIT_NAMES.get(k, k): v for k, v in splits.items()}
    return name


def register_data(obj: Any) -> str:
    """Register in-memory data; return its fingerprint name (the value of ``data.name``)."""
    from datasets import DatasetDict
    if is_stream_object(obj):
        return _register_stream(obj)
    splits, kind = _splits(obj)
    h = hashlib.sha256()
    for split in sorted(splits):
        h.update(f"{split}:{table_sha256(splits[split])}".encode())
    first = splits.get("train") or next(iter(splits.values()))
    rows = (f"{len(first)} rows" if len(splits) == 1 else
            " + ".join(f"{s} {len(d)}" for s, d in splits.items()) + " rows")
    name = f"{PREFIX}{kind} {h.hexdigest()[:16]}, {rows}, columns [{', '.join(first.column_names)}]>"
    OBJECTS[name] = DatasetDict(splits)
    return name


# --------------------------------------------------------------------------- models

def weights_sha256(module: Any) -> str:
    """sha256 over a module's state_dict: names, dtypes, shapes and bytes, in name order."""
    import torch
    h = hashlib.sha256()
    for key, t in sorted(module.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def tokenizer_sha256(tok: Any) -> str:
    """sha256 of a tokenizer's full definition (fast tokenizers) or vocabulary, and its class."""
    backend = getattr(tok, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tok.get_vocab().items()))
    return hashlib.sha256(f"{type(tok).__name__}|{text}".encode()).hexdigest()


def register_model(model: Any, tokenizer: Any = None) -> str:
    """Register a loaded ``transformers.PreTrainedModel`` (its base encoder for a
    ``*ForSequenceClassification``) and its tokenizer; return the name for ``model.name``."""
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers is a dependency
        PreTrainedModel = ()  # type: ignore[assignment]
    if not isinstance(model, PreTrainedModel):
        raise ConfigError("model.name", expected="a model folder, Hub id, 'minilm' or a loaded transformers "
                          "PreTrainedModel", found=_found(model), fix="pass model=<path or hub id> or model=<model>")
    encoder = model.base_model
    if tokenizer is None:
        tokenizer = getattr(encoder, "name_or_path", "") or getattr(model, "name_or_path", "") or None
    if tokenizer is None:
        raise ConfigError(f"tokenizer of the in-memory {type(model).__name__}", expected="a tokenizer",
                          found="none (the model was not loaded from a folder or Hub id)",
                          fix="pass model={'name': model, 'tokenizer': tokenizer}")
    if not isinstance(tokenizer, str) and not hasattr(tokenizer, "save_pretrained"):
        raise ConfigError("model tokenizer", expected="a transformers tokenizer or its folder / Hub id",
                          found=_found(tokenizer), fix="pass model={'name': model, 'tokenizer': tokenizer}")
    config = {k: v for k, v in encoder.config.to_dict().items() if k not in ("_name_or_path", "transformers_version")}
    tok_sha = hashlib.sha256(tokenizer.encode()).hexdigest() if isinstance(tokenizer, str) \
        else tokenizer_sha256(tokenizer)
    sha = hashlib.sha256(f"{type(encoder).__name__}|{weights_sha256(encoder)}|{tok_sha}|"
                         f"{json.dumps(config, sort_keys=True, default=str)}".encode()).hexdigest()
    params = sum(p.numel() for p in encoder.parameters())
    name = f"{PREFIX}{type(encoder).__name__} {sha[:16]}, {params / 1e6:.2f}M params>"
    OBJECTS[name] = {"model": encoder, "tokenizer": tokenizer, "sha": sha}
    return name


# --------------------------------------------------------------------------- config sections

def section_value(section: str, value: Any, fields: list[str]) -> Any:
    """What ``Recipe(<section>=value)`` means when ``value`` holds objects: a data/model object ->
    ``{"name": object}``; ``data={"train": df, "validation": df, "text_column": ...}`` -> the splits
    under ``name``; ``model={"name": model, "tokenizer": tok}`` -> one registered name."""
    if section not in ("data", "model") or value is None or isinstance(value, str):
        return value
    from datasets import DatasetDict, IterableDatasetDict
    if not isinstance(value, dict) or isinstance(value, (DatasetDict, IterableDatasetDict)):
        return {"name": value} if not hasattr(value, "__dataclass_fields__") else value
    if section == "model":
        if "tokenizer" not in value:
            return value
        rest = {k: v for k, v in value.items() if k != "tokenizer"}
        if isinstance(rest.get("name"), str) or "name" not in rest:
            raise ConfigError("model.tokenizer", expected="a tokenizer only next to a loaded model object",
                              found=f"model.name={rest.get('name')!r}",
                              fix="pass model={'name': <PreTrainedModel>, 'tokenizer': <tokenizer>}, or save both "
                                  "into one folder")
        return {**rest, "name": register_model(rest["name"], value["tokenizer"])}
    splits = {k: v for k, v in value.items() if k not in fields}
    if not splits or not any(is_data_object(v) for v in splits.values()):
        return value  # unknown keys are reported by the caller
    if "name" in value:
        raise ConfigError("data", expected="either data.name or splits {'train': ..., 'validation': ...}",
                          found=f"both (name and {list(splits)})", fix="pass the splits without name")
    return {**{k: v for k, v in value.items() if k in fields}, "name": splits}
