"""The pieces of the training loop shared by the single-task recipe and multi-task training.

Kept here so that both loops build the same optimizer (fused AdamW, the strategy's LR groups),
the same warm-up schedule and take the same optimizer step (accumulation, clipping,
non-finite-loss check): a fix or a speed-up lands in both at once.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

#: train.lr_scheduler -> transformers.get_scheduler name.
_SCHEDULERS = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


def build_optimizer(groups: list[dict[str, Any]], head_lr: float, device: torch.device, batches_per_epoch: int,
                    train_cfg: Any, epochs: int) -> tuple[torch.optim.Optimizer, Any, int]:
    """AdamW over the strategy's parameter groups and its warm-up + decay schedule.

    Returns ``(optimizer, scheduler, total_steps)``; ``total_steps`` counts optimizer steps
    (after gradient accumulation), capped by ``train.max_steps``.
    """
    from transformers import get_scheduler

    # Fused AdamW (one kernel over all parameters) on CUDA and, since torch 2.4, on CPU: 6-8x
    # faster optimizer steps than the foreach default on MiniLM's 22.7M parameters, same update
    # to 1e-7 (benchmarks/levers.py fused_adamw). transformers.Trainer defaults to it as well.
    fused = device.type in ("cuda", "cpu")
    optimizer = torch.optim.AdamW(groups, lr=head_lr, fused=fused or None)
    total_steps = math.ceil(batches_per_epoch / train_cfg.gradient_accumulation_steps) * epochs
    if train_cfg.max_steps:
        total_steps = min(total_steps, train_cfg.max_steps)
    scheduler = get_scheduler(_SCHEDULERS[train_cfg.lr_scheduler], optimizer,
                              num_warmup_steps=int(train_cfg.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    return optimizer, scheduler, total_steps


def compiled_step_model(trained: Any, enabled: bool, uses_feature_cache: bool, log: Callable[[str], None]) -> Any:
    """``train.compile``: the module the training step calls (compiled, or ``trained`` itself).

    Only the training step goes through the compiled module. Evaluation, best-weight snapshots,
    checkpoints and the saved model keep using ``trained`` (the same parameters), so no
    ``_orig_mod.`` key ever reaches a file.
    """
    if not enabled:
        return trained
    if uses_feature_cache:
        log("[nlp_transfer] train.compile ignored: frozen trains a head on cached features")
        return trained
    return torch.compile(trained, dynamic=True)


def clip_parameters(accelerator: Any, trained: Any) -> list[torch.nn.Parameter]:
    """The parameters whose gradient norm is clipped, listed once before the loop.

    Walking ``model.parameters()`` on every step costs a module-tree traversal per step (1 ms
    a step on a frozen MiniLM, where the head step itself takes less); only trainable ones have
    gradients. FSDP is the exception: accelerate recognises the wrapped model by the identity of
    its full parameter list and must clip through FSDP's sharded ``clip_grad_norm_``.
    """
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        return list(trained.parameters())
    return [p for p in trained.parameters() if p.requires_grad]


def training_step(accelerator: Any, trained: Any, step_model: Any, batch: dict[str, Any], optimizer: Any,
                  scheduler: Any, max_grad_norm: float | None, on_nonfinite: Callable[[torch.Tensor], Exception],
                  loss_weight: float = 1.0, clip_params: list[torch.nn.Parameter] | None = None) -> dict[str, Any]:
    """Forward, backward and (when gradients sync) clip + optimizer + scheduler step.

    ``on_nonfinite(loss)`` builds the error raised for a NaN/inf loss (each loop names its own
    step and the way back). ``clip_params``: from :func:`clip_parameters` (default: all of
    ``trained``'s parameters, walked now). Returns the model output (``out["loss"]`` unweighted;
    ``out["grad_norm"]``, the norm before clipping, when gradients were clipped).
    """
    with accelerator.accumulate(trained):
        out = step_model(**batch)
        loss = out["loss"] * loss_weight if loss_weight != 1.0 else out["loss"]
        if not torch.isfinite(loss):
            raise on_nonfinite(loss)
        accelerator.backward(loss)
        if accelerator.sync_gradients and max_grad_norm:
            # The norm before clipping, kept as a tensor (read only when a step is logged: no sync here).
            out["grad_norm"] = accelerator.clip_grad_norm_(
                clip_params if clip_params is not None else trained.parameters(), max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return out
