"""The strategy interface (:class:`Strategy`), its registration and the helpers strategies share."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from nlp_transfer import registry
from nlp_transfer.registry import strategy_class
from nlp_transfer.config import StrategyConfig
from nlp_transfer.errors import ConfigError, ModelError
from nlp_transfer.model import TransferModel


def is_unused_pooler(name: str) -> bool:
    return name.startswith("encoder.pooler.")


def is_head(name: str) -> bool:
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


def stored_weight_files(out: Path) -> list[str]:
    """Weight files of an output folder that stores the whole model: a native transformers folder
    (``model.safetensors`` or its shards), or a pooled-head folder (``head.safetensors`` + the
    encoder in ``encoder/``; format 1 kept the encoder at the top)."""
    out = Path(out)
    if (out / "encoder" / "config.json").is_file():
        return ["head.safetensors", "encoder/config.json"] + [f"encoder/{f}" for f in encoder_weight_files(out / "encoder")]
    files = encoder_weight_files(out) or ["model.safetensors"]
    return (["head.safetensors"] if (out / "head.safetensors").is_file() else []) + files


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


@dataclass
class TuneContext:
    """What :meth:`Strategy.tune_encoder` gets from the engine (strategies sit below training in
    the layers, so they receive the pieces, never the engine)."""
    model: TransferModel
    #: The tokenised train split (``input_ids``, ``attention_mask``, ``label``...).
    train: Any
    task: str
    label_names: list[str] | None
    #: Pads a list of tokenised rows into a batch (the task's collator).
    collate: Callable[[list[dict[str, Any]]], dict[str, Any]]
    cfg: Any
    device: torch.device
    out_dir: Path
    say: Callable[[str], None]
    show: bool
    autocast: Callable[[], Any]
    tasks: int = 1
    #: The last rows of ``train`` that ``data.label_examples`` added (class-name sentences), not the user's.
    added_rows: int = 0


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
    #: Honours ``train.min_steps`` (few examples: more epochs, so the encoder gets enough updates).
    step_budget = False
    #: Can train through the architecture's own task head (``model.head=native``; ``auto`` picks it).
    native_head = False
    #: ``model.head=auto`` on a checkpoint that declares a sentence pooling (sentence-transformers'
    #: 1_Pooling): keep that pooling + our head (True) or train the native head anyway (False).
    #: Measured per strategy on all-MiniLM-L6-v2 (README "Output folder").
    pooled_when_declared = True
    #: With ``pooled_when_declared = False``: below this many training examples the declared
    #: pooling is kept all the same (few examples: the checkpoint's sentence vector is a far better
    #: start than a CLS token it never trained). Measured per strategy, like the attribute above.
    native_head_min_train = 0
    #: ``model.pooling=auto``: also honour a declared unit-length normalisation (sentence-transformers'
    #: Normalize in modules.json, e.g. all-MiniLM-L6-v2), so the head sees the checkpoint's sentence
    #: embedding as sentence-transformers (and SetFit) compute it.
    declared_normalize = False
    #: ``model.pooling=auto`` when the checkpoint declares none (None: CLS if ``trains_encoder``, else mean).
    undeclared_pooling: str | None = None
    #: ``data.label_examples`` when the recipe leaves it empty: copies of the class-name template per
    #: class added to the training rows (where the task and names allow it).
    label_examples = 0
    #: Trains from a stream (``data.streaming``): False when it needs every training row up front.
    streams = True
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
        #: Parameters trained before the loop by :meth:`tune_encoder` (contrastive: the encoder in
        #: the pair phase); the engine adds them to the loop's trainable count (``trainable_params``).
        self.tuned_params = 0

    # ------------------------------------------------------------------ configuration
    @classmethod
    def check_config(cls, cfg: StrategyConfig) -> None:
        """Fail early (one-line ConfigError) on settings this strategy cannot use."""
        if cfg.unfreeze_top_k and not cls.uses_unfreeze_top_k:
            raise ConfigError("strategy.unfreeze_top_k", expected="only with strategy=partial or strategy=lora",
                              found=f"strategy={cfg.name} with unfreeze_top_k={cfg.unfreeze_top_k}",
                              fix="use strategy=partial, or strategy=lora for the hybrid")

    @classmethod
    def check_recipe(cls, recipe: Any) -> None:
        """Fail early on a whole recipe this strategy cannot train (e.g. a task it does not support)."""

    # ------------------------------------------------------------------ training
    def tune_encoder(self, ctx: TuneContext) -> dict[str, Any] | None:
        """A phase before the head trains, on the training texts (e.g. contrastive pairs); called
        before :meth:`apply`. Returns what identifies the tuned encoder in the feature-cache key
        (None: the encoder is the pretrained one)."""
        return None

    def apply(self, model: TransferModel) -> nn.Module:
        """Set ``requires_grad`` (and wrap, for adapters). Returns the module to train."""
        raise NotImplementedError

    def param_groups(self, model: nn.Module, lr: float, head_lr: float, weight_decay: float) -> list[dict[str, Any]]:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        # The head is whatever the model calls its head (ours, a native task model's classifier and
        # pooler, under PEFT's wrappers or not): matched by identity, not by parameter name.
        head_ids = {id(p) for p in self.base(model).head.parameters()}
        head = [(n, p) for n, p in named if id(p) in head_ids or is_head(n)]
        body = [(n, p) for n, p in named if not (id(p) in head_ids or is_head(n))]
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
        if getattr(model, "pooling", None) == "native":
            return  # a native task model was loaded with its trained head
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
    def card_settings(cls, settings: dict[str, Any]) -> dict[str, Any]:
        """The settings of the recipe's ``strategy`` section (``settings``) that :meth:`describe`
        reads, under the keys it reads them by; settings that are unset (None) are left out."""
        return {}

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


def register_strategy(name_or_cls: Any, cls: type | None = None, *, replace: bool = False) -> type:
    """Register a :class:`Strategy` subclass under its ``name`` (or ``register_strategy("name", cls)``);
    usable as a class decorator. ``strategy=<name>`` then works in recipes, and saving, ``load``,
    Hub pushes, model cards and preflight ask the class. Undo with :func:`unregister_strategy`."""
    c = name_or_cls if cls is None else cls
    if not (isinstance(c, type) and issubclass(c, Strategy)):
        raise TypeError(f"register_strategy: expected a Strategy subclass, got {c!r}")
    return registry.register_strategy(name_or_cls, cls, replace=replace)


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
