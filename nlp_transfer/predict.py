"""Reload any output folder (or pushed Hub repo) and predict.

Weights are read from safetensors only; a folder holding only pickle weights is refused
unless ``allow_pickle=True`` is passed explicitly. LoRA adapters are merged into the
encoder for inference (one matmul per projection instead of two)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from safetensors.torch import load_file

from .errors import ModelError
from .models import HEADS, TASKS, TransferModel, load_encoder, resolve_model, weights_sha256


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


def _base_path(meta: dict[str, Any]) -> str:
    ref = meta["base_model"]
    if ref.get("path") and Path(ref["path"]).is_dir():
        path = ref["path"]
    else:
        path = resolve_model(ref["name"])
        if ref.get("revision") and not Path(path).is_dir():
            # Pushed by nlp_transfer.hub: the base is a Hub id pinned to the commit it was checked at.
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


def _refuse_remote_code(meta: dict[str, Any], out: Path, trust_remote_code: bool) -> None:
    """A folder's own nlp_transfer.json cannot switch remote code on: only the caller can."""
    if meta.get("trust_remote_code") and not trust_remote_code:
        raise ModelError(f"model in {out}", expected="an architecture built into transformers",
                         found="a folder whose model needs custom code from its repository (trust_remote_code)",
                         fix="review that code, then pass trust_remote_code=True (CLI: --trust-remote-code)")


def _read_checked_meta(out: Path, allow_pickle: bool, trust_remote_code: bool) -> tuple[dict[str, Any], bool]:
    """``nlp_transfer.json`` of an output folder, after the safety checks every loader applies:
    pickle files refused unless ``allow_pickle``, remote code only if the *caller* allows it.
    Returns ``(meta, remote)``, ``remote`` being what to pass as ``trust_remote_code``."""
    meta = json.loads((out / "nlp_transfer.json").read_text())
    if not allow_pickle:
        pickles = [p.name for p in out.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
        if pickles:
            raise ModelError(f"weights in {out}", expected="safetensors files only",
                             found=f"pickle-based files {pickles}",
                             fix="re-save as safetensors, or pass allow_pickle=True if you trust the source")
    _refuse_remote_code(meta, out, trust_remote_code)
    return meta, bool(meta.get("trust_remote_code", False)) and trust_remote_code


def _encoder_source(meta: dict[str, Any]) -> str | None:
    """Where the encoder weights are: this folder (full, partial, merged) or the base model."""
    return None if meta["strategy"] in ("full", "partial") or meta.get("merged") else _base_path(meta)


def _attach_trained_weights(model: torch.nn.Module, out: Path, meta: dict[str, Any]) -> torch.nn.Module:
    """Load what training saved on top of the rebuilt model: the LoRA adapter (merged, with the
    head it carries in modules_to_save) or the head weights."""
    if meta["strategy"] == "lora" and not meta.get("merged"):
        from peft import PeftModel
        if not (out / "adapter_model.safetensors").is_file():
            raise ModelError(f"adapter in {out}", expected="adapter_model.safetensors", found="no such file",
                             fix="re-run training; pickle adapters are not loaded")
        return PeftModel.from_pretrained(model, str(out)).merge_and_unload()
    model.head.load_state_dict(load_file(str(out / "head.safetensors")))
    return model


def _device(device: str | torch.device | None) -> torch.device:
    return torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(path_or_repo: str | Path, device: str | torch.device | None = None, allow_pickle: bool = False,
               revision: str | None = None, trust_remote_code: bool = False
               ) -> tuple[TransferModel, Any, dict[str, Any], Path]:
    """Rebuild the trained TransferModel (LoRA merged), its tokenizer and metadata.

    Safe by default for folders from someone else: pickle files are refused unless
    ``allow_pickle=True`` and repository code never runs unless ``trust_remote_code=True``."""
    from transformers import AutoTokenizer

    out = resolve_output(path_or_repo, revision)
    meta, remote = _read_checked_meta(out, allow_pickle, trust_remote_code)
    encoder = load_encoder(_encoder_source(meta) or str(out), trust_remote_code=remote, allow_pickle=allow_pickle)
    h = meta["head"]
    head = HEADS[h["type"]](encoder.config.hidden_size, h["num_outputs"], h.get("dropout", 0.0))
    model = _attach_trained_weights(TransferModel(encoder, head, meta["pooling"], meta["task"]), out, meta)
    tokenizer = AutoTokenizer.from_pretrained(str(out), trust_remote_code=remote)
    model.to(_device(device)).eval()
    return model, tokenizer, meta, out


class Predictor:
    """Callable that turns texts into predictions with the saved label names."""

    def __init__(self, model: TransferModel, tokenizer: Any, meta: dict[str, Any], path: Path) -> None:
        self.model, self.tokenizer, self.meta, self.path = model, tokenizer, meta, path
        self.device = next(model.parameters()).device
        self.label_names = meta.get("label_names")
        self.task = meta["task"]

    @torch.inference_mode()
    def logits(self, texts: list[str], text_pairs: list[str] | None = None, batch_size: int = 64) -> np.ndarray:
        """Raw head outputs in input order (batches formed in length order: little padding)."""
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out: np.ndarray | None = None
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            enc = self.tokenizer([texts[i] for i in idx], [text_pairs[i] for i in idx] if text_pairs else None,
                                 truncation=True, max_length=self.meta["max_length"], padding=True, return_tensors="pt")
            enc = {k: v.to(self.device) for k, v in enc.items()
                   if k in ("input_ids", "attention_mask", "token_type_ids")}
            z = self.model(**enc)["logits"].float().cpu().numpy()
            if out is None:
                out = np.empty((len(texts),) + z.shape[1:], dtype=np.float32)
            out[idx] = z
        return out if out is not None else np.empty((0,), dtype=np.float32)

    def __call__(self, texts: str | Iterable[str], text_pairs: str | Iterable[str] | None = None,
                 batch_size: int = 64) -> list[dict[str, Any]]:
        texts = [texts] if isinstance(texts, str) else list(texts)
        if text_pairs is not None:
            text_pairs = [text_pairs] if isinstance(text_pairs, str) else list(text_pairs)
        if self.meta.get("text_pair") and text_pairs is None:
            raise ModelError("prediction input", expected="pairs of texts (this model was trained on text pairs)",
                             found="single texts", fix="pass text_pairs=[...] (CLI: --pair)")
        spec = TASKS.get(self.task)
        if spec is not None and spec.predict is not None:  # NER spans; multi-label with saved thresholds
            return spec.predict(self, texts, text_pairs, batch_size)
        z = self.logits(texts, text_pairs, batch_size)
        if self.task == "regression":
            return [{"value": float(v)} for v in z.reshape(-1)]
        probs = torch.softmax(torch.from_numpy(z), -1).numpy()
        best = probs.argmax(-1)
        return [{"label": self.label_names[i] if self.label_names else str(i), "score": float(p[i])}
                for i, p in zip(best, probs)]


def load(path_or_repo: str | Path, device: str | None = None, allow_pickle: bool = False,
         revision: str | None = None, trust_remote_code: bool = False) -> Predictor:
    """Load an output folder (or Hub repo id) as a predictor: ``load(dir)(["text"])``.

    A multi-task folder gives a predictor answering every task, or one:
    ``load(dir)(texts, task="sentiment")``."""
    out = resolve_output(path_or_repo, revision)
    meta = json.loads((out / "nlp_transfer.json").read_text())
    _refuse_remote_code(meta, out, trust_remote_code)
    if meta.get("task") == "multi_task":
        from .multitask import load_multitask
        return load_multitask(out, device=device, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    return Predictor(*load_model(out, device, allow_pickle, revision, trust_remote_code))


def evaluate_output(path: str | Path, data: str, split: str | None = None, **data_overrides: Any) -> dict[str, float]:
    """Score a saved model on a labelled file/dataset with the metrics it was trained with."""
    import yaml

    from .config import DataConfig
    from .data import _canonical_columns, _drop_empty, _encode_labels, load_raw
    from .metrics import compute

    predictor = load(path)
    if not isinstance(predictor, Predictor):  # a multi-task folder
        raise ModelError(f"evaluate {path}", expected="a single-task output folder",
                         found=f"a multi-task model (tasks {predictor.tasks})",
                         fix="its held-out/test scores per task are in metrics.json under 'tasks'")
    recipe = yaml.safe_load((predictor.path / "recipe.yaml").read_text())
    dcfg = {**recipe["data"], **data_overrides, "name": data}
    dcfg = DataConfig(**dcfg)
    if TASKS[predictor.task].prepare is not None:  # token classification / multi-label: the task's reader
        from .tasks.common import evaluate_saved
        return evaluate_saved(predictor, dcfg, split)
    raw = load_raw(dcfg)
    split = split or next((s for s in ("test", "validation", "dev", "train") if s in raw), list(raw)[0])
    ds = _canonical_columns(raw[split], dcfg, split)
    ds, _ = _drop_empty(ds, dcfg.text_pair_column is not None)
    if predictor.task == "sequence_classification":
        from datasets import ClassLabel
        explicit = dcfg.label_names is not None or isinstance(ds.features["label"], ClassLabel)
        ds = _encode_labels(ds, predictor.label_names, split, explicit)
    texts = list(ds["text"][:])
    pairs = list(ds["text_pair"][:]) if "text_pair" in ds.column_names else None
    z = predictor.logits(texts, pairs)
    spec = TASKS[predictor.task]
    preds = spec.predictions(torch.from_numpy(z)).numpy()
    refs = np.asarray(ds["label"][:])
    names = recipe.get("eval", {}).get("metrics") or spec.default_metrics
    scores = {k: float(v) for k, v in compute(names, predictions=preds, references=refs).items()}
    scores["n"] = len(refs)
    return scores
