"""What the engine trains on when the data is a stream (``data.streaming=true``).

``full``/``lora``/``partial`` read the stream as they train: :class:`StreamRows` yields tokenised
rows of endless, seeded passes (pass p shuffled in a buffer with seed ``train.seed + p``), one
loop-epoch of ``train.max_steps`` global batches. A resume starts at row ``consumed x batch``
of that sequence and skips the rows before it untokenised, so it continues exactly where the
interrupted run was. On N processes Accelerate's dispatcher reads the stream on the main process
and sends every process its slice of each global batch.

``frozen`` needs every row once: the tokenised stream is spooled to an Arrow file on disk in
chunks (memory-mapped, never held in memory), and the loaded-data path (sharded, cached feature
extraction) takes it from there.
"""
from __future__ import annotations

import itertools
import os
import socket
from pathlib import Path
from typing import Any, Iterator

import torch

from nlp_transfer.data import token_encoder
from nlp_transfer.errors import DataError
from nlp_transfer.training.evaluate import MODEL_COLUMNS

#: Raw rows tokenised at a time (the batch size of datasets' own ``map``).
ENCODE_ROWS = 1000


def encoded_chunks(rows: Iterator[dict[str, Any]], encode: Any, has_pair: bool) -> Iterator[dict[str, list]]:
    """Columns (token ids, ``length``, ``label``) of :data:`ENCODE_ROWS` raw rows at a time."""
    texts = ["text", "text_pair"] if has_pair else ["text"]
    while True:
        chunk = list(itertools.islice(rows, ENCODE_ROWS))
        if not chunk:
            return
        enc = dict(encode({c: [r[c] for r in chunk] for c in texts}))
        enc["label"] = [r["label"] for r in chunk]
        yield enc


class StreamRows(torch.utils.data.IterableDataset):
    """Tokenised training rows ``start_row .. start_row + rows`` of the endless sequence of passes
    over ``stream`` (a canonical, label-encoded IterableDataset).

    Why not ``stream.shuffle().skip(n).map(tokenize)`` from datasets alone: a resume must know which
    pass row n falls in, so rows are counted as they are read (``pass_rows``: the length of every
    pass finished so far, saved in checkpoints), and the skipped rows are never tokenised."""

    def __init__(self, stream: Any, tokenizer: Any, max_length: int, has_pair: bool, rows: int, seed: int,
                 buffer: int) -> None:
        self.stream, self.rows, self.seed, self.buffer = stream, rows, seed, buffer
        self.encode, self.has_pair = token_encoder(tokenizer, max_length, has_pair), has_pair
        self.start_row = 0
        self.pass_rows: list[int] = []

    def __len__(self) -> int:
        return self.rows

    def pass_iter(self, p: int) -> Iterator[dict[str, Any]]:
        s = self.stream.shuffle(seed=self.seed + p, buffer_size=self.buffer) if self.buffer else self.stream
        return iter(s)

    def tokenised(self, rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for enc in encoded_chunks(rows, self.encode, self.has_pair):
            keys = [k for k in MODEL_COLUMNS if k in enc]
            yield from (dict(zip(keys, values)) for values in zip(*(enc[k] for k in keys)))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        pos, end = self.start_row, self.start_row + self.rows
        p, offset = 0, pos
        while p < len(self.pass_rows) and offset >= self.pass_rows[p]:  # whole passes already done
            offset -= self.pass_rows[p]
            p += 1
        while pos < end:
            it, n = self.pass_iter(p), 0
            for _ in itertools.islice(it, offset):  # consumed before the resume: read, not tokenised
                n += 1
            if n == offset:
                for row in self.tokenised(it):
                    yield row
                    n, pos = n + 1, pos + 1
                    if pos >= end:
                        return
            if n == 0:
                raise DataError("training stream", expected="rows to train on",
                                found="an empty stream (after the held-out rows, empty texts and held-out leaks)",
                                fix="check the data, or lower data.held_out_rows")
            if p == len(self.pass_rows):
                self.pass_rows.append(n)
            offset -= min(offset, n)
            p += 1


def stream_sample(stream: Any, n: int, tokenizer: Any, max_length: int, has_pair: bool) -> Any:
    """The train sample of a stream: its first ``n`` training rows, tokenised (a fixed set, scored
    with the held-out metrics at every evaluation)."""
    from datasets import Dataset
    from nlp_transfer.data import tokenize
    rows = list(stream.take(n)) if n else []
    if not rows:
        return Dataset.from_dict({"input_ids": [], "length": [], "label": []})
    return tokenize(Dataset.from_list(rows), tokenizer, max_length)


def spool(stream: Any, tokenizer: Any, max_length: int, has_pair: bool, path: Path, writer: bool) -> Any:
    """The whole tokenised stream as a memory-mapped Dataset: ``writer`` (a node's local main process)
    writes it to ``path`` in chunks of :data:`ENCODE_ROWS` rows (Arrow IPC stream, the format of
    datasets' own cache files), the others open it once written."""
    import pyarrow as pa
    from datasets import Dataset
    if writer:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{socket.gethostname()}-{os.getpid()}")
        out = None
        with open(tmp, "wb") as f:
            for cols in encoded_chunks(iter(stream), token_encoder(tokenizer, max_length, has_pair), has_pair):
                batch = pa.RecordBatch.from_pydict(cols)
                out = out or pa.ipc.new_stream(f, batch.schema)
                out.write_batch(batch)
            if out is None:
                raise DataError("training stream", expected="rows to train on", found="an empty stream",
                                fix="check the data, or lower data.held_out_rows")
            out.close()
        os.replace(tmp, path)
    return Dataset.from_file(str(path))
