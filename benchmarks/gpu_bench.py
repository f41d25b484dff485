"""Full fine-tuning throughput and MFU of a BERT-base-sized encoder in bf16 (the GPU check of issue 7).

Builds ``BertForSequenceClassification`` from a config (hidden 768, 12 layers, 12 heads, FFN 3072:
BERT-base shapes, random init, nothing downloaded), trains it on synthetic token ids with AdamW
(fused where available) under ``torch.autocast(bfloat16)``, and reports

* train samples/s and real tokens/s,
* useful FLOP/s: :func:`benchmarks.flops.encoder_train_flops` on the real (non-padding) tokens,
* MFU against the dense bf16 matmul peak measured in the same process and, on H100/H200,
  against the nominal dense bf16 peak (989 TFLOP/s).

Variants (each run in the same process, after one shared peak measurement):

* ``--lengths fixed``: every sequence has ``--seq-len`` real tokens (no padding; the target's
  definition: "BERT-base at sequence length 128");
* ``--lengths grouped``: lengths drawn uniformly from ``[seq_len/4, seq_len]``, length-grouped
  batches padded to the batch maximum rounded up to a multiple of 8 (dynamic padding);
* ``--compile on|off|both``: ``torch.compile`` of the model.

``--dry-run`` runs the same code path on the CPU with a tiny config and a few steps (for tests).
A ``--time-budget`` (seconds) skips variants that would start after it is spent, so the whole
check stays under 8 minutes.

    python benchmarks/gpu_bench.py [--dry-run] [--compile both] [--lengths both] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import sorted_batches, write_json  # noqa: E402
from benchmarks.flops import encoder_train_flops, matmul_peak_flops  # noqa: E402

#: Nominal dense bf16 tensor-core peak (no sparsity) of H100/H200 SXM, from NVIDIA's datasheet.
NOMINAL_BF16_PEAK = {"H100": 989.4e12, "H200": 989.4e12}

BERT_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                 vocab_size=30522, max_position_embeddings=512)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
            vocab_size=1000, max_position_embeddings=128)


def nominal_peak(device_name: str) -> float | None:
    """Nominal dense bf16 peak of a known GPU, else None."""
    for key, value in NOMINAL_BF16_PEAK.items():
        if key in device_name:
            return value
    return None


def make_batches(lengths_mode: str, n_batches: int, batch_size: int, seq_len: int, vocab: int,
                 device: Any, seed: int = 0) -> list[dict[str, Any]]:
    """Synthetic training batches on ``device``; each carries its real lengths in ``"lens"``."""
    import torch

    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    batches = []
    if lengths_mode == "fixed":
        for _ in range(n_batches):
            ids = torch.randint(5, vocab, (batch_size, seq_len), generator=g)
            labels = torch.randint(0, 2, (batch_size,), generator=g)
            batches.append({"input_ids": ids.to(device), "attention_mask": None, "labels": labels.to(device),
                            "lens": [seq_len] * batch_size})
        return batches
    if lengths_mode != "grouped":
        raise ValueError(f"unknown lengths mode {lengths_mode!r}: expected fixed or grouped")
    lo = max(2, seq_len // 4)
    lengths = [rng.randint(lo, seq_len) for _ in range(n_batches * batch_size)]
    for idx in sorted_batches(lengths, batch_size, seed)[:n_batches]:
        lens = [lengths[i] for i in idx]
        width = min(seq_len, int(math.ceil(max(lens) / 8) * 8))
        ids = torch.zeros(len(idx), width, dtype=torch.long)
        mask = torch.zeros(len(idx), width, dtype=torch.long)
        for r, n in enumerate(lens):
            ids[r, :n] = torch.randint(5, vocab, (n,), generator=g)
            mask[r, :n] = 1
        labels = torch.randint(0, 2, (len(idx),), generator=g)
        batches.append({"input_ids": ids.to(device), "attention_mask": mask.to(device),
                        "labels": labels.to(device), "lens": lens})
    return batches


def run_variant(cfg_kw: dict[str, Any], device: Any, lengths_mode: str, compile_model: bool, batch_size: int,
                seq_len: int, steps: int, warmup: int, peak: float, nominal: float | None,
                seed: int = 0) -> dict[str, Any]:
    """Train ``warmup + steps`` steps and return throughput, FLOP/s and MFU over the timed steps."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(**cfg_kw, num_labels=2, attn_implementation="sdpa")
    model = BertForSequenceClassification(config).to(device)
    model.train()
    try:
        opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01, fused=True)
        fused = True
    except (RuntimeError, TypeError, ValueError):
        opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
        fused = False
    fwd = torch.compile(model) if compile_model else model
    batches = make_batches(lengths_mode, warmup + steps, batch_size, seq_len, config.vocab_size, device, seed)
    dev_type = torch.device(device).type

    def sync() -> None:
        if dev_type == "cuda":
            torch.cuda.synchronize()

    def step(b: dict[str, Any]) -> Any:
        with torch.autocast(device_type=dev_type, dtype=torch.bfloat16):
            out = fwd(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"])
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss.detach()

    # Warm up on the first batches plus one batch of every padded width the timed steps will see,
    # so that neither torch.compile (re)compilation nor allocator growth lands in the timed region.
    warm_batches = list(batches[:warmup])
    seen = {tuple(b["input_ids"].shape) for b in warm_batches}
    for b in batches[warmup:]:
        if tuple(b["input_ids"].shape) not in seen:
            seen.add(tuple(b["input_ids"].shape))
            warm_batches.append(b)
    t_w = time.perf_counter()
    for b in warm_batches:
        step(b)
    sync()
    warmup_s = time.perf_counter() - t_w
    if dev_type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    loss = None
    for b in batches[warmup:]:
        loss = step(b)
    sync()
    dt = time.perf_counter() - t0

    timed = batches[warmup:]
    lens = [n for b in timed for n in b["lens"]]
    padded = sum(b["input_ids"].numel() for b in timed)
    flops = encoder_train_flops(config, None, lens, strategy="full", num_labels=2, pooler=True)
    achieved = flops.total / dt
    res = {
        "lengths": lengths_mode, "compile": compile_model, "fused_adamw": fused,
        "batch_size": batch_size, "seq_len": seq_len, "steps": steps, "warmup_steps": len(warm_batches),
        "warmup_s": warmup_s, "time_s": dt,
        "samples_per_s": len(lens) / dt, "real_tokens_per_s": sum(lens) / dt,
        "real_tokens": sum(lens), "padded_tokens": padded,
        "train_flops": flops.total, "achieved_tflops": achieved / 1e12,
        "mfu_measured_peak": achieved / peak,
        "mfu_nominal_peak": achieved / nominal if nominal else None,
        "final_loss": float(loss) if loss is not None else None,
        "params": sum(p.numel() for p in model.parameters()),
    }
    if dev_type == "cuda":
        res["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    del model, opt, fwd, batches
    if dev_type == "cuda":
        torch.cuda.empty_cache()
    return res


def main(argv: list[str] | None = None) -> int:
    """Run the requested variants and print one line per variant plus a JSON summary."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny config, a few steps (tests)")
    ap.add_argument("--device", default=None, help="default: cuda if available (cpu with --dry-run)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--seq-len", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--lengths", choices=["fixed", "grouped", "both"], default="both")
    ap.add_argument("--compile", choices=["off", "on", "both"], default="off")
    ap.add_argument("--peak-size", type=int, default=None, help="matmul size for the peak measurement")
    ap.add_argument("--time-budget", type=float, default=420.0, help="skip variants starting after this (s)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import torch

    t_start = time.perf_counter()
    if args.dry_run:
        device = args.device or "cpu"
        cfg_kw, bs, sl, steps, warm, psize = TINY, 4, 32, 2, 1, 256
    else:
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        cfg_kw, bs, sl, steps, warm, psize = BERT_BASE, 256, 128, 100, 10, 8192
        if device == "cpu":
            print("warning: no GPU found; running the BERT-base benchmark on the CPU (slow). "
                  "Use --dry-run for a quick check.", file=sys.stderr)
            bs, steps, warm, psize = 8, 3, 1, 2048
    bs = args.batch_size or bs
    sl = args.seq_len or sl
    steps = args.steps or steps
    warm = args.warmup if args.warmup is not None else warm
    psize = args.peak_size or psize
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    dev_name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    peak_info = matmul_peak_flops(torch.bfloat16, size=psize, repeats=5, device=device,
                                  inner=20 if device.startswith("cuda") else 1, warmup=2)
    peak = peak_info["peak_flops"]
    nominal = nominal_peak(dev_name)
    print(f"device: {dev_name}; measured bf16 matmul peak {peak / 1e12:.1f} TFLOP/s "
          f"(size {psize}); nominal {nominal / 1e12:.1f} TFLOP/s" if nominal else
          f"device: {dev_name}; measured bf16 matmul peak {peak / 1e12:.3f} TFLOP/s (size {psize})", flush=True)

    lengths = ["fixed", "grouped"] if args.lengths == "both" else [args.lengths]
    compiles = [False, True] if args.compile == "both" else [args.compile == "on"]
    results: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    summary = {"device": dev_name, "dry_run": args.dry_run, "config": cfg_kw,
               "peak": {k: v for k, v in peak_info.items() if k != "all_flops"}, "nominal_peak": nominal,
               "results": results, "skipped": skipped, "total_s": 0.0}

    def save() -> None:  # after every variant, so a run killed by a timeout still leaves its figures
        summary["total_s"] = time.perf_counter() - t_start
        if args.json:
            write_json(args.json, summary)

    for comp in compiles:
        for lm in lengths:
            if time.perf_counter() - t_start > args.time_budget:
                skipped.append({"lengths": lm, "compile": comp})
                print(f"skipped lengths={lm} compile={comp}: time budget spent", flush=True)
                continue
            r = run_variant(cfg_kw, device, lm, comp, bs, sl, steps, warm, peak, nominal)
            results.append(r)
            nom = f", MFU {r['mfu_nominal_peak']:.1%} of nominal" if r["mfu_nominal_peak"] else ""
            print(f"lengths={lm:7s} compile={str(comp):5s}: {r['samples_per_s']:9.1f} samples/s, "
                  f"{r['achieved_tflops']:8.3f} TFLOP/s useful, MFU {r['mfu_measured_peak']:.1%} of measured peak"
                  f"{nom} (warmup {r['warmup_s']:.1f}s, loss {r['final_loss']:.3f})", flush=True)
            save()
    summary["total_s"] = time.perf_counter() - t_start
    print(json.dumps({"summary": [{k: r[k] for k in ("lengths", "compile", "samples_per_s", "achieved_tflops",
                                                     "mfu_measured_peak", "mfu_nominal_peak")} for r in results],
                      "total_s": round(summary["total_s"], 1)}, indent=1))
    save()
    return 0 if results else 1


if __name__ == "__main__":
    raise SystemExit(main())
