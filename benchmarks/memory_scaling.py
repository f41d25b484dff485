"""Memory and time as the data grows (issue 7): 10k, 100k and 1M rows, each in a fresh process.

For each size, a JSONL file of ``{"sentence", "label"}`` rows is synthesised by repeating the real
SST-2 sentences with variations (a short prefix and a repeat number, so that every row is a
distinct text and deduplication keeps them all), written to a temp folder. A fresh Python process
then runs what a user's first command runs: ``nlp_transfer.train(Recipe(...))`` with the
``frozen`` strategy for one epoch, i.e. data preparation (load the file through ``datasets``,
drop empties, encode labels, deduplicate, carve a stratified held-out split, tokenise), feature
extraction streamed to a memory-mapped cache, one epoch of the head on the cached features, the
held-out and train-sample evaluation, and the save. It reports

* the peak RSS (``VmHWM`` of the process, plus the peaks of its anonymous and file-backed parts
  sampled every 50 ms: memory-mapped Arrow and feature files count as file-backed);
* the wall time, and the phase times from ``metrics.json``.

The encoder is a TINY random BERT (hidden 32, 2 layers, MiniLM's tokenizer): extracting MiniLM
features for 1M sentences would take hours on 2 CPU cores, and the point here is what the
library holds per row, not the encoder's speed. Targets: peak RSS(1M) <= 1.5x peak RSS(10k);
wall time linear in the rows (the exponent of a log-log fit is reported).

``--mode`` picks what runs on each size (issue 17 item 2 for the streamed ones):

* ``frozen`` (default): the loaded path above;
* ``stream-full``: ``data.streaming=true``, ``full`` for ``STREAM_STEPS`` steps of 32 rows (held-out:
  the first 1,000 streamed rows): what is held must not grow with the file;
* ``stream-frozen``: ``data.streaming=true``, ``frozen``: the tokenised stream spooled to disk in
  chunks, then sharded, cached extraction and one epoch of the head.

    python benchmarks/memory_scaling.py [--rows 10000,100000,1000000] [--mode frozen] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402

DEFAULT_ROWS = (10_000, 100_000, 1_000_000)
MODES = ("frozen", "stream-full", "stream-frozen")
#: Optimizer steps of the stream-full mode (batch 32: 9,600 rows read whatever the file's size).
STREAM_STEPS = 300
PREFIXES = ("", "well ,", "honestly ,", "in short ,", "all in all ,", "frankly ,", "to be fair ,", "overall ,")


def variation(text: str, k: int) -> str:
    """The ``k``-th variation of a sentence (``k = 0``: the sentence itself); distinct for every k."""
    if k == 0:
        return text
    prefix = PREFIXES[k % len(PREFIXES)]
    return f"{prefix} {text} ( take {k} )".strip()


def synthesize(path: str | Path, n_rows: int, sentences: Sequence[str], labels: Sequence[int],
               seed: int = 0) -> Path:
    """Write ``n_rows`` JSONL rows cycling through a seeded shuffle of ``sentences`` with variations.

    Streams to disk (nothing is held per row). Row ``i`` is ``variation(s[perm[i % n]], i // n)``
    with the label of ``s``; texts are distinct as long as ``sentences`` are.
    """
    if not sentences:
        raise ValueError("no sentences to repeat")
    perm = list(range(len(sentences)))
    random.Random(seed).shuffle(perm)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(perm)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n_rows):
            j = perm[i % n]
            f.write(json.dumps({"sentence": variation(sentences[j], i // n), "label": int(labels[j])}) + "\n")
    return path


def sst2_sentences() -> tuple[list[str], list[int]]:
    """SST-2's distinct training sentences and their labels (67k phrases)."""
    train, _ = common.load_sst2(None)
    seen: set[str] = set()
    texts, labels = [], []
    for t, y in zip(train.texts, train.labels):
        if t and t not in seen:
            seen.add(t)
            texts.append(t)
            labels.append(y)
    return texts, labels


def growth_exponent(sizes: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of ``log(value)`` against ``log(size)`` (1.0 = linear)."""
    if len(sizes) < 2:
        return float("nan")
    xs = [math.log(s) for s in sizes]
    ys = [math.log(v) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else float("nan")


class RssSampler:
    """Background thread: peak ``VmRSS``, ``RssAnon`` and ``RssFile`` of this process (MiB)."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak = {"VmRSS": 0.0, "RssAnon": 0.0, "RssFile": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def read() -> dict[str, float]:
        out = {}
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    key = line.split(":", 1)[0]
                    if key in ("VmRSS", "RssAnon", "RssFile"):
                        out[key] = int(line.split()[1]) / 1024
        except OSError:
            pass
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            for k, v in self.read().items():
                self.peak[k] = max(self.peak[k], v)
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def child(data_file: str, model_dir: str, work: str, epochs: int = 1, mode: str = "frozen") -> dict[str, Any]:
    """One size, in this (fresh) process: data preparation + ``epochs`` of frozen training (or a
    streamed ``mode``: see the module doc)."""
    import warnings

    import datasets
    import transformers

    from nlp_transfer import Recipe, train

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore")
    base_rss = common.current_rss_mb()  # after the imports: torch, transformers, datasets
    streamed = mode.startswith("stream")
    data = {"name": data_file, "text_column": "sentence", "label_column": "label", "streaming": streamed}
    train_cfg: dict[str, Any] = {"epochs": epochs, "batch_size": 32, "head_lr": 1e-3}
    if mode == "stream-full":
        train_cfg = {"max_steps": STREAM_STEPS, "batch_size": 32, "lr": 1e-4}
    cfg = Recipe(model={"name": model_dir, "max_length": 128},
                 data=data, strategy={"name": "full" if mode == "stream-full" else "frozen", "cache_features": True},
                 train=train_cfg, eval={"patience": 100 if mode == "stream-full" else epochs},  # every step read
                 output={"dir": str(Path(work) / "out"), "report_to": ["none"], "progress_bars": False,
                         "overwrite": True, "cache_dir": str(Path(work) / "features"),
                         "checkpoint_every_epoch": False})
    with RssSampler() as sampler:
        t0 = time.perf_counter()
        res = train(cfg)
        wall = time.perf_counter() - t0
    m = res.metrics
    return {"wall_s": wall, "peak_rss_mb": common.vm_hwm_mb(), "rss_after_imports_mb": base_rss,
            "peak_anon_mb": sampler.peak["RssAnon"], "peak_file_mb": sampler.peak["RssFile"],
            "timing": m.get("timing"), "train_size": m["data"]["train_size"],
            "held_out_size": m["data"]["held_out_size"], "duplicates_dropped": m["data"].get("duplicates_dropped"),
            "held_out_accuracy": m["held_out"].get("accuracy")}


def run_size(n_rows: int, sentences: Sequence[str], labels: Sequence[int], model_dir: str, work: Path,
             timeout: float | None = None, mode: str = "frozen") -> dict[str, Any]:
    """Synthesise ``n_rows`` rows and run :func:`child` on them in a fresh subprocess."""
    d = work / f"rows_{n_rows}"
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data_file = synthesize(d / "data.jsonl", n_rows, sentences, labels)
    synth_s = time.perf_counter() - t0
    result = d / "result.json"
    env = dict(os.environ, HF_DATASETS_CACHE=str(d / "hf_datasets"))  # a cold datasets cache per size
    load0 = os.getloadavg()[0]
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--mode", mode, "--child", str(data_file),
                           model_dir, str(d), str(result)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not result.is_file():
        raise RuntimeError(f"memory child for {n_rows} rows failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = json.loads(result.read_text())
    out.update(rows=n_rows, file_mb=data_file.stat().st_size / 2**20, synth_s=synth_s, loadavg_1m=round(load0, 2),
               mode=mode)
    return out


def run_scaling(rows: Sequence[int] = DEFAULT_ROWS, log: Callable[[str], Any] = print,
                sentences: Sequence[str] | None = None, labels: Sequence[int] | None = None,
                keep: bool = False, mode: str = "frozen") -> dict[str, Any]:
    """Every size in its own process; peak RSS ratio (largest / smallest) and time exponent."""
    if sentences is None:
        sentences, labels = sst2_sentences()
    assert labels is not None
    work = Path(tempfile.mkdtemp(prefix="nlpt_mem_"))
    try:
        model_dir = common.save_tiny_bert(work / "tiny_bert")
        results = []
        for n in rows:
            r = run_size(n, sentences, labels, model_dir, work, mode=mode)
            log(f"  {n:>9,d} rows: peak RSS {r['peak_rss_mb']:7.0f} MiB (anon {r['peak_anon_mb']:.0f}, file "
                f"{r['peak_file_mb']:.0f}), wall {r['wall_s']:7.1f} s (load {r['loadavg_1m']:.2f})")
            results.append(r)
            import shutil
            shutil.rmtree(work / f"rows_{n}", ignore_errors=True)
    finally:
        if not keep:
            import shutil
            shutil.rmtree(work, ignore_errors=True)
    sizes = [r["rows"] for r in results]
    return {"rows": results, "model": "tiny random BERT (hidden 32, 2 layers, MiniLM tokenizer)",
            "rss_ratio": results[-1]["peak_rss_mb"] / results[0]["peak_rss_mb"],
            "anon_ratio": results[-1]["peak_anon_mb"] / max(results[0]["peak_anon_mb"], 1e-9),
            "time_exponent": growth_exponent(sizes, [r["wall_s"] for r in results]),
            "target_rss_ratio": 1.5, "mode": mode}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default=",".join(str(r) for r in DEFAULT_ROWS))
    ap.add_argument("--json", default=None)
    ap.add_argument("--mode", default="frozen", choices=MODES)
    ap.add_argument("--child", nargs=4, metavar=("DATA", "MODEL", "WORK", "RESULT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        data, model, work, result = args.child
        Path(result).write_text(json.dumps(child(data, model, work, mode=args.mode)))
        return 0
    res = run_scaling([int(x) for x in args.rows.split(",")], mode=args.mode)
    print(json.dumps({k: v for k, v in res.items() if k != "rows"}, indent=2))
    if args.json:
        common.write_json(args.json, {"memory": res})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
