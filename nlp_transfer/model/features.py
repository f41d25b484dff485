"""Frozen-encoder features: computed once per split, cached on disk, reused across runs.

The cache key covers everything that changes the vectors: the encoder (path or id,
revision, sha256 of its weights), pooling, max_length and the exact token ids of the
split. Features are streamed into a memory-mapped ``.npy`` (never held per row in
Python) and written atomically, so a crash never leaves a half-written entry.

On N processes (``torchrun``, ``accelerate launch``) extraction is sharded: the split's
length-sorted batches are the same on any process count, each process encodes every N-th
batch, and the results are gathered so every process holds the whole split. The features
are therefore bitwise those of a 1-process run (same batches, same padding), every row is
encoded exactly once, and the cache (keyed without the process count) is shared by 1- and
N-process runs. The local main process of each node writes the cache entry.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

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


#: Batches each process encodes between two gathers: bounds what is in flight (and pickled) per
#: gather while keeping the number of collective calls small.
ROUND_BATCHES = 16


def launched_on_cpus() -> bool:
    """True under a multi-process launcher (torchrun, accelerate launch) on a machine without GPUs:
    Accelerate forms the gloo process group only when told it is on CPU; otherwise each process
    would silently run alone (``PartialState()`` reports 1 process)."""
    return os.environ.get("LOCAL_RANK") is not None and not torch.cuda.is_available()


def process_state() -> Any:
    """accelerate's ``PartialState``: this process's rank and the process count (1 when not launched
    on several); initialises the process group from the launcher's environment if needed (the same
    state the training engine's ``Accelerator`` then shares)."""
    from accelerate import PartialState
    return PartialState(cpu=launched_on_cpus())


def length_batches(ds: Dataset, batch_size: int, lengths: np.ndarray | None = None) -> list[np.ndarray]:
    """Row indices of ``ds`` in batches of ``batch_size``, longest rows first (little padding).
    Depends only on the split, never on the process count."""
    if lengths is None:
        lengths = column_numpy(ds, "length") if "length" in ds.column_names else np.zeros(len(ds))
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[start:start + batch_size] for start in range(0, len(ds), batch_size)]


def sharded_map(n_batches: int, compute: Callable[[int], Any], desc: str = "", show: bool = False,
                state: Any = None) -> Iterator[Any]:
    """Yield ``compute(b)`` for every batch ``b < n_batches`` on every process, each computed on
    exactly one process (batch ``b`` on process ``b % N``), gathered every :data:`ROUND_BATCHES`
    batches per process. Results carry their own row indices, so their order does not matter."""
    state = state or process_state()
    world, rank = state.num_processes, state.process_index
    per_round = world * ROUND_BATCHES
    bar = tqdm(total=n_batches, desc=desc, disable=not (show and state.is_main_process), leave=False)
    for r0 in range(0, n_batches, per_round):
        mine = [compute(b) for b in range(r0 + rank, min(n_batches, r0 + per_round), world)]
        if world > 1:
            from accelerate.utils import gather_object
            mine = gather_object(mine)  # every process's results, on every process
        bar.update(min(per_round, n_batches - r0))
        yield from mine
    bar.close()


def all_processes_agree(flag: bool, state: Any = None) -> bool:
    """True when ``flag`` is true on every process (e.g. a cache hit: one miss and all recompute,
    so no process waits in a gather the others skipped)."""
    state = state or process_state()
    if state.num_processes == 1:
        return flag
    from accelerate.utils import gather_object
    return all(gather_object([bool(flag)]))


def cache_writer(out_path: Path | None, state: Any = None) -> Path | None:
    """The temp file this process fills for the cache entry ``out_path``: only the local main
    process of each node writes one (the others keep no rows and read the entry once published)."""
    state = state or process_state()
    if out_path is None or not state.is_local_main_process:
        return None
    out_path.parent.mkdir(parents=True, exist_ok=True)
    return out_path.with_suffix(f".tmp{os.getpid()}.npy")


def publish_cache_file(tmp: Path | None, path: Path, state: Any = None) -> None:
    """The writer renames its finished temp file into the cache; everyone then waits, so the entry
    exists on every process's return."""
    state = state or process_state()
    if tmp is not None:
        os.replace(tmp, path)
    state.wait_for_everyone()


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

    Batches are formed in length order (little padding), sharded over the processes (module doc)
    and written back to their rows. With ``out_path`` the array is a memory-mapped .npy written
    to a temp file and renamed."""
    model.encoder.eval()
    batches = length_batches(ds, batch_size)
    dim = model.encoder.config.hidden_size
    tmp = cache_writer(out_path)
    # a process that does not write the cache entry reads it once published: it keeps no rows
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(ds), dim)) if tmp else \
        np.empty((len(ds), dim) if out_path is None else (0, dim), dtype=np.float32)
    keep = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in ds.column_names]
    view = ds.select_columns(keep)

    def encode(b: int) -> tuple[np.ndarray, np.ndarray]:
        batch = collate(batch_rows(view, batches[b]))
        batch = {k: v.to(device) for k, v in batch.items() if k in MODEL_INPUTS}
        return batches[b], model.encode(**batch).float().cpu().numpy()

    for idx, rows in sharded_map(len(batches), encode, desc, show):
        if len(out):
            out[idx] = rows
    if out_path is not None:
        if tmp is not None:
            out.flush()
        del out
        publish_cache_file(tmp, out_path)
        return np.load(out_path, mmap_mode="r")
    return out


def cached_features(model: TransferModel, ds: Dataset, collate: Any, batch_size: int, device: torch.device,
                    key_parts: dict[str, Any], cache_dir: Path | None, desc: str, show: bool) -> tuple[np.ndarray, bool]:
    """Return (features, hit). Reads the cache when present (on every process), else computes
    (sharded over the processes) and stores."""
    if cache_dir is None:
        return extract_features(model, ds, collate, batch_size, device, None, desc, show), False
    key = cache_key(fingerprint=token_fingerprint(ds), **key_parts)
    path = cache_dir / f"{key}.npy"
    arr = None
    if path.is_file():
        try:
            arr = np.load(path, mmap_mode="r")
            arr = arr if arr.shape[0] == len(ds) else None
        except (ValueError, OSError):
            arr = None  # corrupt entry: recompute and replace it
    if all_processes_agree(arr is not None):
        return arr, True
    return extract_features(model, ds, collate, batch_size, device, path, desc, show), False
