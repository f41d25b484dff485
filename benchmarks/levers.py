"""Micro-measurements of the performance levers of issue 7, each against its alternative.

* ``fused_adamw``: ``torch.optim.AdamW(fused=True)`` vs the default (``foreach``) on MiniLM's
  22.7M parameters, ms per optimizer step (the recipe used ``fused`` on CUDA only);
* ``compile``: one full fine-tuning step of MiniLM (TransferModel, mean pooling) on length-grouped
  SST-2 batches, eager vs ``torch.compile(dynamic=True)``: compile time and steady-state ms/step;
* ``tokenize_num_proc``: ``datasets.map(batched=True)`` tokenisation of SST-2 rows with
  ``num_proc=1`` vs ``2``;
* ``feature_batching``: the frozen feature extractor's batch assembly, one ``ds[i]`` per row +
  ``DataCollatorWithPadding`` vs one ``ds[idx]`` slice per batch (what ``features.py`` does);
* ``train_sample_check``: the overfitting check's cost, a forward pass over the fixed 512-row
  train sample vs over the whole 4,000-row train split (a second full evaluation), and zero
  encoder passes for ``frozen`` (its sample is read from the feature cache);
* ``threads``: a full fine-tuning step with 1 vs 2 torch threads (on a shared, oversubscribed
  machine the OpenMP barriers of 2 threads can cost more than they save);
* ``length_grouping``, ``eval_batch``, ``embedding_grads``: see their docstrings (issue 16);
* ``attention``: transformers' SDPA attention (the default) vs its eager attention, for a full
  fine-tuning step and for the forward pass of an evaluation;
* ``dropout_rng``: a full step with torch's dropout (``bernoulli_``, ~5% of a CPU step in the
  profile) vs a mask drawn with ``torch.rand`` (same distribution, another RNG stream);
* ``host_sync``: a full step that reads ``loss.item()`` every step vs one that never does;
* ``step_overhead``: what our engine adds per optimizer step (Accelerate's accumulate context,
  clipping, scheduler, non-finite check, logging, callbacks, progress) over a bare PyTorch loop,
  measured on a 2-layer 32-wide model whose own step is a fraction of a millisecond;
* ``bf16``: ``torch.autocast("cpu", bfloat16)`` vs fp32 for a full step, with the CPU's ISA;
* ``loader_workers``: the collator's cost per training batch (what DataLoader workers could take
  off the main process) against the step it feeds;
* ``heap_allocations``: a full step with glibc's default malloc (the 47 MB word-embedding gradient
  is a fresh mmap, page-faulted in every step) vs ``train.heap_allocations`` (heap blocks kept),
  with the minor page faults per step; and the same for a ``lora`` step;
* ``seen_rows``, ``eval_cadence``: see their docstrings (issue 16).

    python benchmarks/levers.py [--quick] [--only fused_adamw,compile,...] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402

LEVERS = ("fused_adamw", "compile", "tokenize_num_proc", "feature_batching", "train_sample_check", "threads",
          "length_grouping", "eval_batch", "embedding_grads", "attention", "dropout_rng", "host_sync",
          "step_overhead", "bf16", "loader_workers", "heap_allocations", "seen_rows", "eval_cadence")


def _timeit(fn: Callable[[], Any], n: int, warmup: int = 1) -> float:
    """Median seconds of ``n`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _model_path(quick: bool, work: Path) -> str:
    if quick:
        p = work / "tiny_bert"
        if not (p / "config.json").is_file():
            common.save_tiny_bert(p)
        return str(p)
    return common.minilm_path()


def _texts(quick: bool) -> tuple[list[str], list[int]]:
    if common.sst2_available():
        train, _ = common.load_sst2(256 if quick else common.TRAIN_SAMPLE)
        return train.texts, train.labels
    words = "a good film with a dull and moving story that goes nowhere".split()
    texts = [" ".join(words[: 3 + i % 9]) for i in range(256)]
    return texts, [i % 2 for i in range(256)]


def _transfer_model(model_path: str) -> Any:
    from nlp_transfer.model import build_model

    model, _, _ = build_model(model_path, "sequence_classification", 2, "mean", 0.1, strategy="full")
    return model


def _grouped_batches(texts: list[str], labels: list[int], model_path: str, n_batches: int) -> list[dict[str, Any]]:
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    lens = common.token_lengths(texts, tok)
    batches = common.trainer_length_grouped_batches(lens, common.BATCH_SIZE, common.SEED)[:n_batches]
    out = []
    for b in batches:
        enc = tok([texts[i] for i in b], truncation=True, max_length=common.MAX_LENGTH, padding=True,
                  return_tensors="pt")
        enc = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        enc["labels"] = torch.tensor([labels[i] for i in b])
        out.append(enc)
    return out


def lever_fused_adamw(quick: bool, work: Path) -> dict[str, Any]:
    import torch

    model = _transfer_model(_model_path(quick, work))
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    res: dict[str, Any] = {"params": sum(p.numel() for p in params)}
    n = 5 if quick else 20
    opts = {"foreach": torch.optim.AdamW(params, lr=1e-5, foreach=True),
            "fused": torch.optim.AdamW(params, lr=1e-5, fused=True)}
    times: dict[str, list[float]] = {k: [] for k in opts}
    for _ in range(3):  # interleaved rounds: the machine's noise hits both alike
        for k, opt in opts.items():
            times[k].append(_timeit(opt.step, n, warmup=2))
    for k in opts:
        res[f"{k}_ms"] = statistics.median(times[k]) * 1e3
    # same update? one step from identical states
    ref = [p.detach().clone() for p in params]
    a = [torch.nn.Parameter(p.clone()) for p in ref]
    b = [torch.nn.Parameter(p.clone()) for p in ref]
    for x, y, p in zip(a, b, params):
        x.grad = p.grad.clone()
        y.grad = p.grad.clone()
    torch.optim.AdamW(a, lr=1e-3, foreach=True).step()
    torch.optim.AdamW(b, lr=1e-3, fused=True).step()
    res["max_abs_diff"] = max(float((x - y).abs().max()) for x, y in zip(a, b))
    res["speedup"] = res["foreach_ms"] / res["fused_ms"]
    res["summary"] = (f"fused {res['fused_ms']:.1f} ms vs foreach {res['foreach_ms']:.1f} ms per step "
                      f"({res['speedup']:.2f}x; max |diff| {res['max_abs_diff']:.1e})")
    return res


def _train_step_fn(model: Any, batches: list[dict[str, Any]], fused: bool | None = None, *, sync: bool = False,
                   bf16: bool = False) -> Callable[[int], float]:
    """A timed training step (forward, backward, AdamW) over ``batches``; ``sync`` reads
    ``loss.item()`` each step, ``bf16`` runs the forward under CPU bf16 autocast."""
    import torch

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=fused)

    def step(i: int) -> float:
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(**batches[i % len(batches)])
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if sync:
            out["loss"].item()
        return time.perf_counter() - t0

    return step


def _step_batches(quick: bool, work: Path, n_full: int = 24) -> tuple[str, list[dict[str, Any]], int]:
    """The model path, ``n`` length-grouped SST-2 training batches and ``n`` (fewer when quick)."""
    path = _model_path(quick, work)
    texts, labels = _texts(quick)
    n = 6 if quick else n_full
    return path, _grouped_batches(texts, labels, path, n), n


def lever_compile(quick: bool, work: Path) -> dict[str, Any]:
    import torch

    path = _model_path(quick, work)
    texts, labels = _texts(quick)
    n = 8 if quick else 24
    batches = _grouped_batches(texts, labels, path, n)
    res: dict[str, Any] = {"batches": n, "distinct_lengths": len({b["input_ids"].shape[1] for b in batches})}
    torch.manual_seed(0)
    eager = _transfer_model(path).train()
    step = _train_step_fn(eager, batches)
    step(0)
    res["eager_ms"] = statistics.median(step(i) for i in range(n)) * 1e3
    torch.manual_seed(0)
    model = _transfer_model(path).train()
    try:
        compiled = torch.compile(model, dynamic=True)
        step = _train_step_fn(compiled, batches)
        t0 = time.perf_counter()
        first = [step(i) for i in range(n)]  # compiles (and maybe recompiles) on the way
        res["first_pass_s"] = time.perf_counter() - t0
        res["compiled_ms"] = statistics.median(step(i) for i in range(n)) * 1e3
        res["compile_overhead_s"] = res["first_pass_s"] - n * res["compiled_ms"] / 1e3
        res["speedup_steady"] = res["eager_ms"] / res["compiled_ms"]
        saved = res["eager_ms"] - res["compiled_ms"]
        res["break_even_steps"] = res["compile_overhead_s"] * 1e3 / saved if saved > 0 else float("inf")
        res["summary"] = (f"compiled {res['compiled_ms']:.0f} ms vs eager {res['eager_ms']:.0f} ms per step "
                          f"({res['speedup_steady']:.2f}x) after {res['compile_overhead_s']:.0f} s of compilation; "
                          f"break-even after {res['break_even_steps']:.0f} steps")
        del first
    except Exception as e:  # no compiler, unsupported op ...
        res["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        res["summary"] = f"torch.compile failed: {res['error']}"
    return res


def lever_tokenize_num_proc(quick: bool, work: Path) -> dict[str, Any]:
    import datasets
    from datasets import Dataset
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    path = _model_path(quick, work)
    tok = AutoTokenizer.from_pretrained(path)
    if common.sst2_available():
        train, _ = common.load_sst2(None)
        texts = train.texts[: 4000 if quick else 67_349]
    else:
        texts = _texts(quick)[0] * 8
    ds = Dataset.from_dict({"text": texts})

    def fn(batch: dict[str, list]) -> dict[str, Any]:
        enc = tok(batch["text"], truncation=True, max_length=common.MAX_LENGTH)
        enc["length"] = [len(x) for x in enc["input_ids"]]
        return enc

    res: dict[str, Any] = {"rows": len(texts)}
    for n in (1, 2):
        t0 = time.perf_counter()
        ds.map(fn, batched=True, batch_size=1000, num_proc=n if n > 1 else None, remove_columns=["text"],
               load_from_cache_file=False, cache_file_name=str(work / f"tok_{n}.arrow") if n == 1 else None)
        res[f"num_proc_{n}_s"] = time.perf_counter() - t0
    res["speedup"] = res["num_proc_1_s"] / res["num_proc_2_s"]
    res["summary"] = (f"{res['rows']} rows: num_proc=2 {res['num_proc_2_s']:.1f} s vs 1 {res['num_proc_1_s']:.1f} s "
                      f"({res['speedup']:.2f}x)")
    return res


def lever_feature_batching(quick: bool, work: Path) -> dict[str, Any]:
    import numpy as np
    from datasets import Dataset
    from transformers import AutoTokenizer, DataCollatorWithPadding

    path = _model_path(quick, work)
    tok = AutoTokenizer.from_pretrained(path)
    texts, _ = _texts(quick)
    enc = tok(texts, truncation=True, max_length=common.MAX_LENGTH)
    ds = Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                            "token_type_ids": enc["token_type_ids"]})
    collate = DataCollatorWithPadding(tok)
    order = np.argsort([-len(x) for x in enc["input_ids"]], kind="stable")
    bs = 128

    def per_row() -> None:
        for s in range(0, len(ds), bs):
            collate([ds[int(i)] for i in order[s:s + bs]])

    def sliced() -> None:
        for s in range(0, len(ds), bs):
            cols = ds[order[s:s + bs]]
            keys = list(cols)
            collate([dict(zip(keys, vals)) for vals in zip(*(cols[k] for k in keys))])

    res: dict[str, Any] = {"rows": len(ds), "batch_size": bs}
    res["per_row_s"] = _timeit(per_row, 3, 1)
    res["sliced_s"] = _timeit(sliced, 3, 1)
    res["speedup"] = res["per_row_s"] / res["sliced_s"]
    res["per_million_rows_saved_s"] = (res["per_row_s"] - res["sliced_s"]) / len(ds) * 1e6
    res["summary"] = (f"batch assembly for {len(ds)} rows: slice {res['sliced_s'] * 1e3:.0f} ms vs per-row "
                      f"{res['per_row_s'] * 1e3:.0f} ms ({res['speedup']:.1f}x; "
                      f"{res['per_million_rows_saved_s']:.0f} s saved per 1M rows)")
    return res


def lever_train_sample_check(quick: bool, work: Path) -> dict[str, Any]:
    import torch

    path = _model_path(quick, work)
    texts, labels = _texts(quick)
    model = _transfer_model(path).eval()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    lens = common.token_lengths(texts, tok)
    order = sorted(range(len(texts)), key=lambda i: lens[i])

    def forward(idx: list[int]) -> None:
        with torch.inference_mode():
            for s in range(0, len(idx), 128):
                b = idx[s:s + 128]
                enc = tok([texts[i] for i in b], truncation=True, max_length=common.MAX_LENGTH, padding=True,
                          return_tensors="pt")
                model(**{k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")})

    sample = sorted(order[:: max(1, len(order) // 512)][:512], key=lambda i: lens[i])
    res: dict[str, Any] = {"train_rows": len(texts), "sample_rows": len(sample)}
    res["sample_pass_s"] = _timeit(lambda: forward(sample), 1, 0)
    res["full_train_pass_s"] = _timeit(lambda: forward(order), 1, 0)
    res["saved_per_eval_s"] = res["full_train_pass_s"] - res["sample_pass_s"]
    res["summary"] = (f"train-sample check {res['sample_pass_s']:.1f} s per evaluation vs {res['full_train_pass_s']:.1f} s "
                      f"for a full train pass ({res['train_rows']} rows); frozen: 0 encoder passes (cache)")
    return res


def lever_threads(quick: bool, work: Path) -> dict[str, Any]:
    import torch

    path = _model_path(quick, work)
    texts, labels = _texts(quick)
    n = 6 if quick else 16
    batches = _grouped_batches(texts, labels, path, n)
    before = torch.get_num_threads()
    res: dict[str, Any] = {"batches": n, "loadavg_1m": round(os.getloadavg()[0], 2)}
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            torch.manual_seed(0)
            step = _train_step_fn(_transfer_model(path).train(), batches)
            step(0)
            res[f"threads_{t}_ms"] = statistics.median(step(i) for i in range(n)) * 1e3
    finally:
        torch.set_num_threads(before)
    res["speedup_2_over_1"] = res["threads_1_ms"] / res["threads_2_ms"]
    res["summary"] = (f"full step 2 threads {res['threads_2_ms']:.0f} ms vs 1 thread {res['threads_1_ms']:.0f} ms "
                      f"({res['speedup_2_over_1']:.2f}x at load {res['loadavg_1m']})")
    return res


def _epoch_batches(texts: list[str], labels: list[int], tok: Any, order: list[int], pad_to: int | None) -> list[dict]:
    import torch
    bs = common.BATCH_SIZE
    out = []
    for start in range(0, len(order), bs):
        b = order[start:start + bs]
        enc = tok([texts[i] for i in b], truncation=True, max_length=common.MAX_LENGTH, padding=True,
                  pad_to_multiple_of=pad_to, return_tensors="pt")
        enc = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        enc["labels"] = torch.tensor([labels[i] for i in b])
        out.append(enc)
    return out


def lever_length_grouping(quick: bool, work: Path) -> dict[str, Any]:
    """One epoch of full fine-tuning steps (forward, backward, fused AdamW) over the batches of
    ``train.length_grouping=sorted`` (our SortedBucketSampler), ``megabatch`` (transformers'
    LengthGroupedSampler, what Trainer's group_by_length uses) and sorted padded to a multiple of 8;
    two rounds in opposite orders, the per-scheme minimum."""
    import torch
    from transformers import AutoTokenizer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from nlp_transfer.training.sampling import SortedBucketSampler

    path = _model_path(quick, work)
    texts, labels = _texts(quick)
    tok = AutoTokenizer.from_pretrained(path)
    lens = common.token_lengths(texts, tok)
    g = torch.Generator().manual_seed(common.SEED)
    orders = {"megabatch": list(LengthGroupedSampler(common.BATCH_SIZE, lengths=lens, generator=g)),
              "sorted": list(SortedBucketSampler(lens, common.BATCH_SIZE, torch.Generator().manual_seed(common.SEED)))}
    schemes = {"megabatch": (orders["megabatch"], None), "sorted": (orders["sorted"], None),
               "sorted_pad8": (orders["sorted"], 8)}
    batches = {k: _epoch_batches(texts, labels, tok, o, p) for k, (o, p) in schemes.items()}
    res: dict[str, Any] = {"rows": len(texts), "threads": torch.get_num_threads(), "real_tokens": int(sum(lens))}
    for k, bs in batches.items():
        res[f"{k}_padded_tokens"] = int(sum(b["input_ids"].numel() for b in bs))
        res[f"{k}_real_share"] = res["real_tokens"] / res[f"{k}_padded_tokens"]
    times: dict[str, list[float]] = {k: [] for k in batches}
    for names in (list(batches), list(batches)[::-1]):
        for k in names:
            torch.manual_seed(0)
            step = _train_step_fn(_transfer_model(path).train(), batches[k])
            step(0)  # warm-up
            times[k].append(sum(step(i) for i in range(len(batches[k]))))
    for k in batches:
        res[f"{k}_epoch_s"] = min(times[k])
    res["speedup_sorted"] = res["megabatch_epoch_s"] / res["sorted_epoch_s"]
    res["speedup_sorted_pad8"] = res["megabatch_epoch_s"] / res["sorted_pad8_epoch_s"]
    res["summary"] = (f"epoch of full steps at {res['threads']} threads: sorted {res['sorted_epoch_s']:.1f} s "
                      f"({res['sorted_real_share']:.1%} real tokens) vs megabatch {res['megabatch_epoch_s']:.1f} s "
                      f"({res['megabatch_real_share']:.1%}): {res['speedup_sorted']:.2f}x; sorted + pad to 8: "
                      f"{res['sorted_pad8_epoch_s']:.1f} s ({res['speedup_sorted_pad8']:.2f}x)")
    return res


def lever_eval_batch(quick: bool, work: Path) -> dict[str, Any]:
    """One evaluation as the engine runs it for a full fine-tune (SST-2's 872 dev sentences + the
    512-row train sample, each sorted by length, forward only) at eval batch sizes 32..256: the
    cost ``eval.batch_size`` controls. Batches are tokenised beforehand (the loop's collator cost is
    the same for every size); median of 3 passes."""
    import torch
    from transformers import AutoTokenizer

    path = _model_path(quick, work)
    texts, _ = _texts(quick)
    dev = common.load_sst2(8)[1].texts if common.sst2_available() else texts[:200]
    tok = AutoTokenizer.from_pretrained(path)
    sample = texts[:: max(1, len(texts) // 512)][:512]
    rows = sorted(dev, key=len) + sorted(sample, key=len)
    model = _transfer_model(path).eval()
    res: dict[str, Any] = {"rows": len(rows), "threads": torch.get_num_threads()}
    for bs in (32, 64, 128, 256):
        batches = []
        for part in (sorted(dev, key=lambda t: len(tok(t)["input_ids"])),
                     sorted(sample, key=lambda t: len(tok(t)["input_ids"]))):
            for i in range(0, len(part), bs):
                enc = tok(part[i:i + bs], truncation=True, max_length=common.MAX_LENGTH, padding=True,
                          return_tensors="pt")
                batches.append({k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")})

        def run() -> None:
            with torch.inference_mode():
                for b in batches:
                    model(**b)
        res[f"batch_{bs}_s"] = _timeit(run, 3, warmup=1)
    best = min((32, 64, 128, 256), key=lambda b: res[f"batch_{b}_s"])
    res["best_batch"] = best
    res["summary"] = ("one evaluation (dev 872 + sample 512 rows) at " + ", ".join(
        f"batch {b}: {res[f'batch_{b}_s']:.2f} s" for b in (32, 64, 128, 256)) + f" ({res['threads']} threads)")
    return res


def lever_embedding_grads(quick: bool, work: Path) -> dict[str, Any]:
    """A full fine-tune step with the word-embedding matrix trained (Trainer's full fine-tune) or
    frozen (its gradient is a dense vocab x hidden tensor, half of MiniLM's 22.7M parameters, and
    AdamW updates all of it every step): the time a ``full`` strategy could save. Same batches,
    interleaved rounds, median step."""
    import torch

    path = _model_path(quick, work)
    texts, labels = _texts(quick)
    n = 8 if quick else 24
    batches = _grouped_batches(texts, labels, path, n)
    res: dict[str, Any] = {"batches": n, "threads": torch.get_num_threads()}
    times: dict[str, list[float]] = {"trained": [], "frozen": []}
    for _ in range(2):
        for k in times:
            torch.manual_seed(0)
            model = _transfer_model(path).train()
            emb = model.encoder.embeddings.word_embeddings.weight
            emb.requires_grad_(k == "trained")
            res["embedding_params"] = emb.numel()
            step = _train_step_fn(model, batches, fused=True)  # the engine's optimizer
            step(0)
            times[k].append(statistics.median(step(i) for i in range(n)))
    for k, v in times.items():
        res[f"{k}_ms"] = min(v) * 1e3
    res["speedup"] = res["trained_ms"] / res["frozen_ms"]
    res["summary"] = (f"full step with word embeddings frozen {res['frozen_ms']:.0f} ms vs trained {res['trained_ms']:.0f} ms "
                      f"({res['speedup']:.2f}x; {res['embedding_params'] / 1e6:.1f}M parameters not updated; "
                      f"{res['threads']} threads)")
    return res


def _rounds(variants: dict[str, Callable[[], Callable[[int], float]]], n: int, rounds: int = 2) -> dict[str, float]:
    """Median step time (ms) of each variant over ``n`` steps; variants are rebuilt and interleaved
    every round (the machine's noise hits all alike), the per-variant minimum of the rounds is kept."""
    import torch

    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(rounds):
        for k in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
            torch.manual_seed(0)
            step = variants[k]()
            step(0)
            step(1)
            times[k].append(statistics.median(step(i) for i in range(n)))
    return {k: min(v) * 1e3 for k, v in times.items()}


def lever_attention(quick: bool, work: Path) -> dict[str, Any]:
    """SDPA (transformers' default) vs eager attention: a full fine-tuning step on length-grouped
    batches, and one evaluation's forward passes (dev + train sample, sorted, batch 32)."""
    import torch

    path, batches, n = _step_batches(quick, work)
    texts, _ = _texts(quick)

    def model(impl: str) -> Any:
        m = _transfer_model(path)
        m.encoder.set_attn_implementation(impl)
        return m

    res: dict[str, Any] = {"batches": n, "threads": torch.get_num_threads()}
    step_ms = _rounds({impl: (lambda impl=impl: _train_step_fn(model(impl).train(), batches, fused=True))
                       for impl in ("sdpa", "eager")}, n)
    res.update({f"train_{k}_ms": v for k, v in step_ms.items()})
    rows = sorted(texts[: 200 if quick else 1384], key=len)
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(path)
    ev = [dict(tok(rows[i:i + 32], truncation=True, max_length=common.MAX_LENGTH, padding=True, return_tensors="pt"))
          for i in range(0, len(rows), 32)]
    for impl in ("sdpa", "eager", "sdpa", "eager"):
        m = model(impl).eval()

        def run(m: Any = m) -> None:
            with torch.inference_mode():
                for b in ev:
                    m(**b)
        t = _timeit(run, 2 if quick else 3)
        res[f"eval_{impl}_s"] = min(res.get(f"eval_{impl}_s", t), t)
    res["train_speedup_eager"] = res["train_sdpa_ms"] / res["train_eager_ms"]
    res["eval_speedup_eager"] = res["eval_sdpa_s"] / res["eval_eager_s"]
    res["summary"] = (f"full step sdpa {res['train_sdpa_ms']:.0f} ms vs eager {res['train_eager_ms']:.0f} ms "
                      f"({res['train_speedup_eager']:.2f}x for eager); evaluation of {len(rows)} rows sdpa "
                      f"{res['eval_sdpa_s']:.2f} s vs eager {res['eval_eager_s']:.2f} s "
                      f"({res['eval_speedup_eager']:.2f}x; {res['threads']} threads)")
    return res


def lever_dropout_rng(quick: bool, work: Path) -> dict[str, Any]:
    """torch's dropout (``bernoulli_``) vs a ``torch.rand`` mask in every dropout of the model (the
    attention probabilities included: eager attention, so that they are modules too)."""
    import torch

    class Rand(torch.nn.Module):
        def __init__(self, p: float) -> None:
            super().__init__()
            self.p = p

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not self.training or not self.p:
                return x
            return x * (torch.rand_like(x) >= self.p) * (1.0 / (1.0 - self.p))

    path, batches, n = _step_batches(quick, work)

    def model(rand: bool) -> Any:
        m = _transfer_model(path)
        m.encoder.set_attn_implementation("eager")
        if rand:
            for mod in list(m.modules()):
                for name, child in list(mod.named_children()):
                    if isinstance(child, torch.nn.Dropout):
                        setattr(mod, name, Rand(child.p))
        return m.train()

    ms = _rounds({"bernoulli": lambda: _train_step_fn(model(False), batches, fused=True),
                  "rand": lambda: _train_step_fn(model(True), batches, fused=True)}, n)
    res: dict[str, Any] = {"batches": n, "threads": torch.get_num_threads(),
                           "bernoulli_ms": ms["bernoulli"], "rand_ms": ms["rand"],
                           "speedup": ms["bernoulli"] / ms["rand"]}
    res["summary"] = (f"full step (eager attention) with bernoulli_ dropout {ms['bernoulli']:.0f} ms vs rand mask "
                      f"{ms['rand']:.0f} ms ({res['speedup']:.2f}x; {res['threads']} threads)")
    return res


def lever_host_sync(quick: bool, work: Path) -> dict[str, Any]:
    """A full step reading ``loss.item()`` (a host sync: the engine's running loss) vs none."""
    import torch

    path, batches, n = _step_batches(quick, work)
    ms = _rounds({k: (lambda k=k: _train_step_fn(_transfer_model(path).train(), batches, fused=True,
                                                 sync=k == "item")) for k in ("item", "none")}, n)
    res: dict[str, Any] = {"batches": n, "threads": torch.get_num_threads(), "item_ms": ms["item"],
                           "none_ms": ms["none"], "device": "cpu"}
    res["summary"] = (f"full step with loss.item() {ms['item']:.1f} ms vs without {ms['none']:.1f} ms on CPU "
                      f"(no queue to drain: the difference is noise); not measured on a GPU")
    return res


def lever_step_overhead(quick: bool, work: Path) -> dict[str, Any]:
    """Our engine's own cost per optimizer step: ``train()`` with a 2-layer, 32-wide BERT (its
    forward/backward/AdamW take a few milliseconds) on the 4,000 SST-2 rows, 1 epoch, evaluation
    time excluded, against a bare PyTorch loop (forward, backward, fused AdamW) over batches
    grouped the same way. The difference also holds the DataLoader's collation."""
    import tempfile

    import torch

    from nlp_transfer import Recipe, train

    tiny = work / "tiny_bert"
    if not (tiny / "config.json").is_file():
        common.save_tiny_bert(tiny)
    texts, labels = _texts(quick)
    d = Path(tempfile.mkdtemp(dir=work))
    data = d / "train.csv"
    import csv
    with data.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(zip(texts, labels))
    recipe = Recipe(model={"name": str(tiny), "max_length": common.MAX_LENGTH},
                    data={"name": str(data), "dedup": False}, strategy={"name": "full"},
                    train={"epochs": 1, "batch_size": common.BATCH_SIZE, "min_steps": 0, "lr": 1e-4},
                    eval={"train_sample_size": 0}, output={"dir": str(d / "out"), "report_to": ["none"],
                                                           "progress_bars": False, "verbosity": "error"})
    m = train(recipe).metrics
    steps = int(m["history"][-1]["step"])
    train_s = float(m["timing"]["train_s"])  # the loop minus its evaluations
    batches = _grouped_batches(texts, labels, str(tiny), 10 ** 6)
    step = _train_step_fn(_transfer_model(str(tiny)).train(), batches, fused=True)
    bare_ms = statistics.median(step(i) for i in range(len(batches))) * 1e3
    engine_ms = train_s / steps * 1e3
    res: dict[str, Any] = {"steps": steps, "engine_ms": engine_ms, "bare_ms": bare_ms,
                           "overhead_ms": engine_ms - bare_ms, "threads": torch.get_num_threads()}
    res["summary"] = (f"engine {engine_ms:.2f} ms per step vs a bare loop {bare_ms:.2f} ms on a 2-layer 32-wide "
                      f"model: {engine_ms - bare_ms:.2f} ms of our own per step")
    return res


def lever_bf16(quick: bool, work: Path) -> dict[str, Any]:
    """``torch.autocast("cpu", dtype=torch.bfloat16)`` vs fp32, a full step, and the CPU's ISA
    (bf16 pays only with AVX512-BF16 or AMX)."""
    import torch

    path, batches, n = _step_batches(quick, work, 12)
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").is_file() else []
    isa = sorted({f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")})
    ms = _rounds({k: (lambda k=k: _train_step_fn(_transfer_model(path).train(), batches, fused=True,
                                                 bf16=k == "bf16")) for k in ("fp32", "bf16")}, n)
    res: dict[str, Any] = {"batches": n, "threads": torch.get_num_threads(), "fp32_ms": ms["fp32"],
                           "bf16_ms": ms["bf16"], "speedup": ms["fp32"] / ms["bf16"], "isa": isa,
                           "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    res["summary"] = (f"full step fp32 {ms['fp32']:.0f} ms vs bf16 autocast {ms['bf16']:.0f} ms "
                      f"({res['speedup']:.2f}x; CPU flags {', '.join(isa) or 'none'})")
    return res


def lever_loader_workers(quick: bool, work: Path) -> dict[str, Any]:
    """What DataLoader workers could take off the training process: the collator's time per batch
    (pre-tokenised rows padded by ``DataCollatorWithPadding``, as the engine's loader does) next to
    the full step it feeds."""
    import torch
    from transformers import AutoTokenizer, DataCollatorWithPadding

    path = _model_path(quick, work)
    texts, labels = _texts(quick)
    tok = AutoTokenizer.from_pretrained(path)
    enc = tok(texts, truncation=True, max_length=common.MAX_LENGTH)
    rows = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
             "token_type_ids": enc["token_type_ids"][i], "label": labels[i]} for i in range(len(texts))]
    collate = DataCollatorWithPadding(tok)
    bs = common.BATCH_SIZE
    chunks = [rows[i:i + bs] for i in range(0, len(rows), bs)]
    collate_ms = _timeit(lambda: [collate(c) for c in chunks], 3) / len(chunks) * 1e3
    n = 4 if quick else 12
    step = _train_step_fn(_transfer_model(path).train(), _grouped_batches(texts, labels, path, n), fused=True)
    step(0)
    step_ms = statistics.median(step(i) for i in range(n)) * 1e3
    res: dict[str, Any] = {"collate_ms": collate_ms, "step_ms": step_ms, "share": collate_ms / step_ms,
                           "threads": torch.get_num_threads()}
    res["summary"] = (f"collating a batch {collate_ms:.2f} ms vs a full step {step_ms:.0f} ms ({res['share']:.2%}): "
                      f"workers have nothing to take off the loop (tokenisation is done before, num_proc)")
    return res


def lever_heap_allocations(quick: bool, work: Path) -> dict[str, Any]:
    """Full and LoRA steps with and without ``train.heap_allocations`` (training/host_memory.py):
    median ms and minor page faults per step, rounds alternated (off, on, on, off), the
    per-variant minimum kept."""
    import resource

    import torch

    from nlp_transfer.strategies import get_strategy
    from nlp_transfer.config import StrategyConfig
    from nlp_transfer.training.host_memory import heap_allocations

    path, batches, n = _step_batches(quick, work)
    res: dict[str, Any] = {"batches": n, "threads": torch.get_num_threads()}
    for strategy in ("full", "lora"):
        times: dict[str, list[float]] = {"off": [], "on": []}
        faults: dict[str, list[float]] = {"off": [], "on": []}
        for variant in ("off", "on", "on", "off"):
            with heap_allocations(variant == "on"):
                torch.manual_seed(0)
                model = _transfer_model(path)
                if strategy == "lora":
                    model = get_strategy(StrategyConfig(name="lora")).apply(model)
                step = _train_step_fn(model.train(), batches, fused=True)
                step(0)
                step(1)
                f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                times[variant].append(statistics.median(step(i) for i in range(n)))
                faults[variant].append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / n)
                del model, step
        for v in ("off", "on"):
            res[f"{strategy}_{v}_ms"] = min(times[v]) * 1e3
            res[f"{strategy}_{v}_faults_per_step"] = min(faults[v])
        res[f"{strategy}_speedup"] = res[f"{strategy}_off_ms"] / res[f"{strategy}_on_ms"]
    res["summary"] = "; ".join(
        f"{s} step {res[f'{s}_off_ms']:.0f} ms ({res[f'{s}_off_faults_per_step']:.0f} page faults) vs "
        f"{res[f'{s}_on_ms']:.0f} ms ({res[f'{s}_on_faults_per_step']:.0f}) with heap allocations "
        f"({res[f'{s}_speedup']:.2f}x)" for s in ("full", "lora")) + f" ({res['threads']} threads)"
    return res


def lever_seen_rows(quick: bool, work: Path) -> dict[str, Any]:
    """``train.skip_unseen_embeddings`` (model/embedding_rows.py): a full step training every
    word-embedding row, only the rows of the tokens in the training sample (the same update under
    weight decay 0), or none (frozen, which changes what trains: the bound). Same batches,
    interleaved rounds, median step."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from nlp_transfer.model.embedding_rows import SeenRowsEmbedding, token_ids_in

    path, batches, n = _step_batches(quick, work)
    texts, _ = _texts(quick)
    tok = AutoTokenizer.from_pretrained(path)
    ids = tok(texts, truncation=True, max_length=common.MAX_LENGTH)["input_ids"]
    res: dict[str, Any] = {"batches": n, "threads": torch.get_num_threads(), "train_texts": len(texts)}

    def variant(kind: str) -> Callable[[], Callable[[int], float]]:
        def build() -> Callable[[int], float]:
            model = _transfer_model(path).train()
            emb = model.encoder.get_input_embeddings()
            res["vocab"] = emb.num_embeddings
            if kind == "seen":
                seen = token_ids_in((np.asarray(x) for x in ids), emb.num_embeddings)
                model.encoder.set_input_embeddings(SeenRowsEmbedding(emb, seen))
                res["seen_rows"] = len(model.encoder.get_input_embeddings().seen)
            elif kind == "frozen":
                emb.weight.requires_grad_(False)
            return _train_step_fn(model, batches, fused=True)
        return build

    ms = _rounds({k: variant(k) for k in ("all", "seen", "frozen")}, n)
    res.update({f"{k}_ms": v for k, v in ms.items()})
    res["speedup"] = ms["all"] / ms["seen"]
    res["frozen_speedup"] = ms["all"] / ms["frozen"]
    res["summary"] = (f"full step training all {res['vocab']:,} word-embedding rows {ms['all']:.0f} ms vs the "
                      f"{res['seen_rows']:,} rows of the {len(texts):,} training texts {ms['seen']:.0f} ms "
                      f"({res['speedup']:.2f}x; none, frozen: {ms['frozen']:.0f} ms, {res['frozen_speedup']:.2f}x; "
                      f"{res['threads']} threads)")
    return res


def lever_eval_cadence(quick: bool, work: Path) -> dict[str, Any]:
    """The evaluation cadence of a long run of short epochs (issue 16). 100 SST-2 rows under the
    step budget ``train.min_steps=200`` (``full``, batch 32: 4 steps an epoch, so 50 epochs): the
    engine evaluates every ceil(50 / 3) epochs, as often as the strategy's 3 default epochs would.
    The alternative, ``train.epochs=50`` (the same 200 steps and LR schedule), evaluates after every
    epoch: 50 passes over the 872 dev sentences and the train sample. ``eval.select_best=false``
    keeps the last weights in both: the same steps and schedule, only the evaluations differ, and
    (since evaluations run under ``torch.random.fork_rng``) the same weights and held-out accuracy."""
    import tempfile

    import torch

    from benchmarks.run import _quiet, recipe_dict, write_jsonl
    from nlp_transfer import Recipe, train

    _quiet()
    path = _model_path(quick, work)
    texts, labels = _texts(quick)
    n = 24 if quick else 100
    dev = common.load_sst2(8)[1] if common.sst2_available() else common.Split(texts[-64:], labels[-64:], "dev")
    if quick:
        dev = dev.head(64)
    d = Path(tempfile.mkdtemp(dir=work))
    write_jsonl(common.Split(texts[:n], labels[:n], "train"), d / "data" / "train.jsonl")
    write_jsonl(dev, d / "data" / "dev.jsonl")
    steps = 24 if quick else 200
    res: dict[str, Any] = {"train_rows": n, "dev_rows": len(dev.texts), "min_steps": steps,
                           "threads": torch.get_num_threads()}
    per_epoch = -(-n // common.BATCH_SIZE)  # ceil: the last, short batch is a step too
    for name, epochs, min_steps in (("budget", None, steps), ("every_epoch", -(-steps // per_epoch), 0)):
        rd = recipe_dict("full", str(d / "data"), path, str(d / name), epochs=3)
        rd["train"].update(epochs=epochs, min_steps=min_steps)
        rd["eval"] = {"select_best": False}
        t0 = time.perf_counter()
        m = train(Recipe(**rd)).metrics
        res[name] = {"wall_s": round(time.perf_counter() - t0, 2), "eval_s": m["timing"]["eval_s"],
                     "train_s": m["timing"]["train_s"], "evaluations": len(m["history"]),
                     "steps": m["history"][-1]["step"], "accuracy": m["held_out"]["accuracy"]}
    b, e = res["budget"], res["every_epoch"]
    res["speedup"] = e["wall_s"] / b["wall_s"]
    res["summary"] = (f"{n} rows, {b['steps']} steps: {b['evaluations']} evaluations {b['wall_s']:.1f} s "
                      f"(eval {b['eval_s']:.1f} s) vs one per epoch, {e['evaluations']}: {e['wall_s']:.1f} s "
                      f"(eval {e['eval_s']:.1f} s), {res['speedup']:.2f}x; held-out accuracy "
                      f"{b['accuracy']:.4f} vs {e['accuracy']:.4f} ({res['threads']} threads)")
    return res


def run_all(job: dict[str, Any]) -> dict[str, Any]:
    """Run the selected levers (``job["only"]``, default all) and summarise each in one line."""
    import shutil
    import tempfile

    quick = bool(job.get("quick"))
    only = job.get("only") or list(LEVERS)
    work = Path(tempfile.mkdtemp(prefix="nlpt_levers_"))
    out: dict[str, Any] = {"quick": quick, "summary": {}}
    try:
        for name in only:
            t0 = time.perf_counter()
            r = globals()[f"lever_{name}"](quick, work)
            r["measure_s"] = time.perf_counter() - t0
            r["loadavg_1m"] = r.get("loadavg_1m", round(os.getloadavg()[0], 2))
            out[name] = r
            out["summary"][name] = r["summary"]
            print(f"  {name}: {r['summary']}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Measure the performance levers of issues 7 and 16.")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default=",".join(LEVERS))
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    bad = [x for x in only if x not in LEVERS]
    if bad:
        ap.error(f"unknown lever(s) {bad}: choose from {', '.join(LEVERS)}")
    import transformers

    transformers.logging.set_verbosity_error()
    res = run_all({"quick": args.quick, "only": only})
    if args.json:
        common.write_json(args.json, {"levers": res})
    print(json.dumps(res["summary"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
