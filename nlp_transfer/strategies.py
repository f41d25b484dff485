"""Transfer strategies: objects that own everything about how pretrained weights transfer.

Each strategy is a :class:`Strategy` subclass registered with :func:`register_strategy` (like
PEFT's ``register_peft_method``) in ``STRATEGIES`` (:mod:`nlp_transfer.registry`). The class
knows, and nothing outside it branches on its name:

- training: which parameters train (:meth:`~Strategy.apply`, the only place trainability is
  set), their LR groups, default hyperparameters (``defaults``), its config checks
  (:meth:`~Strategy.check_config`), whether the head trains on cached features
  (``uses_feature_cache``) and whether the encoder changes (``trains_encoder``: pooling);
- saving and reloading: :meth:`~Strategy.save` writes the output folder;
  :meth:`~Strategy.needs_base_model` and :meth:`~Strategy.load_trained` rebuild it for
  inference (through :func:`nlp_transfer.predict.rebuild.rebuild_model`);
- publishing: the files a Hub push uploads (:meth:`~Strategy.weight_files`,
  :meth:`~Strategy.prepare_push`), its commit message, the model card's words, tags and plain
  loading snippet; preflight facts (``freezes_parameters``, ``saved_weights``).

A new strategy (see tests/test_extensibility.py for a complete BitFit)::

    @register_strategy
    class BitFit(Strategy):
        name = "bias_only"
        def apply(self, model): ...             # requires_grad on biases + head; returns the model
        def save(self, model, out_dir): ...     # writes weights, returns {"weights": {...}}
        @classmethod
        def load_trained(cls, model, out, meta, *, merge=True): ...   # the saved weights back on
        @classmethod
        def weight_files(cls, out): return ["bias.safetensors", "head.safetensors"]
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from nlp_transfer import registry
from nlp_transfer.config import StrategyConfig
from nlp_transfer.errors import ConfigError, ModelError
from nlp_transfer.model import TransferModel
from nlp_transfer.registry import STRATEGIES, strategy_class, unregister_strategy  # noqa: F401  (STRATEGIES: the registry)


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


def encoder_weight_files(out: Path) -> list[str]:
    """The encoder weights ``save_pretrained`` wrote: model.safetensors, or the index + shards."""
    out = Path(out)
    if (out / "model.safetensors").is_file():
        return ["model.safetensors"]
    index = out / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values()))
        except (OSError, ValueError):
            return []
        if shards and all((out / s).is_file() for s in shards):
            return [index.name] + shards
    return []


def save_head(model: nn.Module, out_dir: Path) -> None:
    """``head.safetensors``: the task head's weights (every strategy but LoRA stores them so)."""
    save_file({k: v.contiguous() for k, v in model.head.state_dict().items()}, str(Path(out_dir) / "head.safetensors"))


class Strategy:
    """Interface. Subclasses set trainability in :meth:`apply` and write weights in :meth:`save`;
    the class attributes and classmethods describe the rest (see the module docstring)."""
    name = "base"
    #: Train the head on encoder features computed once per split.
    uses_feature_cache = False
    #: ``train.epochs`` / ``train.lr`` / ``train.head_lr`` / ``eval.patience`` when the recipe leaves them empty.
    defaults: dict[str, float] = {"epochs": 4, "lr": 5e-4, "head_lr": 1e-3, "patience": 2}
    #: Encoder weights change in training (``model.pooling=auto``: CLS when they do, mean when they don't).
    trains_encoder = True
    #: The output folder holds the whole encoder: reloading (and a push) needs no base model.
    stores_encoder = False
    #: Leaves some parameters frozen (preflight: FSDP v1 then needs use_orig_params).
    freezes_parameters = True
    #: Accepts ``strategy.unfreeze_top_k``.
    uses_unfreeze_top_k = False
    #: Trains by itself (False for ``auto``, which the advisor resolves to a concrete strategy first).
    concrete = True
    #: What training saves, in words (preflight messages).
    saved_weights = "the best weights and the model"
    #: Extra Hub tags of the model card.
    card_tags: tuple[str, ...] = ()
    #: Line colour in comparison plots (None: report.py's table, else matplotlib's cycle).
    color: str | None = None

    def __init__(self, cfg: StrategyConfig) -> None:
        self.cfg = cfg

    # ------------------------------------------------------------------ configuration
    @classmethod
    def check_config(cls, cfg: StrategyConfig) -> None:
        """Fail early (one-line ConfigError) on settings this strategy cannot use."""
        if cfg.unfreeze_top_k and not cls.uses_unfreeze_top_k:
            raise ConfigError("strategy.unfreeze_top_k", expected="only with strategy=partial or strategy=lora",
                              found=f"strategy={cfg.name} with unfreeze_top_k={cfg.unfreeze_top_k}",
                              fix="use strategy=partial, or strategy=lora for the hybrid")

    # ------------------------------------------------------------------ training
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
        """Write weights into ``out_dir``; return metadata recorded in nlp_transfer.json (a dict under
        the strategy's own name, e.g. ``{"lora": {...}}``, is shown in the model card)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ reloading
    @classmethod
    def needs_base_model(cls, meta: dict[str, Any]) -> bool:
        """Reloading this output needs the base model's encoder (the folder holds only what trained)."""
        return not cls.stores_encoder

    @classmethod
    def load_trained(cls, model: nn.Module, out: Path, meta: dict[str, Any], *, merge: bool = True) -> nn.Module:
        """Put what :meth:`save` wrote onto ``model`` (rebuilt with the base encoder when
        :meth:`needs_base_model`, else with the folder's). Returns the model to predict with;
        ``merge=False`` keeps adapters separate where that means something."""
        cls.load_head(model, out)
        return model

    @staticmethod
    def load_head(model: nn.Module, out_dir: Path) -> None:
        model.head.load_state_dict(load_file(str(Path(out_dir) / "head.safetensors")))

    @classmethod
    def trained_head(cls, out: Path) -> dict[str, torch.Tensor]:
        """The trained head tensors saved in ``out`` (a merged export is checked against them)."""
        return load_file(str(Path(out) / "head.safetensors"))

    # ------------------------------------------------------------------ publishing
    @classmethod
    def weight_files(cls, out: Path) -> list[str]:
        """Files of ``out`` holding what trained: a push checks they exist and uploads them."""
        return ["head.safetensors"]

    @classmethod
    def prepare_push(cls, stage: Path, meta: dict[str, Any], base_ref: dict[str, Any]) -> None:
        """Adjust the staged copies of :meth:`weight_files` before upload (e.g. the base reference)."""

    @classmethod
    def push_description(cls, merged: bool) -> str:
        """What a push uploads, for the commit message ("Upload <this> trained with nlp_transfer")."""
        return f"{cls.name} model merged into the encoder" if merged else f"{cls.name} model"

    @classmethod
    def describe(cls, details: dict[str, Any], merged: bool = False) -> str:
        """The model card's "Training strategy" paragraph (``details``: the strategy's metadata and
        settings from the recipe)."""
        return f"Strategy **{cls.name}**."

    @classmethod
    def card_loading(cls, info: Any, ref: str, base: str, revision: str) -> tuple[str, list[str]] | None:
        """(intro, Python lines) loading ``folder``, ``encoder`` and ``head`` with plain transformers for
        the model card (the card adds tokenisation, pooling and decoding). None: no such snippet."""
        return None

    @staticmethod
    def head_loading(ref: str, encoder_src: str, stored: bool) -> tuple[str, list[str]]:
        """The plain-transformers loading of ``head.safetensors`` + an encoder from ``encoder_src``
        (``folder`` when the repository stores it, else the base model id)."""
        code = ["import torch", "from huggingface_hub import snapshot_download",
                "from safetensors.torch import load_file",
                "from transformers import AutoModel, AutoTokenizer",
                "",
                f'folder = snapshot_download("{ref}")',
                f"encoder = AutoModel.from_pretrained({encoder_src}).eval()",
                'weights = load_file(f"{folder}/head.safetensors")',
                'head = torch.nn.Linear(weights["out.weight"].shape[1], weights["out.weight"].shape[0])',
                'head.load_state_dict({"weight": weights["out.weight"], "bias": weights["out.bias"]})']
        intro = ("With plain transformers (the encoder" + (" is stored in this repository" if stored
                 else " is the unchanged base model") + "; the trained head is `head.safetensors`):")
        return intro, code


class FullStrategy(Strategy):
    """Every weight trains."""
    name = "full"
    defaults = {"epochs": 3, "lr": 5e-5, "head_lr": 1e-3, "patience": 2}
    stores_encoder = True
    freezes_parameters = False

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
        save_head(m, out_dir)
        return {"weights": {"encoder": "model.safetensors", "head": "head.safetensors"}}

    @classmethod
    def weight_files(cls, out: Path) -> list[str]:
        return ["head.safetensors"] + (encoder_weight_files(out) or ["model.safetensors"])

    @classmethod
    def push_description(cls, merged: bool) -> str:
        return "fully fine-tuned model"

    @classmethod
    def describe(cls, details: dict[str, Any], merged: bool = False) -> str:
        return "**Full fine-tuning**: every weight of the encoder and of the task head was trained."

    @classmethod
    def card_loading(cls, info: Any, ref: str, base: str, revision: str) -> tuple[str, list[str]] | None:
        return cls.head_loading(ref, "folder", stored=True)


class PartialStrategy(FullStrategy):
    """Encoder frozen except its top-k layers (default 2); head trains."""
    name = "partial"
    defaults = {"epochs": 4, "lr": 1e-4, "head_lr": 1e-3, "patience": 2}
    freezes_parameters = True
    uses_unfreeze_top_k = True

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

    @classmethod
    def push_description(cls, merged: bool) -> str:
        return "partially fine-tuned model"

    @classmethod
    def describe(cls, details: dict[str, Any], merged: bool = False) -> str:
        return (f"**Partial fine-tuning**: the top {details.get('unfreeze_top_k') or 2} encoder layers and the task "
                "head were trained; the layers below stayed frozen.")


class FrozenStrategy(Strategy):
    """Feature extraction: encoder frozen and in eval mode, head trained on cached features."""
    name = "frozen"
    uses_feature_cache = True
    trains_encoder = False
    defaults = {"epochs": 30, "lr": 0.0, "head_lr": 2e-3, "patience": 5}

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
        save_head(m, out_dir)
        return {"weights": {"head": "head.safetensors"}}

    @classmethod
    def push_description(cls, merged: bool) -> str:
        return "frozen-encoder model (encoder weights included)" if merged else "head (frozen encoder)"

    @classmethod
    def describe(cls, details: dict[str, Any], merged: bool = False) -> str:
        where = ("For this upload the unchanged encoder weights were stored next to the head (`--merge`), so the "
                 "repository does not need the base model.") if merged \
            else "The repository holds the head and an exact reference to the base model."
        return ("**Frozen encoder** (feature extraction): the pretrained encoder was not changed; only the task "
                "head was trained, on pooled sentence vectors. " + where)

    @classmethod
    def card_loading(cls, info: Any, ref: str, base: str, revision: str) -> tuple[str, list[str]] | None:
        return cls.head_loading(ref, f'"{base}"{revision}', stored=False)


class LoraStrategy(Strategy):
    """PEFT LoRA adapters (attention projections by default) + trained head.

    The head is named explicitly in ``modules_to_save`` so PEFT saves it (instead of
    guessing head names). With ``unfreeze_top_k=k`` (the hybrid) the top k layers train
    fully (also via ``modules_to_save``) and LoRA goes on the layers below them."""
    name = "lora"
    defaults = {"epochs": 4, "lr": 5e-4, "head_lr": 1e-3, "patience": 2}
    uses_unfreeze_top_k = True
    saved_weights = "the LoRA adapter"
    card_tags = ("peft", "lora")
    ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")

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

    # ---- reloading: the adapter (with the head it carries in modules_to_save) on the base encoder
    @classmethod
    def load_trained(cls, model: nn.Module, out: Path, meta: dict[str, Any], *, merge: bool = True) -> nn.Module:
        from peft import PeftModel
        if not (Path(out) / "adapter_model.safetensors").is_file():
            raise ModelError(f"adapter in {out}", expected="adapter_model.safetensors", found="no such file",
                             fix="re-run training; pickle adapters are not loaded")
        peft_model = PeftModel.from_pretrained(model, str(out))
        return peft_model.merge_and_unload() if merge else peft_model

    @classmethod
    def trained_head(cls, out: Path) -> dict[str, torch.Tensor]:
        adapter = load_file(str(Path(out) / "adapter_model.safetensors"))
        return {f".{k}".split(".head.", 1)[1].replace("modules_to_save.default.", ""): v
                for k, v in adapter.items() if ".head." in f".{k}"}

    # ---- publishing
    @classmethod
    def weight_files(cls, out: Path) -> list[str]:
        return list(cls.ADAPTER_FILES)

    @classmethod
    def prepare_push(cls, stage: Path, meta: dict[str, Any], base_ref: dict[str, Any]) -> None:
        """The adapter must carry the head; its config names the base model on the Hub."""
        from safetensors import safe_open

        path = Path(stage) / "adapter_model.safetensors"
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
        if not any(".head." in f".{k}" for k in keys):
            raise ModelError(f"adapter {path.name}", expected="the trained classification head saved with the "
                             "adapter (PEFT modules_to_save)", found="adapter weights only",
                             fix="re-train with this nlp_transfer version (the head is in modules_to_save)")
        cfg_path = Path(stage) / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        cfg["base_model_name_or_path"] = base_ref.get("name")
        cfg["revision"] = base_ref.get("revision")
        cfg_path.write_text(json.dumps(cfg, indent=2, default=str) + "\n", encoding="utf-8")

    @classmethod
    def push_description(cls, merged: bool) -> str:
        return "LoRA model merged into the encoder" if merged else "LoRA adapter + head"

    @classmethod
    def describe(cls, details: dict[str, Any], merged: bool = False) -> str:
        d = details
        text = (f"**LoRA**: low-rank adapters (r={d.get('r', '?')}, alpha={d.get('alpha', '?')}) on the "
                f"`{'`, `'.join(d.get('target_modules') or ['attention'])}` projections of the frozen encoder, "
                "plus the task head, were trained"
                + (f"; the top {d['unfreeze_top_k']} layers were fully trained as well" if d.get("unfreeze_top_k")
                   else "") + ".")
        if merged:
            text += "\nThe adapters were merged into the encoder weights (`merge_and_unload`) for this upload."
        return text

    @classmethod
    def card_loading(cls, info: Any, ref: str, base: str, revision: str) -> tuple[str, list[str]] | None:
        if info.hidden_size is None or info.head_outputs is None:
            return None
        code = [
            "import torch",
            "from huggingface_hub import snapshot_download",
            "from peft import PeftModel",
            "from transformers import AutoModel, AutoTokenizer",
            "",
            f'folder = snapshot_download("{ref}")',
            "",
            "class Head(torch.nn.Module):          # nlp_transfer's head: dropout + linear",
            "    def __init__(self):",
            "        super().__init__()",
            "        self.dropout = torch.nn.Dropout(0.0)",
            f"        self.out = torch.nn.Linear({info.hidden_size}, {info.head_outputs})",
            "",
            "class Wrapper(torch.nn.Module):       # same module names as at training time",
            "    def __init__(self):",
            "        super().__init__()",
            f'        self.encoder = AutoModel.from_pretrained("{base}"{revision})',
            "        self.head = Head()",
            "",
            "model = PeftModel.from_pretrained(Wrapper(), folder).merge_and_unload().eval()",
            "encoder, head = model.encoder, model.head.out",
        ]
        intro = (f"With plain transformers + peft (the adapter and the trained head are in PEFT format; the base "
                 f"encoder is `{base}`):")
        return intro, code


class AutoStrategy(Strategy):
    """``strategy=auto``: not a way to train but a request to choose one. ``recipe.train`` resolves
    it (:func:`nlp_transfer.selection.auto.resolve_auto`) to a concrete strategy before training."""
    name = "auto"
    concrete = False
    freezes_parameters = True  # it may pick frozen, lora or partial

    def apply(self, model: TransferModel) -> nn.Module:
        raise ConfigError("strategy=auto", expected="a concrete strategy by training time",
                          found="auto unresolved", fix="train through nlp_transfer.train (it resolves auto first)")


def register_strategy(name_or_cls: Any, cls: type | None = None, *, replace: bool = False) -> type:
    """Register a :class:`Strategy` subclass under its ``name`` (or ``register_strategy("name", cls)``);
    usable as a class decorator. ``strategy=<name>`` then works in recipes, and saving, ``load``,
    Hub pushes, model cards and preflight ask the class. Undo with :func:`unregister_strategy`."""
    c = name_or_cls if cls is None else cls
    if not (isinstance(c, type) and issubclass(c, Strategy)):
        raise TypeError(f"register_strategy: expected a Strategy subclass, got {c!r}")
    return registry.register_strategy(name_or_cls, cls, replace=replace)


for _cls in (FullStrategy, FrozenStrategy, LoraStrategy, PartialStrategy, AutoStrategy):
    register_strategy(_cls)


def get_strategy(cfg: StrategyConfig) -> Strategy:
    """The strategy object for a ``StrategyConfig`` (ConfigError listing the registered names)."""
    return strategy_class(cfg.name)(cfg)


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
