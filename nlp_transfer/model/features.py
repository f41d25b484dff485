"""Frozen-encoder features: computed once per split, cached on disk, reused across runs.

The cache key covers everything that changes the vectors: the encoder (path or id,
revision, sha256 of its weights), pooling, max_length and the exact token ids of the
split. Features are streamed into a memory-mapped ``.npy`` (never held per row in
Python) and written atomically, so a crash never leaves a half-written entry.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm

from nlp_transfer.data import MODEL_INPUTS, column_numpy
from nlp_transfer.model import TransferModel, cache_root


def default_cache_dir() -> Path:
    """The frozen-feature cache (``output.cache_dir`` overrides it): ``<cache root>/features``
    (:func:`nlp_transfer.model.cache_root`: NLP_TRANSFER_CACHE, HF_HOME, XDG_CACHE_HOME, ~/.cache)."""
    return cache_root() / "features"


def token_fingerprint(ds: Dataset) -> str:
    """Hash of the token ids (and type ids) of a tokenised split, read chunk by chunk from Arrow."""
    h = hashlib.sha256()
    for col in ("input_ids", "token_type_ids"):
        if col not in ds.column_names:
            continue
        arr = ds.data.column(col)
        for chunk in arr.chunks:
            flat = chunk.flatten().to_numpy(zero_copy_only=False)
            offsets = np.asarray(chunk.offsets)
            h.update(np.ascontiguousarray(flat).tobytes())
            h.update((offsets - offsets[0]).astype(np.int64).tobytes())
    if getattr(ds, "_indices", None) is not None:
        h.update(np.asarray(ds._indices.column(0)).tobytes())
    h.update(str(len(ds)).encode())
    return h.hexdigest()


def cache_key(model_id: str, revision: str | None, weights_sha: str | None, pooling: str,
              max_length: int, fingerprint: str, token_level: bool = False) -> str:
    blob = json.dumps({"model": model_id, "revision": revision, "weights": weights_sha, "pooling": pooling,
                       "max_length": max_length, "tokens": fingerprint, "token_level": token_level, "v": 1},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def batch_rows(ds: Dataset, idx: Any) -> list[dict[str, Any]]:
    """Rows ``idx`` of ``ds`` as the list of dicts a collator takes, read with one Arrow take.

    2.4x faster batch assembly than ``[ds[int(i)] for i in idx]`` (one query per row), measured
    in benchmarks/levers.py (feature_batching): 32 s saved per million rows.
    """
    cols = ds[np.asarray(idx)]
    keys = list(cols)
    return [dict(zip(keys, vals)) for vals in zip(*(cols[k] for k in keys))]


@torch.inference_mode()
def extract_features(model: TransferModel, ds: Dataset, collate: Any, batch_size: int, device: torch.device,
                     out_path: Path | None = None, desc: str = "features", show: bool = True) -> np.ndarray:
    """Pooled encoder outputs for every row of a tokenised split, in the split's order.

    Batches are formed in length order (little padding) and written back to their rows.
    With ``out_path`` the array is a memory-mapped .npy written to a temp file and renamed."""
    model.encoder.eval()
    lengths = column_numpy(ds, "length") if "length" in ds.column_names else np.zeros(len(ds))
    order = np.argsort(-lengths, kind="stable")
    dim = model.encoder.config.hidden_size
    tmp = None
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_suffix(f".tmp{os.getpid()}.npy")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(ds), dim))
    else:
        out = np.empty((len(ds), dim), dtype=np.float32)
    keep = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in ds.column_names]
    view = ds.select_columns(keep)
    for start in tqdm(range(0, len(ds), batch_size), desc=desc, disable=not show, leave=False):
        idx = order[start:start + batch_size]
        batch = collate(batch_rows(view, idx))
        batch = {k: v.to(device) for k, v in batch.items() if k in MODEL_INPUTS}
        feats = model.encode(**batch)
        out[idx] = feats.float().cpu().numpy()
    if tmp is not None:
        out.flush()
        del out
        os.replace(tmp, out_path)
        return np.load(out_path, mmap_mode="r")
    return out


def cached_features(model: TransferModel, ds: Dataset, collate: Any, batch_size: int, device: torch.device,
                    key_parts: dict[str, Any], cache_dir: Path | None, desc: str, show: bool) -> tuple[np.ndarray, bool]:
    """Return (features, hit). Reads the cache when present, else computes and stores."""
    if cache_dir is None:
        return extract_features(model, ds, collate, batch_size, device, None, desc, show), False
    key = cache_key(fingerprint=token_fingerprint(ds), **key_parts)
    path = cache_dir / f"{key}.npy"
    if path.is_file():
        try:
            arr = np.load(path, mmap_mode="r")
            if arr.shape[0] == len(ds):
                return arr, True
        except (ValueError, OSError):
            pass  # corrupt entry: recompute and replace it
    return extract_features(model, ds, collate, batch_size, device, path, desc, show), False
