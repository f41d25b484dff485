"""FLOP accounting for model FLOP utilisation (MFU) of BERT-style encoders.

MFU = useful FLOP/s / peak FLOP/s, where

* **peak** is measured in the same run by :func:`matmul_peak_flops` (dense ``torch.matmul``,
  fp32 on CPU, bf16 on GPU), because a shared machine's real ceiling varies from run to run;
* **useful** FLOPs are counted from the model's shapes by :func:`encoder_train_flops` over the
  *real* (non-padding) tokens only, so padding, recomputation and framework overhead all show up
  as lost utilisation.

What is counted (the usual MFU convention, as in Kaplan et al. and PaLM's MFU):

* matrix multiplications only, at 2 FLOPs per multiply-add: per layer the Q, K, V and output
  projections (``8 h^2`` per token), the FFN (``4 h i`` per token), and attention scores plus the
  attention-weighted sum (``4 h L^2`` per sequence of length ``L``: this term depends on each
  sequence's own length, so it takes the list of lengths, not only their sum);
* the pooler (``2 h^2`` per sequence, optional: BERT's CLS pooler) and the classifier
  (``2 h C`` per sequence);
* **not** counted: embeddings (a gather, no matmul; their gradient is a scatter-add), biases,
  LayerNorm, softmax, GELU, dropout, the loss, the optimiser step. These are < 2% of the total
  for BERT-sized models at these lengths.

Backward pass, per matrix product ``Y = X W``: the data gradient ``dX`` (same cost as the forward)
is counted when ``X`` requires grad, the weight gradient ``dW`` (same cost) when ``W`` trains. For
the activation-activation products (scores ``Q K^T`` and ``P V``) each operand's gradient costs as
much as the forward and is counted when that operand requires grad. ``requires_grad`` is
propagated through the layer exactly as autograd does, so:

* ``full``: every weight trains, backward = 2x forward, training = 3x forward (the "6N" rule);
* ``frozen`` (the encoder's parameters frozen, only a head trains, *without* a feature cache):
  the encoder costs one forward and no backward (nothing below the head requires grad);
* ``lora``: base weights frozen, LoRA ``A`` (h x r) and ``B`` (r x h) on the chosen projections;
  data gradients flow through every layer above the first adapted projection, weight gradients
  only for the adapters and the head: about 2x forward;
* ``partial``: the top-k layers train fully; the layers below cost one forward only.

The tests check these counts against ``torch.utils.flop_counter.FlopCounterMode`` on a tiny BERT
with eager attention (exact match for unpadded sequences).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence


# --------------------------------------------------------------------------- peak


def matmul_peak_flops(dtype: Any = None, size: int = 2048, repeats: int = 5,
                      device: Any = None, warmup: int = 2, inner: int | None = None) -> dict[str, Any]:
    """Measure the dense matmul FLOP/s that torch reaches here, now.

    ``dtype`` defaults to fp32 on CPU and bf16 on CUDA. Each repeat times ``inner`` back-to-back
    ``size x size @ size x size`` products (default: 1 on CPU, 20 on GPU) and counts ``2 size^3``
    FLOPs each. Returns ``{"peak_flops": best, "median_flops": median, "dtype", "device", "size",
    "repeats", "threads"}``; ``peak_flops`` (the best repeat) is the MFU denominator, which is the
    conservative choice (a higher ceiling gives a lower MFU).
    """
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if inner is None:
        inner = 20 if device.type == "cuda" else 1
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.no_grad():
        for _ in range(warmup):
            torch.matmul(a, b, out=out)
        sync()
        rates: list[float] = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(inner):
                torch.matmul(a, b, out=out)
            sync()
            dt = time.perf_counter() - t0
            rates.append(2.0 * size ** 3 * inner / dt)
    return {"peak_flops": max(rates), "median_flops": statistics.median(rates),
            "dtype": str(dtype).replace("torch.", ""), "device": str(device), "size": size,
            "repeats": repeats, "inner": inner, "threads": torch.get_num_threads(),
            "all_flops": rates}


# --------------------------------------------------------------------------- counting


@dataclass
class FlopCount:
    """Matmul FLOPs of one pass, split by phase and by part of the model."""

    forward: float = 0.0
    backward_data: float = 0.0
    backward_weight: float = 0.0
    parts: dict[str, float] = field(default_factory=dict)
    real_tokens: int = 0
    sequences: int = 0

    @property
    def backward(self) -> float:
        return self.backward_data + self.backward_weight

    @property
    def total(self) -> float:
        return self.forward + self.backward

    def add(self, part: str, fwd: float = 0.0, bwd_data: float = 0.0, bwd_weight: float = 0.0) -> None:
        self.forward += fwd
        self.backward_data += bwd_data
        self.backward_weight += bwd_weight
        self.parts[part] = self.parts.get(part, 0.0) + fwd + bwd_data + bwd_weight

    def __add__(self, other: "FlopCount") -> "FlopCount":
        out = FlopCount(self.forward + other.forward, self.backward_data + other.backward_data,
                        self.backward_weight + other.backward_weight, dict(self.parts),
                        self.real_tokens + other.real_tokens, self.sequences + other.sequences)
        for k, v in other.parts.items():
            out.parts[k] = out.parts.get(k, 0.0) + v
        return out

    def scaled(self, factor: float) -> "FlopCount":
        """This count times ``factor`` (e.g. the number of epochs)."""
        return FlopCount(self.forward * factor, self.backward_data * factor, self.backward_weight * factor,
                         {k: v * factor for k, v in self.parts.items()},
                         int(self.real_tokens * factor), int(self.sequences * factor))

    def as_dict(self) -> dict[str, Any]:
        return {"total": self.total, "forward": self.forward, "backward_data": self.backward_data,
                "backward_weight": self.backward_weight, "parts": dict(self.parts),
                "real_tokens": self.real_tokens, "sequences": self.sequences}


_LORA_ALLOWED = ("query", "key", "value")


def _cfg(config: Any, name: str, default: Any = None) -> Any:
    if isinstance(config, dict):
        return config.get(name, default)
    return getattr(config, name, default)


def strategy_trainables(strategy: str, num_layers: int, top_k: int = 2) -> dict[str, Any]:
    """Which parts train under a named strategy (the peers' and our benchmark's definitions).

    ``full``: everything (embeddings, all layers, pooler, classifier). ``frozen``: classifier only.
    ``lora``: LoRA on query/value + classifier. ``partial``: the top ``top_k`` layers + classifier.
    The pooler trains only under ``full``: the peers freeze ``model.base_model``, which holds it.
    """
    if strategy == "full":
        return {"embeddings": True, "layers": set(range(num_layers)), "pooler": True, "lora_targets": ()}
    if strategy == "frozen":
        return {"embeddings": False, "layers": set(), "pooler": False, "lora_targets": ()}
    if strategy == "lora":
        return {"embeddings": False, "layers": set(), "pooler": False, "lora_targets": ("query", "value")}
    if strategy == "partial":
        k = max(0, min(top_k, num_layers))
        return {"embeddings": False, "layers": set(range(num_layers - k, num_layers)), "pooler": False,
                "lora_targets": ()}
    raise ValueError(f"unknown strategy {strategy!r}: expected one of full, frozen, lora, partial")


def encoder_train_flops(config: Any, real_tokens: int | None, seq_lens: Sequence[int], *,
                        strategy: str = "full", num_labels: int | None = None, pooler: bool = True,
                        top_k: int = 2, lora_r: int = 8, lora_targets: Sequence[str] | None = None,
                        trainable_layers: Iterable[int] | None = None,
                        embeddings_trainable: bool | None = None, pooler_trainable: bool | None = None,
                        backward: bool = True) -> FlopCount:
    """Forward+backward matmul FLOPs of one training pass over sequences of real lengths ``seq_lens``.

    ``config`` is a ``PretrainedConfig`` (or dict) with ``hidden_size``, ``num_hidden_layers``,
    ``intermediate_size`` and ``num_labels``. ``seq_lens`` holds the real (non-padding) length of
    every sequence processed, special tokens included; ``real_tokens`` must equal their sum (pass
    ``None`` to take it from them). For several epochs pass every epoch's lengths, or multiply with
    :meth:`FlopCount.scaled`.

    ``strategy`` picks the trainable parts (see :func:`strategy_trainables`); ``trainable_layers``,
    ``embeddings_trainable``, ``pooler_trainable`` and ``lora_targets`` override it. ``pooler``
    says whether the model has BERT's CLS pooler (``BertForSequenceClassification`` has; a
    mean-pooling head has not). ``backward=False`` counts the forward only (inference).
    """
    lens = [int(x) for x in seq_lens]
    if any(x < 0 for x in lens):
        raise ValueError("sequence lengths must be >= 0")
    tokens = sum(lens)
    if real_tokens is not None and int(real_tokens) != tokens:
        raise ValueError(f"real_tokens={real_tokens} but sum(seq_lens)={tokens}: pass the length of "
                         "every sequence counted in real_tokens (or real_tokens=None)")
    h = int(_cfg(config, "hidden_size"))
    n_layers = int(_cfg(config, "num_hidden_layers"))
    inter = int(_cfg(config, "intermediate_size", 4 * h))
    c = int(num_labels if num_labels is not None else _cfg(config, "num_labels", 2) or 2)

    plan = strategy_trainables(strategy, n_layers, top_k)
    layers = set(trainable_layers) if trainable_layers is not None else plan["layers"]
    emb_tr = plan["embeddings"] if embeddings_trainable is None else embeddings_trainable
    pool_tr = plan["pooler"] if pooler_trainable is None else pooler_trainable
    targets = tuple(plan["lora_targets"] if lora_targets is None else lora_targets)
    bad = [t for t in targets if t not in _LORA_ALLOWED]
    if bad:
        raise ValueError(f"LoRA targets {bad} not supported by the counter: use a subset of {_LORA_ALLOWED}")

    T = float(tokens)
    sq = float(sum(x * x for x in lens))
    n_seq = len(lens)
    fc = FlopCount(real_tokens=tokens, sequences=n_seq)
    bw = 1.0 if backward else 0.0

    rg = bool(emb_tr) and backward  # does the layer input require grad?
    for layer in range(n_layers):
        tr = layer in layers and backward
        x_rg = rg
        # Q, K, V projections (+ LoRA adapters on the chosen ones)
        out_rg: dict[str, bool] = {}
        for name in ("query", "key", "value"):
            f = 2.0 * T * h * h
            fc.add("qkv", f, f * bw * x_rg, f * tr)
            lora = name in targets and backward
            if name in targets:
                fa = 2.0 * T * h * lora_r  # x @ A  (h -> r)
                fb = 2.0 * T * lora_r * h  # a @ B  (r -> h)
                # dB always, dA always (adapters train), d(a) through B always, dx through A if x_rg
                fc.add("lora", fa + fb, (fb + fa * x_rg) * bw, (fa + fb) * bw)
            out_rg[name] = x_rg or tr or lora
        s_rg = out_rg["query"] or out_rg["key"]
        f_att = 2.0 * h * sq
        fc.add("attention", f_att, f_att * bw * (out_rg["query"] + out_rg["key"]), 0.0)
        ctx_rg = s_rg or out_rg["value"]
        fc.add("attention", f_att, f_att * bw * (s_rg + out_rg["value"]), 0.0)
        # output projection, residual + LayerNorm
        f = 2.0 * T * h * h
        fc.add("attn_out", f, f * bw * ctx_rg, f * tr)
        h1_rg = ctx_rg or tr or x_rg
        # FFN
        f = 2.0 * T * h * inter
        fc.add("ffn", f, f * bw * h1_rg, f * tr)
        f1_rg = h1_rg or tr
        fc.add("ffn", f, f * bw * f1_rg, f * tr)
        rg = f1_rg or h1_rg or tr

    head_in_rg = rg
    if pooler:
        f = 2.0 * n_seq * h * h
        p_tr = bool(pool_tr) and backward
        fc.add("pooler", f, f * bw * head_in_rg, f * p_tr)
        head_in_rg = head_in_rg or p_tr
    f = 2.0 * n_seq * h * c
    fc.add("classifier", f, f * bw * head_in_rg, f * bw)
    return fc


def encoder_forward_flops(config: Any, seq_lens: Sequence[int], *, num_labels: int | None = None,
                          pooler: bool = True) -> FlopCount:
    """Forward-only matmul FLOPs (inference or feature extraction) over real lengths ``seq_lens``."""
    return encoder_train_flops(config, None, seq_lens, strategy="frozen", num_labels=num_labels,
                               pooler=pooler, backward=False)


def approx_train_flops(n_params_nonembedding: int, real_tokens: int) -> float:
    """The "6 N D" rule of thumb (full training, attention-score term ignored), for cross-checks."""
    return 6.0 * n_params_nonembedding * real_tokens


def mfu(flops: float, seconds: float, peak_flops_per_s: float) -> float:
    """Model FLOP utilisation: ``flops / seconds / peak``."""
    if seconds <= 0 or peak_flops_per_s <= 0:
        raise ValueError("seconds and peak must be > 0")
    return flops / seconds / peak_flops_per_s


if __name__ == "__main__":
    import argparse
    import json

    ap = argparse.ArgumentParser(description="Measure this machine's dense matmul peak.")
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=None)
    args = ap.parse_args()
    import torch

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, None: None}[args.dtype]
    res = matmul_peak_flops(dt, size=args.size, repeats=args.repeats)
    res["peak_gflops"] = res["peak_flops"] / 1e9
    res["median_gflops"] = res["median_flops"] / 1e9
    print(json.dumps({k: v for k, v in res.items() if k != "all_flops"}, indent=2))
