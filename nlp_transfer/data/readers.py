"""Readers for task data the core data loader does not read itself (e.g. TREC's ``.label``
files); a multi-task entry names one with ``reader:``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from nlp_transfer.config import DataConfig
from nlp_transfer.errors import DataError


def read_trec(cfg: DataConfig, fine: bool = False) -> Any:
    """TREC question classification (Li & Roth): latin-1 lines ``COARSE:fine question``.

    ``train_5500.label`` is train and ``TREC_10.label`` test (a folder), or one file as train.
    The label is the coarse class (6: ABBR, DESC, ENTY, HUM, LOC, NUM) or, with ``fine``,
    ``COARSE:fine`` (50)."""
    from datasets import Dataset, DatasetDict

    path = Path(cfg.name).expanduser()
    if path.is_dir():
        files = {}
        for p in sorted(path.iterdir()):
            n = p.name.lower()
            if not p.is_file() or not n.endswith(".label"):
                continue
            files.setdefault("train" if "train" in n else "test", p)
        if "train" not in files:
            raise DataError(f"TREC folder {path}", expected="train_5500.label (and TREC_10.label)",
                            found=f"files {sorted(p.name for p in path.iterdir())[:8]}", fix="point to the trec folder")
    elif path.is_file():
        files = {"train": path}
    else:
        raise DataError("TREC data path", expected="an existing folder or file", found=f"'{path}' does not exist",
                        fix="check the path")
    out = {}
    for split, f in files.items():
        texts, labels = [], []
        for i, line in enumerate(f.read_text(encoding=cfg.encoding or "latin-1").splitlines(), 1):
            if not line.strip():
                continue
            label, _, text = line.partition(" ")
            if ":" not in label or not text.strip():
                raise DataError(f"TREC {f.name} line {i} ({line[:60]!r})", expected="'COARSE:fine question'",
                                found=repr(label), fix="check the file")
            labels.append(label if fine else label.split(":")[0])
            texts.append(text.strip())
        out[split] = Dataset.from_dict({cfg.text_column: texts, cfg.label_column: labels})
    return DatasetDict(out)


#: Readers for task data the core does not read itself: name -> fn(DataConfig) -> DatasetDict.
READERS: dict[str, Callable[[DataConfig], Any]] = {
    "trec": read_trec,
    "trec_fine": lambda cfg: read_trec(cfg, fine=True),
}
