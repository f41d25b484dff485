"""``export --format transformers``: a trained model as a plain transformers folder.

Only a model trained through the architecture's own task head (``model.head=native``: ``full``,
``partial``, ``lora``) is representable: the folder holds ``AutoModelFor<Task>`` weights (LoRA
merged in), ``config.json`` with the labels and ``problem_type``, the tokenizer, and
``nlp_transfer.json`` (so ``nlp_transfer.load`` reads it too). Pooling + nlp_transfer's head has no
transformers class, so such a folder is refused with a pointer at ``--format onnx``. The export is
checked: reloaded with ``AutoModelFor<Task>`` it must give the trained model's logits.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from nlp_transfer.errors import ModelError, NLPTransferError
from nlp_transfer.export.onnx import check_rows
from nlp_transfer.predict.rebuild import rebuild_model, resolve_output
from nlp_transfer.registry import TASKS

#: Largest |logit difference| between the exported folder (reloaded) and the trained model.
NATIVE_TOLERANCE = 1e-4
#: Texts the check runs on when the run kept no held-out rows.
PROBE_TEXTS = ["a short one", "a somewhat longer sentence to classify, with punctuation!", "x"]


def check_native(meta: dict[str, Any], where: Path) -> None:
    """Refuse (one line) a folder whose model no transformers class represents."""
    if (meta.get("head") or {}).get("type") != "native":
        raise ModelError("export --format transformers", expected="a model trained with the architecture's own "
                         "task head (model.head=native: strategy full, partial or lora)",
                         found=f"{where}: strategy={meta.get('strategy')} with {meta.get('pooling')} pooling + "
                               "nlp_transfer's head, which no transformers class represents",
                         fix="export --format onnx (pooling and head inside the graph), or retrain with model.head=native")


def probe_texts(src: Path, meta: dict[str, Any], n: int = 64) -> tuple[list[str], list[str] | None]:
    """The first ``n`` texts of the rows the ONNX export is checked on (the run's ``held_out.jsonl``,
    else its recipe's held-out split), else fixed probes (e.g. token tasks, whose rows are word lists)."""
    try:
        rows, _ = check_rows(src, meta, None)
    except NLPTransferError:
        rows = []
    rows = [r for r in rows[:n] if isinstance(r.get("text"), str)]
    if not rows:
        return list(PROBE_TEXTS), None
    pairs = [r["text_pair"] for r in rows] if all(isinstance(r.get("text_pair"), str) for r in rows) else None
    return [r["text"] for r in rows], pairs


def export_native(output_dir: str | Path, out: str | Path) -> dict[str, Any]:
    """Write the trained model of ``output_dir`` as a plain transformers folder in ``out`` and check it
    (max |delta logit| <= NATIVE_TOLERANCE on held-out texts). Returns the report."""
    import transformers

    src = resolve_output(output_dir)
    meta = json.loads((src / "nlp_transfer.json").read_text(encoding="utf-8"))
    check_native(meta, src)
    model, tokenizer, meta, _ = rebuild_model(src, device="cpu", merge=True,
                                              trust_remote_code=bool(meta.get("trust_remote_code")))
    dest = Path(out).expanduser()
    if dest.exists() and any(dest.iterdir()):
        raise ModelError(f"export folder {dest}", expected="a new or empty folder", found="files in it",
                         fix="pass another --out, or remove the folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        weights = model.save_weights(tmp)
        tokenizer.save_pretrained(tmp)
        exported_meta = {**meta, "merged": True, "weights": weights, "exported_from": str(src)}
        (tmp / "nlp_transfer.json").write_text(json.dumps(exported_meta, indent=2, default=str) + "\n", encoding="utf-8")
        auto = getattr(transformers, TASKS[meta["task"]].auto_class)
        reloaded = auto.from_pretrained(str(tmp)).eval()
        texts, pairs = probe_texts(src, meta)
        enc = tokenizer(texts, pairs, padding=True, truncation=True, max_length=meta["max_length"], return_tensors="pt")
        enc = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        with torch.inference_mode():
            delta = float((reloaded(**enc).logits.float() - model(**enc)["logits"].float()).abs().max())
        if delta > NATIVE_TOLERANCE:
            raise ModelError("export --format transformers", expected=f"the trained model's logits (max |delta| <= "
                             f"{NATIVE_TOLERANCE:g})", found=f"max |delta logit| {delta:.2e} on {len(texts)} texts",
                             fix="report this as a bug; export --format onnx meanwhile")
        if dest.exists():
            dest.rmdir()
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"format": "transformers", "path": str(dest), "auto_class": TASKS[meta["task"]].auto_class,
            "checked_texts": len(texts), "max_abs_logit_delta": delta}
