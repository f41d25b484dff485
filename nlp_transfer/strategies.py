"""Transfer strategies: which parameters train, their LR groups, and what ``save`` writes.

Each strategy is a small object behind one interface, registered in ``STRATEGIES``
(like PEFT's tuner registry). Trainability is set in exactly one place,
:meth:`Strategy.apply`, and printed by the recipe.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .config import StrategyConfig
from .errors import ModelError
from .models import TransferModel


def _is_unused_pooler(name: str) -> bool:
    return name.startswith("encoder.pooler.")


def _is_head(name: str) -> bool:
    return name.startswith("head.") or ".head." in name


def find_layers(encoder: nn.Module) -> tuple[str, nn.ModuleList]:
    """The encoder's stack of transformer blocks: its largest ``nn.ModuleList``.

    Works across architectures (BERT ``encoder.layer``, DistilBERT ``transformer.layer``,
    RoBERTa, DeBERTa ...) without a per-architecture table."""
    best: tuple[str, nn.ModuleList] | None = None
    for name, mod in encoder.named_modules():
        if isinstance(mod, nn.ModuleList) and (best is None or len(mod) > len(best[1])):
            best = (name, mod)
    if best is None:
        raise ModelError("encoder layers", expected="a stack of transformer layers (nn.ModuleList)",
                         found="none", fix="use strategy=full or strategy=frozen with this model")
    return best


def decay_groups(named: list[tuple[str, nn.Parameter]], lr: float, weight_decay: float,
                 tag: str) -> list[dict[str, Any]]:
    """AdamW groups: matrices decay; biases and norm weights (1-D) do not."""
    decay = [p for n, p in named if p.ndim >= 2]
    no_decay = [p for n, p in named if p.ndim < 2]
    groups = []
    if decay:
        groups.append({"params": decay, "lr": lr, "weight_decay": weight_decay, "name": f"{tag}/decay"})
    if no_decay:
        groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": f"{tag}/no_decay"})
    return groups


class Strategy:
    """Interface. Subclasses set trainability in :meth:`apply` and write weights in :meth:`save`."""
    name = "base"
    #: Train the head on encoder features computed once per split.
    uses_feature_cache = False

    def __init__(self, cfg: StrategyConfig) -> None:
        self.cfg = cfg

    def apply(self, model: TransferModel) -> nn.Module:
        """Set ``requires_grad`` (and wrap, for adapters). Returns the module to train."""
        raise NotImplementedError

    def param_groups(self, model: nn.Module, lr: float, head_lr: float, weight_decay: float) -> list[dict[str, Any]]:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        head = [(n, p) for n, p in named if _is_head(n)]
        body = [(n, p) for n, p in named if not _is_head(n)]
        return decay_groups(body, lr, weight_decay, "encoder") + decay_groups(head, head_lr, weight_decay, "head")

    def base(self, model: nn.Module) -> TransferModel:
        """The underlying TransferModel (unwrapped from PEFT when needed)."""
        return model  # type: ignore[return-value]

    def save(self, model: nn.Module, out_dir: Path) -> dict[str, Any]:
        """Write weights into ``out_dir``; return metadata recorded in nlp_transfer.json."""
        raise NotImplementedError

    @staticmethod
    def load_head(model: TransferModel, out_dir: Path) -> None:
        model.head.load_state_dict(load_file(str(out_dir / "head.safetensors")))


class FullStrategy(Strategy):
    """Every weight trains."""
    name = "full"

    def apply(self, model: TransferModel) -> nn.Module:
        for name, p in model.named_parameters():
            # The encoder's own pooler (BERT's dense+tanh on CLS) is never part of our loss
            # (we pool last_hidden_state ourselves): training it would only make DDP fail
            # with "parameters that were not used in producing loss".
            p.requires_grad = not _is_unused_pooler(name)
        return model

    def save(self, model: nn.Module, out_dir: Path) -> dict[str, Any]:
        m = self.base(model)
        m.encoder.save_pretrained(out_dir, safe_serialization=True)
        save_file({k: v.contiguous() for k, v in m.head.state_dict().items()}, str(out_dir / "head.safetensors"))
        return {"weights": {"encoder": "model.safetensors", "head": "head.safetensors"}}


class PartialStrategy(FullStrategy):
    """Encoder frozen except its top-k layers (default 2); head trains."""
    name = "partial"

    def apply(self, model: TransferModel) -> nn.Module:
        k = self.cfg.unfreeze_top_k if self.cfg.unfreeze_top_k is not None else 2
        for p in model.parameters():
            p.requires_grad = False
        _, layers = find_layers(model.encoder)
        if k > len(layers):
            raise ModelError("strategy.unfreeze_top_k", expected=f"at most {len(layers)} (the model's layers)",
                             found=str(k), fix=f"pass strategy.unfreeze_top_k<={len(layers)} or strategy=full")
        for layer in list(layers)[len(layers) - k:]:
            for p in layer.parameters():
                p.requires_grad = True
        for p in model.head.parameters():
            p.requires_grad = True
        self.k = k
        return model


class FrozenStrategy(Strategy):
    """Feature extraction: encoder frozen and in eval mode, head trained on cached features."""
    name = "frozen"
    uses_feature_cache = True

    def apply(self, model: TransferModel) -> nn.Module:
        for p in model.encoder.parameters():
            p.requires_grad = False
        for p in model.head.parameters():
            p.requires_grad = True
        model.encoder.eval()
        return model

    def save(self, model: nn.Module, out_dir: Path) -> dict[str, Any]:
        m = self.base(model)
        m.encoder.config.save_pretrained(out_dir)
        save_file({k: v.contiguous() for k, v in m.head.state_dict().items()}, str(out_dir / "head.safetensors"))
        return {"weights": {"head": "head.safetensors"}}


class LoraStrategy(Strategy):
    """PEFT LoRA adapters (attention projections by default) + trained head.

    The head is named explicitly in ``modules_to_save`` so PEFT saves it (instead of
    guessing head names). With ``unfreeze_top_k=k`` (the hybrid) the top k layers train
    fully (also via ``modules_to_save``) and LoRA goes on the layers below them."""
    name = "lora"

    def target_modules(self, model: TransferModel) -> list[str]:
        if self.cfg.target_modules:
            return list(self.cfg.target_modules)
        from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as MAP
        mt = getattr(model.encoder.config, "model_type", None)
        if mt in MAP:
            return list(MAP[mt])
        # Fallback: the usual attention projection names.
        names = {n.split(".")[-1] for n, m in model.encoder.named_modules() if isinstance(m, nn.Linear)}
        guess = [t for t in ("query", "value", "q_proj", "v_proj", "q_lin", "v_lin", "query_proj", "value_proj") if t in names]
        if not guess:
            raise ModelError("LoRA target modules", expected="attention projections", found=f"linear layers {sorted(names)}",
                             fix="pass strategy.target_modules=[...] with names from that list")
        return guess

    def apply(self, model: TransferModel) -> nn.Module:
        from peft import LoraConfig, get_peft_model

        targets = self.target_modules(model)
        linear_names = sorted({n.split(".")[-1] for n, m in model.encoder.named_modules() if isinstance(m, nn.Linear)})
        missing = [t for t in targets if t not in linear_names]
        if missing:
            raise ModelError("LoRA target modules", expected=f"names of linear layers in the model: {linear_names}",
                             found=f"{missing} not in the model",
                             fix=f"pass strategy.target_modules=[...] from {linear_names}")
        layers_name, layers = find_layers(model.encoder)
        k = self.cfg.unfreeze_top_k or 0
        if k > len(layers):
            raise ModelError("strategy.unfreeze_top_k", expected=f"at most {len(layers)}", found=str(k),
                             fix=f"pass strategy.unfreeze_top_k<={len(layers)}")
        modules_to_save = ["head"]
        layers_to_transform = None
        layers_pattern = None
        if k:
            n = len(layers)
            layers_to_transform = list(range(n - k)) or None
            layers_pattern = layers_name.split(".")[-1]
            modules_to_save += [f"encoder.{layers_name}.{i}" for i in range(n - k, n)]
        lcfg = LoraConfig(r=self.cfg.lora_r, lora_alpha=self.cfg.lora_alpha, lora_dropout=self.cfg.lora_dropout,
                          target_modules=targets, modules_to_save=modules_to_save,
                          layers_to_transform=layers_to_transform,
                          layers_pattern=layers_pattern if layers_to_transform else None, bias="none")
        if k and layers_to_transform is None:
            # Every layer fully unfrozen: no LoRA layers left, plain partial fine-tuning.
            lcfg.target_modules = []
        try:
            peft_model = get_peft_model(model, lcfg)
        except ValueError as e:
            raise ModelError("LoRA target modules", expected=f"names of linear layers in the model: {linear_names}",
                             found=str(e).splitlines()[0][:200], fix="pass strategy.target_modules=[...]") from None
        self.targets = targets
        return peft_model

    def base(self, model: nn.Module) -> TransferModel:
        return model.get_base_model() if hasattr(model, "get_base_model") else model  # type: ignore[return-value]

    def save(self, model: nn.Module, out_dir: Path) -> dict[str, Any]:
        model.save_pretrained(out_dir, safe_serialization=True)
        self.base(model).encoder.config.save_pretrained(out_dir)
        return {"weights": {"adapter": "adapter_model.safetensors"},
                "lora": {"r": self.cfg.lora_r, "alpha": self.cfg.lora_alpha,
                         "target_modules": self.targets, "unfreeze_top_k": self.cfg.unfreeze_top_k or 0}}


#: The strategy registry. ``auto`` is resolved to one of these before training.
STRATEGIES: dict[str, type[Strategy]] = {
    "full": FullStrategy,
    "frozen": FrozenStrategy,
    "lora": LoraStrategy,
    "partial": PartialStrategy,
}


def get_strategy(cfg: StrategyConfig) -> Strategy:
    if cfg.name not in STRATEGIES:
        from .errors import ConfigError
        raise ConfigError("strategy", expected=f"one of {sorted(STRATEGIES)}", found=repr(cfg.name),
                          fix="pass strategy=frozen|full|lora|partial")
    return STRATEGIES[cfg.name](cfg)


def snapshot_trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    """CPU copy of the trainable weights (the best epoch's, restored before saving)."""
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def restore_trainable(model: nn.Module, snap: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, v in snap.items():
            params[n].copy_(v.to(params[n].device))


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")
