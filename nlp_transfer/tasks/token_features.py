"""Frozen encoder + token classification: per-token features cached once per split.

Only positions that carry a label (the first sub-token of each word, or every sub-token with
``data.label_all_subtokens``) are kept: those are the only positions the loss and the
entity-level metric look at, and at prediction time the head sees exactly the same vectors
(the head is applied per position, so dropping the other positions changes nothing).

On disk a split is two arrays next to each other in the feature cache:

- ``<key>.tok.npy``: float32 ``(total_labelled_tokens, hidden)``, memory-mapped;
- ``<key>.tok.offsets.npy``: int64 ``(n_rows + 1,)``, row ``i`` owns ``[offsets[i], offsets[i+1])``.

The key covers the encoder (path, revision, weights sha256), max_length, the token ids *and*
the labelled positions of the split. The offsets file is written first and the feature file
renamed into place last, so a present feature file marks a complete entry.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import DataLoader

from nlp_transfer.model import features as feats
from nlp_transfer.data import MODEL_INPUTS

IGNORE_INDEX = -100


def label_masks(ds: Dataset) -> list[np.ndarray]:
    """Per row, a boolean mask of the positions with a label (!= -100)."""
    return [np.asarray(row, dtype=np.int64) != IGNORE_INDEX for row in ds["label"][:]]


def _mask_fingerprint(masks: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for m in masks:
        h.update(np.packbits(m).tobytes())
        h.update(len(m).to_bytes(4, "little"))
    return h.hexdigest()


def encode_tokens(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Last hidden states ``(batch, seq, hidden)`` of the (frozen) encoder."""
    kwargs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    return model.encoder(**kwargs).last_hidden_state


@torch.inference_mode()
def extract_token_features(model: Any, ds: Dataset, collate: Callable, batch_size: int, device: torch.device,
                           out_path: Path | None = None, desc: str = "token features",
                           show: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Hidden states of the labelled positions of every row, in row order.

    Returns ``(features (total, hidden) float32, offsets (n + 1,) int64)``; with ``out_path``
    the features are a memory-mapped ``.npy`` written atomically (offsets beside it)."""
    model.encoder.eval()
    masks = label_masks(ds)
    counts = np.asarray([int(m.sum()) for m in masks], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    dim = model.encoder.config.hidden_size
    total = int(offsets[-1])
    tmp = feats.cache_writer(out_path)
    # a process that does not write the cache entry reads it once published: it keeps no rows
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(total, dim)) if tmp else \
        np.empty((total, dim) if out_path is None else (0, dim), dtype=np.float32)
    lengths = np.asarray(ds["length"][:]) if "length" in ds.column_names else np.asarray([len(m) for m in masks])
    batches = feats.length_batches(ds, batch_size, lengths)
    keep = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in ds.column_names]
    view = ds.select_columns(keep)

    def encode(b: int) -> tuple[np.ndarray, list[np.ndarray]]:
        idx = batches[b]
        batch = collate(feats.batch_rows(view, idx))
        batch = {k: v.to(device) for k, v in batch.items() if k in MODEL_INPUTS}
        hidden = encode_tokens(model, batch).float().cpu().numpy()
        attn = batch["attention_mask"].cpu().numpy()
        rows = []
        for j, i in enumerate(idx):
            pos = np.flatnonzero(attn[j])  # the row's own tokens, whatever the padding side
            m = masks[int(i)]
            rows.append(hidden[j, pos[:len(m)][m]])
        return idx, rows

    for idx, rows in feats.sharded_map(len(batches), encode, desc, show):
        if len(out):
            for i, r in zip(idx, rows):
                out[offsets[i]:offsets[i + 1]] = r
    if out_path is not None:
        if tmp is not None:
            out.flush()
            np.save(offsets_path(out_path), offsets)
        del out
        feats.publish_cache_file(tmp, out_path)
        return np.load(out_path, mmap_mode="r"), offsets
    return out, offsets


def offsets_path(path: Path) -> Path:
    return path.with_name(path.name[:-len(".npy")] + ".offsets.npy")


def cached_token_features(model: Any, ds: Dataset, collate: Callable, batch_size: int, device: torch.device,
                          key_parts: dict[str, Any], cache_dir: Path | None, desc: str,
                          show: bool) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(features, offsets, hit)``: read the cache when present, else compute and store."""
    if cache_dir is None:
        x, off = extract_token_features(model, ds, collate, batch_size, device, None, desc, show)
        return x, off, False
    fp = feats.token_fingerprint(ds) + _mask_fingerprint(label_masks(ds))
    key = feats.cache_key(fingerprint=fp, token_level=True, **key_parts)
    path = cache_dir / f"{key}.tok.npy"
    hit = None
    if path.is_file() and offsets_path(path).is_file():
        try:
            x = np.load(path, mmap_mode="r")
            off = np.load(offsets_path(path))
            hit = (x, off) if len(off) == len(ds) + 1 and x.shape[0] == off[-1] else None
        except (ValueError, OSError):
            hit = None  # corrupt entry: recompute and replace it
    if feats.all_processes_agree(hit is not None):
        return hit[0], hit[1], True
    x, off = extract_token_features(model, ds, collate, batch_size, device, path, desc, show)
    return x, off, False


class TokenFeatureDataset(torch.utils.data.Dataset):
    """Rows of cached token features; a batch is padded to its longest row.

    Items are sentences (so evaluation keeps sentence structure for the entity-level metric);
    the head is applied per token and the loss ignores the -100 padding."""

    def __init__(self, x: np.ndarray, offsets: np.ndarray, labels: np.ndarray, idx: np.ndarray | None = None) -> None:
        self.x, self.offsets, self.labels = x, np.asarray(offsets), np.asarray(labels, dtype=np.int64)
        self.idx = np.arange(len(self.offsets) - 1) if idx is None else np.asarray(idx)

    def __len__(self) -> int:
        return len(self.idx)

    def __getitems__(self, positions: list[int]) -> dict[str, torch.Tensor]:
        rows = self.idx[np.asarray(positions)]
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        width = max(1, int((ends - starts).max(initial=0)))
        x = np.zeros((len(rows), width, self.x.shape[1]), dtype=np.float32)
        y = np.full((len(rows), width), IGNORE_INDEX, dtype=np.int64)
        for b, (s, e) in enumerate(zip(starts, ends)):
            x[b, :e - s] = self.x[s:e]
            y[b, :e - s] = self.labels[s:e]
        return {"features": torch.from_numpy(x), "labels": torch.from_numpy(y)}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([i])


def flat_labels(ds: Dataset) -> np.ndarray:
    """The labelled positions' label ids of a split, concatenated in row order."""
    rows = [np.asarray(r, dtype=np.int64) for r in ds["label"][:]]
    flat = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    return flat[flat != IGNORE_INDEX]


def token_feature_loaders(model: Any, splits: dict[str, Dataset | None], sample_idx: np.ndarray, collate: Callable,
                          train_batch_size: int, eval_batch_size: int, device: torch.device,
                          key_parts: dict[str, Any], cache_dir: Path | None, show: bool,
                          generator: torch.Generator, log: Callable[[str], Any] = print
                          ) -> tuple[DataLoader, DataLoader, DataLoader, DataLoader | None]:
    """Train / held-out / train-sample / test loaders over cached token features.

    ``splits`` maps "train", "held_out", "test" to tokenised datasets (test may be None)."""
    model.to(device)
    sets: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for split, ds in splits.items():
        if ds is None:
            continue
        x, off, hit = cached_token_features(model, ds, collate, eval_batch_size, device, key_parts, cache_dir,
                                            f"token features {split}", show)
        sets[split] = (x, off, flat_labels(ds))
        log(f"[nlp_transfer] {split} token features {'from cache' if hit else 'computed'}: "
            f"{tuple(x.shape)} over {len(ds)} rows")

    def ds_of(split: str, idx: np.ndarray | None = None) -> TokenFeatureDataset:
        return TokenFeatureDataset(*sets[split], idx=idx)

    def to_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return batch

    train = DataLoader(ds_of("train"), batch_size=train_batch_size, shuffle=True, generator=generator,
                       collate_fn=to_batch)
    held = DataLoader(ds_of("held_out"), batch_size=eval_batch_size, collate_fn=to_batch)
    sample = DataLoader(ds_of("train", sample_idx), batch_size=eval_batch_size, collate_fn=to_batch)
    test = DataLoader(ds_of("test"), batch_size=eval_batch_size, collate_fn=to_batch) if "test" in sets else None
    return train, held, sample, test
