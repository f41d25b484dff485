"""The one place that rebuilds a trained model from an output folder (or a pushed Hub repo).

:func:`rebuild_model` serves ``nlp_transfer.load`` / ``predict.load_model``, the Hub push
(merged exports and their check) and multi-task loading. It reads ``nlp_transfer.json``,
applies the safety checks every loader needs (pickle weights refused unless
``allow_pickle=True``; repository code only if the *caller* allows it), builds the encoder
from the folder or from the base model, attaches the head(s) of a single- or multi-task
model, and lets the strategy that trained it (:mod:`nlp_transfer.strategies`) put its saved
weights back (adapter, encoder weights, head only...).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nlp_transfer.errors import ModelError
from nlp_transfer.model import (ENCODER_SUBFOLDER, HEADS, NativeTaskModel, TransferModel, load_encoder, load_task_model,
                                load_tokenizer, resolve_model, weights_sha256)
from nlp_transfer.model.multitask import MultiHead, MultiTaskModel
from nlp_transfer.registry import STRATEGIES

#: ``meta["task"]`` of a multi-task output folder (one shared encoder, one head per task).
MULTI_TASK = "multi_task"
#: Suffixes of pickle-based files, refused unless ``allow_pickle=True``.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def resolve_output(path_or_repo: str | Path, revision: str | None = None) -> Path:
    """A local output folder, or a Hub repo id downloaded to the local cache."""
    p = Path(path_or_repo).expanduser()
    if p.is_dir():
        if not (p / "nlp_transfer.json").is_file():
            raise ModelError(f"folder {p}", expected="an nlp_transfer output folder (with nlp_transfer.json)",
                             found=f"files {sorted(x.name for x in p.iterdir())[:8]}",
                             fix="pass the output.dir of a finished training run")
        return p
    s = str(path_or_repo)
    if s.startswith((".", "/", "~")) or s.count("/") != 1:
        raise ModelError("model to load", expected="an output folder or a Hub repo id 'user/name'",
                         found=f"'{s}' does not exist", fix="check the path")
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(s, revision=revision))
    except Exception as e:
        raise ModelError(f"Hub repo '{s}'", expected="a reachable repo pushed by nlp_transfer",
                         found=f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}",
                         fix="check the repo id, your token and network") from None


def refuse_remote_code(meta: dict[str, Any], out: Path, trust_remote_code: bool) -> None:
    """A folder's own nlp_transfer.json cannot switch remote code on: only the caller can."""
    if meta.get("trust_remote_code") and not trust_remote_code:
        raise ModelError(f"model in {out}", expected="an architecture built into transformers",
                         found="a folder whose model needs custom code from its repository (trust_remote_code)",
                         fix="review that code, then pass trust_remote_code=True (CLI: --trust-remote-code)")


def read_checked_meta(out: Path, allow_pickle: bool, trust_remote_code: bool) -> tuple[dict[str, Any], bool]:
    """``nlp_transfer.json`` of an output folder, after the safety checks every loader applies:
    pickle files refused unless ``allow_pickle``, remote code only if the *caller* allows it.
    Returns ``(meta, remote)``, ``remote`` being what to pass as ``trust_remote_code``."""
    meta = json.loads((out / "nlp_transfer.json").read_text())
    if not allow_pickle:
        folders = [out] + ([out / ENCODER_SUBFOLDER] if (out / ENCODER_SUBFOLDER).is_dir() else [])
        pickles = [str(p.relative_to(out)) for d in folders for p in sorted(d.iterdir()) if p.suffix in PICKLE_SUFFIXES]
        if pickles:
            raise ModelError(f"weights in {out}", expected="safetensors files only",
                             found=f"pickle-based files {pickles}",
                             fix="re-save as safetensors, or pass allow_pickle=True if you trust the source")
    refuse_remote_code(meta, out, trust_remote_code)
    return meta, bool(meta.get("trust_remote_code", False)) and trust_remote_code


def base_path(meta: dict[str, Any], out: Path | None = None) -> str:
    """Where the base encoder of an output is: its recorded folder, the embedded copy, or the Hub
    repo pinned to the recorded commit (downloaded). Warns when its weights differ from training's."""
    ref = meta["base_model"]
    rel = ref.get("path") and not Path(ref["path"]).is_absolute()
    inside = out / ref["path"] if out is not None and rel else None
    if inside is not None and inside.is_dir():  # saved inside the folder (a model passed in memory)
        path = str(inside)
    elif ref.get("path") and Path(ref["path"]).is_dir():
        path = ref["path"]
    else:
        path = resolve_model(ref["name"])
        if ref.get("revision") and not Path(path).is_dir():
            # Pushed by nlp_transfer.publish.hub: the base is a Hub id pinned to the commit it was checked at.
            from huggingface_hub import snapshot_download
            try:
                path = snapshot_download(path, revision=ref["revision"],
                                         allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"])
            except Exception as e:
                raise ModelError(f"base model '{ref['name']}' at revision {ref['revision'][:12]}",
                                 expected="a reachable Hub repo", found=f"{type(e).__name__}",
                                 fix="check your network/token (and HF_HUB_OFFLINE)") from None
    if ref.get("sha256") and Path(path).is_dir():
        sha = weights_sha256(path)
        if sha and sha != ref["sha256"]:
            warnings.warn(f"base model at {path} differs from the one this head was trained on "
                          f"(sha256 {sha[:12]} != {ref['sha256'][:12]}); predictions may differ", stacklevel=3)
    return path


def strategy_of(meta: dict[str, Any], out: Path) -> type:
    """The registered strategy class that wrote ``out`` (ModelError naming the registered ones)."""
    name = meta.get("strategy")
    cls = STRATEGIES.get(name)
    if cls is None or not getattr(cls, "concrete", True):
        options = [n for n, c in STRATEGIES.items() if getattr(c, "concrete", True)]
        raise ModelError(f"strategy in {out}/nlp_transfer.json", expected=f"one of the registered strategies {options}",
                         found=repr(name), fix="register that strategy first (import the module that calls "
                         "register_strategy), or pass the output folder of an nlp_transfer training run")
    return cls


def needs_base_model(meta: dict[str, Any], cls: type) -> bool:
    """Whether the encoder comes from the base model (else from the folder itself). A merged Hub
    export always holds the whole encoder."""
    return not meta.get("merged") and cls.needs_base_model(meta)


def device_of(device: str | torch.device | None) -> torch.device:
    """``device``, or CUDA when available, else CPU."""
    return torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_skeleton(encoder: nn.Module, meta: dict[str, Any]) -> nn.Module:
    """Encoder + fresh head(s) as ``meta`` describes: a TransferModel, or a MultiTaskModel with one
    head per task (``meta["head"]["heads"]``)."""
    h = meta["head"]
    hidden = encoder.config.hidden_size
    if meta.get("task") == MULTI_TASK:
        heads = {n: HEADS[spec["type"]](hidden, spec["num_outputs"], h.get("dropout", 0.0))
                 for n, spec in h["heads"].items()}
        return MultiTaskModel(encoder, MultiHead(heads), meta["pooling"],
                              {n: t["task"] for n, t in meta["tasks"].items()})
    head = HEADS[h["type"]](hidden, h["num_outputs"], h.get("dropout", 0.0))
    return TransferModel(encoder, head, meta["pooling"], meta["task"])


def _check_kind(meta: dict[str, Any], out: Path, expect_multi_task: bool | None) -> None:
    if expect_multi_task is None or (meta.get("task") == MULTI_TASK) == expect_multi_task:
        return
    if expect_multi_task:
        raise ModelError(f"folder {out}", expected="a multi-task output folder", found=f"task={meta.get('task')}",
                         fix="use nlp_transfer.load() for single-task folders")
    raise ModelError(f"folder {out}", expected="a single-task output folder", found="a multi-task output folder",
                     fix="use nlp_transfer.load() (it answers every task of a multi-task folder)")


def rebuild_model(path_or_repo: str | Path, device: str | torch.device | None = None, allow_pickle: bool = False,
                  trust_remote_code: bool = False, *, merge: bool = True, revision: str | None = None,
                  base_model: str | None = None, base_revision: str | None = None,
                  expect_multi_task: bool | None = None) -> tuple[nn.Module, Any, dict[str, Any], Path]:
    """Rebuild the trained model of an output folder (or Hub repo id): ``(model, tokenizer, meta, path)``,
    the model in eval mode on ``device`` (default: CUDA if available, else CPU).

    Single-task folders give a ``TransferModel``, multi-task folders (``meta["task"] == "multi_task"``)
    a ``MultiTaskModel``. The strategy recorded in ``nlp_transfer.json`` decides where the encoder comes
    from (the folder, or the base model) and loads what it saved; ``merge=False`` keeps adapters
    unmerged (LoRA: a ``PeftModel``). ``base_model``/``base_revision`` override the recorded base
    (e.g. the Hub id a push verified). ``expect_multi_task``: True/False refuses the other kind.

    Safe by default for folders from someone else: pickle files are refused unless
    ``allow_pickle=True`` and repository code never runs unless ``trust_remote_code=True``."""
    out = resolve_output(path_or_repo, revision)
    meta, remote = read_checked_meta(out, allow_pickle, trust_remote_code)
    _check_kind(meta, out, expect_multi_task)
    cls = strategy_of(meta, out)
    source, rev = str(out), None
    if needs_base_model(meta, cls):
        source, rev = (base_model, base_revision) if base_model else (base_path(meta, out), None)
    if meta["head"].get("type") == "native":  # the architecture's task model: from the folder, or the base + adapter
        net = load_task_model(source, meta["task"], meta["head"]["num_outputs"], meta.get("label_names"), rev, remote,
                              allow_pickle=allow_pickle)
        model = NativeTaskModel(net, meta["task"])
    else:
        if (Path(source) / ENCODER_SUBFOLDER / "config.json").is_file():
            source = str(Path(source) / ENCODER_SUBFOLDER)
        encoder = load_encoder(source, revision=rev, trust_remote_code=remote, allow_pickle=allow_pickle)
        model = build_skeleton(encoder, meta)
    if meta.get("merged"):  # a merged Hub export: encoder + head.safetensors, whatever trained it
        cls.load_head(model, out)
    else:
        model = cls.load_trained(model, out, meta, merge=merge)
    tokenizer = load_tokenizer(str(out), trust_remote_code=remote)
    model.to(device_of(device)).eval()
    return model, tokenizer, meta, out
