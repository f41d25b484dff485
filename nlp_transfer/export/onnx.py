"""Export a trained output folder to ONNX (optionally int8-quantized), checked against the torch model.

The exported graph holds the whole model: encoder, pooling and head. Its inputs are ``input_ids``,
``attention_mask`` and ``token_type_ids`` (only when the tokenizer produces them), its output
``logits`` (``batch x labels``; ``batch x sequence x tags`` for token classification), both
batch and sequence axes dynamic. Beside ``model.onnx`` the folder holds ``config.json`` (label
names as ``id2label``/``label2id``), the tokenizer files, ``recipe.yaml`` and ``nlp_transfer.json``
(the source's, plus ``"format": "onnx"`` and ``"onnx": {"opset", "quantized", "checks", ...}``),
so :func:`nlp_transfer.load` serves it through ONNX Runtime with the torch predictor's outputs.

Before anything is written, the export is checked on the held-out rows saved with the run
(``held_out.jsonl``; else the recipe's held-out split, re-read) or on ``data=FILE``:

- fp32: the same predictions as the torch model on every row and logits within
  :data:`MAX_ABS_LOGIT_DELTA`;
- int8 (``quantize="int8"``, ``onnxruntime.quantization.quantize_dynamic``, QInt8 weights): the
  held-out score (accuracy; labelled-token accuracy for token classification; per-label decision
  accuracy for multi-label; Pearson r x 100 for regression) at most :data:`INT8_MAX_DROP_PT`
  points below the torch model's.

A failed check raises (one line saying by how much) and leaves no output folder behind.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from nlp_transfer.errors import ConfigError, DataError, EnvironmentSetupError, ModelError
from nlp_transfer.predict import (ONNX_EXTRA, ONNX_FORMAT, PREDICT_BATCH_SIZE, OnnxModel, require_onnxruntime,
                                  token_count_batches)
from nlp_transfer.predict.rebuild import MULTI_TASK, rebuild_model, resolve_output
from nlp_transfer.registry import TASKS

#: ONNX opset of the exported graph (the dynamo exporter's own default, supported by onnxruntime >= 1.14).
OPSET = 18
#: fp32 check: largest allowed |ONNX logit - torch logit| on the check rows.
MAX_ABS_LOGIT_DELTA = 1e-3
#: int8 check: largest allowed drop of the held-out score, in points (accuracy x 100).
INT8_MAX_DROP_PT = 0.5
#: Rows used by the checks (held_out.jsonl keeps at most 2000).
MAX_CHECK_ROWS = 2000
QUANTIZE_CHOICES = ("int8",)
#: quantize_dynamic's options (see quantize_int8), recorded in nlp_transfer.json.
INT8_OPTIONS = {"per_channel": True, "reduce_range": True, "op_types_to_quantize": ["MatMul"]}
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
#: Serialise weights beside the graph (``model.onnx.data``) above this size: protobuf's 2 GB limit.
EXTERNAL_DATA_BYTES = 1_800_000_000


class LogitsOnly(nn.Module):
    """The trained model as the graph sees it: token tensors in, ``logits`` out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)["logits"]


# --------------------------------------------------------------------------- requirements

def require_exporter() -> Any:
    """onnxruntime, onnx and onnxscript (the dynamo exporter writes through onnxscript), or one line
    naming the extra that installs them. Returns the onnxruntime module."""
    ort = require_onnxruntime("export --format onnx")
    for name in ("onnx", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            raise EnvironmentSetupError("export --format onnx", expected=f"the {name} package",
                                        found="it is not installed", fix=ONNX_EXTRA) from None
    return ort


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantization of the MatMuls: QInt8 weights per output channel on 7 bits
    (``reduce_range``), activations quantized per batch at run time; embeddings stay fp32.

    Per-channel 7-bit weights, not ONNX Runtime's per-tensor 8-bit default: on x86 CPUs without
    VNNI (AVX2) the u8 x s8 kernel's pairwise sums saturate int16 (ONNX Runtime's quantization
    docs), and per-tensor scales are set by a layer's largest row. Measured on fine-tuned MiniLM
    (SST-2 dev, AVX2 EPYC): agreement with fp32 95.3% -> 97.1%, max |delta logit| halved, same speed.
    The embedding tables (Gather) are left fp32: a lookup costs no compute, and one per-tensor 7-bit
    scale for the whole vocabulary cost up to 0.5 pt of held-out accuracy (file 58 MB instead of 24)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic
    root = logging.getLogger()  # quantize_dynamic logs "consider pre-processing" on the root logger
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, **INT8_OPTIONS)
    finally:
        root.setLevel(level)


# --------------------------------------------------------------------------- check rows

def _read_rows_file(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError(f"check data {path}", expected="a csv or jsonl file", found="no such file",
                        fix="pass --data <file with the held-out columns (text, [text_pair], label)>")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8-sig")
    if suffix in (".jsonl", ".ndjson"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if suffix == ".json":
        rows = json.loads(text)
        if isinstance(rows, list):
            return rows
    if suffix in (".csv", ".tsv"):
        return list(csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ","))
    raise DataError(f"check data {path}", expected="a .csv, .tsv, .jsonl or .json (list of rows) file",
                    found=f"a {suffix or 'suffix-less'} file", fix="save the rows as jsonl (one JSON object a line)")


def _recipe_held_out(src: Path, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's held-out split re-read with its recipe (folders written without held_out.jsonl)."""
    import yaml

    from nlp_transfer.config import DataConfig
    from nlp_transfer.data import prepare_data
    recipe = yaml.safe_load((src / "recipe.yaml").read_text())
    dcfg = DataConfig(**recipe["data"])
    spec = TASKS[meta["task"]]
    held = (spec.prepare(dcfg) if spec.prepare else prepare_data(dcfg, meta["task"])).held_out
    return held.select(range(min(MAX_CHECK_ROWS, len(held)))).to_list()


def check_rows(src: Path, meta: dict[str, Any], data: str | Path | None) -> tuple[list[dict[str, Any]], str]:
    """The rows the export is checked on, and where they came from."""
    if data is not None:
        return _read_rows_file(Path(data).expanduser())[:MAX_CHECK_ROWS], str(data)
    saved = src / "held_out.jsonl"
    if saved.is_file():
        return _read_rows_file(saved)[:MAX_CHECK_ROWS], "held_out.jsonl"
    try:
        return _recipe_held_out(src, meta), "the recipe's held-out split"
    except Exception as e:
        raise DataError(f"check rows for exporting {src}",
                        expected="held_out.jsonl in the output folder, or the recipe's data to re-read",
                        found=f"neither ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})",
                        fix="pass --data FILE (csv/jsonl with columns text, [text_pair], label)") from None


def _column(row: dict[str, Any], names: tuple[str | None, ...]) -> Any:
    return next((row[n] for n in names if n and n in row), None)


def _label(value: Any, task: str, names: list[str] | None, where: str) -> Any:
    """A row's label as the task's reader stores it (class id, float, multi-hot list)."""
    if value is None or value == "":
        return None
    try:
        if task == "regression":
            return float(value)
        if task == "multi_label":
            if isinstance(value, str):
                value = [v.strip() for v in re.split(r"[;,|]", value) if v.strip()]
            value = list(value)
            if names and value and all(isinstance(v, str) for v in value):
                unknown = [v for v in value if v not in names]
                if unknown:
                    raise ValueError(f"unknown labels {unknown[:3]}")
                return [1.0 if n in value else 0.0 for n in names]
            return [float(v) for v in value]
        if isinstance(value, str) and names and value in names:
            return names.index(value)
        return int(value)
    except (TypeError, ValueError) as e:
        raise DataError(f"label of {where}", expected=f"a label of a {task} model (names {(names or [])[:6]})",
                        found=f"{value!r} ({e})", fix="use the label names or ids of training") from None


# --------------------------------------------------------------------------- batches

Batch = tuple[dict[str, torch.Tensor], Any]


def _sequence_batches(rows: list[dict[str, Any]], meta: dict[str, Any], tok: Any, recipe_data: dict[str, Any],
                      batch_size: int) -> Iterator[Batch]:
    task, names = meta["task"], meta.get("label_names")
    text_cols = ("text", recipe_data.get("text_column"))
    pair_cols = ("text_pair", recipe_data.get("text_pair_column"))
    label_cols = ("label", "labels", recipe_data.get("label_column"))
    texts, pairs, labels = [], [], []
    for i, row in enumerate(rows):
        t = _column(row, text_cols)
        if not isinstance(t, str):
            raise DataError(f"check row {i}", expected="a 'text' column (string)", found=f"columns {list(row)[:6]}",
                            fix="use the columns of held_out.jsonl: text, [text_pair], label")
        texts.append(t)
        pairs.append(str(_column(row, pair_cols) or ""))
        labels.append(_label(_column(row, label_cols), task, names, f"check row {i}"))
    has_labels = all(y is not None for y in labels)
    # serving's batches (dynamic int8 quantizes activations per batch)
    for idx, batch in token_count_batches(tok, texts, pairs if meta.get("text_pair") else None, meta["max_length"],
                                          batch_size):
        yield batch, (np.asarray([labels[i] for i in idx]) if has_labels else None)


def _token_batches(rows: list[dict[str, Any]], meta: dict[str, Any], tok: Any, spec: Any,
                   batch_size: int) -> Iterator[Batch]:
    from datasets import Dataset
    names = meta.get("label_names") or []
    tokens, tags = [], []
    for i, row in enumerate(rows):
        t = _column(row, ("tokens", "words"))
        g = _column(row, ("tags", "ner_tags", "labels", "label"))
        if not isinstance(t, list) or not isinstance(g, list) or len(t) != len(g):
            raise DataError(f"check row {i}", expected="'tokens' and 'tags' lists of the same length",
                            found=f"columns {list(row)[:6]}", fix="use the columns of held_out.jsonl: tokens, tags")
        tokens.append([str(x) for x in t])
        tags.append([names[x] if isinstance(x, int) and 0 <= x < len(names) else str(x) for x in g])
    unknown = sorted({x for seq in tags for x in seq} - set(names))
    if unknown:
        raise DataError("tags of the check rows", expected=f"tags among the model's {names[:8]}",
                        found=f"{unknown[:5]}", fix="check the rows come from this model's task")
    ds = spec.tokenize(Dataset.from_dict({"tokens": tokens, "tags": tags}), tok, meta["max_length"], names, None)
    collate = spec.collator(tok)
    keep = [c for c in (*INPUT_NAMES, "label") if c in ds.column_names]
    feats = ds.select_columns(keep).to_list()
    order = np.argsort([-len(f["input_ids"]) for f in feats], kind="stable")
    for start in range(0, len(order), batch_size):
        batch = collate([feats[i] for i in order[start:start + batch_size]])
        y = batch.pop("labels").numpy()
        yield {k: v for k, v in batch.items() if k in INPUT_NAMES}, y


def encode_rows(rows: list[dict[str, Any]], meta: dict[str, Any], tok: Any, recipe_data: dict[str, Any],
                batch_size: int = PREDICT_BATCH_SIZE) -> list[Batch]:
    """Length-sorted, padded batches of the check rows: (model inputs, labels or None)."""
    spec = TASKS[meta["task"]]
    if spec.token_level:
        return list(_token_batches(rows, meta, tok, spec, batch_size))
    return list(_sequence_batches(rows, meta, tok, recipe_data, batch_size))


# --------------------------------------------------------------------------- checks

@torch.inference_mode()
def _outputs(model: Any, batches: list[Batch], token_level: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits per unit (a row; a real token for token tasks) and their labels (-100: none)."""
    zs, ys = [], []
    for inputs, y in batches:
        z = model(**inputs)["logits"].float().cpu().numpy()
        if token_level:
            mask = inputs["attention_mask"].numpy().astype(bool)
            zs.append(z[mask])
            ys.append(y[mask] if y is not None else None)
        else:
            zs.append(z)
            ys.append(y)
    labels = None if any(y is None for y in ys) or not ys else np.concatenate(ys)
    return (np.concatenate(zs) if zs else np.empty((0, 1), np.float32)), labels


def _decisions(z: np.ndarray, task: str, meta: dict[str, Any]) -> np.ndarray:
    if task == "multi_label":
        thr = meta.get("thresholds")
        names = meta.get("label_names") or [str(i) for i in range(z.shape[-1])]
        t = np.asarray([float(thr.get(n, 0.5)) for n in names]) if isinstance(thr, dict) else \
            (np.asarray(thr, dtype=np.float64) if thr is not None else 0.5)
        return (1.0 / (1.0 + np.exp(-z.astype(np.float64))) >= t).astype(np.int64)
    return z.argmax(-1)


def score(z: np.ndarray, y: np.ndarray | None, task: str, meta: dict[str, Any]) -> float | None:
    """The held-out score of the int8 check, in points: accuracy x 100 (labelled tokens for token
    classification, per-label decisions for multi-label), Pearson r x 100 for regression."""
    if y is None or len(y) == 0:
        return None
    if task == "regression":
        pred = z.reshape(-1).astype(np.float64)
        if pred.std() == 0 or np.std(y) == 0:
            return 0.0
        return float(np.corrcoef(pred, y.astype(np.float64))[0, 1] * 100)
    if TASKS[task].token_level:
        keep = y != -100
        return float((z.argmax(-1)[keep] == y[keep]).mean() * 100) if keep.any() else None
    if task == "multi_label":
        return float((_decisions(z, task, meta) == (y >= 0.5)).mean() * 100)
    return float((z.argmax(-1) == y).mean() * 100)


def compare(ref: np.ndarray, cand: np.ndarray, task: str, meta: dict[str, Any]) -> dict[str, Any]:
    """How far the ONNX outputs are from the torch model's: max |delta logit| and the share of
    identical predictions (None for regression)."""
    if len(ref) == 0:
        return {"max_abs_logit_delta": 0.0, "agreement": None}
    delta = float(np.abs(ref.astype(np.float64) - cand.astype(np.float64)).max())
    if task == "regression":
        return {"max_abs_logit_delta": delta, "agreement": None}
    a, b = _decisions(ref, task, meta), _decisions(cand, task, meta)
    same = (a == b).all(-1) if a.ndim > 1 else (a == b)
    return {"max_abs_logit_delta": delta, "agreement": float(same.mean())}


def _check_fp32(result: dict[str, Any], src: Path) -> None:
    delta, agree = result["max_abs_logit_delta"], result["agreement"]
    if delta > MAX_ABS_LOGIT_DELTA or (agree is not None and agree < 1.0):
        raise ModelError(f"ONNX export of {src}",
                         expected=f"the torch model's predictions on every check row and logits within "
                                  f"{MAX_ABS_LOGIT_DELTA:g}",
                         found=f"max |delta logit| {delta:.2e}, agreement "
                               f"{'n/a' if agree is None else f'{agree:.2%}'}",
                         fix="report this model/architecture; serve the torch folder meanwhile")


def _check_int8(torch_score: float | None, int8_score: float | None, src: Path, unit: str) -> float | None:
    if torch_score is None or int8_score is None:
        return None
    drop = torch_score - int8_score
    if drop > INT8_MAX_DROP_PT:
        raise ModelError(f"int8 quantization of {src}",
                         expected=f"held-out {unit} within {INT8_MAX_DROP_PT:g} pt of the torch model's "
                                  f"({torch_score:.2f})",
                         found=f"{int8_score:.2f}, {drop:.2f} pt lower",
                         fix="export without --quantize (fp32 ONNX), or check on more rows with --data FILE")
    return round(drop, 4)


# --------------------------------------------------------------------------- export

def _example(tok: Any, meta: dict[str, Any], token_level: bool) -> dict[str, torch.Tensor]:
    """Two rows of different lengths (padding in the trace, batch and sequence > 1, so neither axis
    is specialised to a constant)."""
    texts = ["the quick brown fox jumps over the lazy dog near the river bank", "hello world"]
    pairs = ["a second text for the pair", "ok"] if meta.get("text_pair") and not token_level else None
    enc = tok(texts, pairs, truncation=True, max_length=max(8, int(meta["max_length"])), padding=True,
              return_tensors="pt")
    return {k: enc[k] for k in INPUT_NAMES if k in enc}


def export_graph(model: nn.Module, example: dict[str, torch.Tensor], path: Path, opset: int) -> None:
    """Write ``model`` as an ONNX graph with dynamic batch and sequence axes.

    The dynamo exporter (torch.export), not the TorchScript tracer: tracing a transformers-5 BERT
    turns its data-dependent mask shortcuts (``if mask.all(): skip it``, the SDPA ``is_causal``
    choice) into constants of the example, which silently breaks padded batches of other shapes;
    torch.export captures them symbolically (or refuses), and is the exporter torch maintains."""
    import logging
    import warnings
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    shapes = {k: {0: batch, 1: seq} for k in example}
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    quiet = logging.getLogger("torch.onnx")  # "torchvision is not installed. Skipping ..." lines
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # exporter chatter (deprecations inside torch.export)
            program = torch.onnx.export(LogitsOnly(model).eval(), tuple(example.values()), None,
                                        input_names=list(example), output_names=["logits"], dynamo=True,
                                        dynamic_shapes=shapes, opset_version=opset, verbose=False)
    finally:
        quiet.setLevel(level)
    program.save(str(path), external_data=n_bytes > EXTERNAL_DATA_BYTES)


def _write_config(model: nn.Module, meta: dict[str, Any], src: Path, folder: Path) -> None:
    """config.json: the source folder's (else the model's), with the label names and problem type."""
    if (src / "config.json").is_file():
        cfg = json.loads((src / "config.json").read_text(encoding="utf-8"))
    else:
        config = getattr(model, "config", None) or getattr(getattr(model, "encoder", None), "config", None)
        cfg = config.to_dict() if config is not None else {}
    names = meta.get("label_names")
    spec = TASKS[meta["task"]]
    if names:
        cfg["id2label"] = {str(i): n for i, n in enumerate(names)}
        cfg["label2id"] = {n: i for i, n in enumerate(names)}
    if spec.problem_type:
        cfg["problem_type"] = spec.problem_type
    elif meta["task"] == "multi_label":
        cfg["problem_type"] = "multi_label_classification"
    (folder / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _prepare_out(src: Path, out: str | Path, overwrite: bool) -> Path:
    dst = Path(out).expanduser().resolve()
    if dst == src.resolve() or src.resolve() in dst.parents:
        raise ConfigError(f"export folder {dst}", expected="a folder outside the output folder it exports",
                          found="the output folder itself (or inside it)", fix="pass --out <another folder>")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())) and not overwrite:
        raise ConfigError(f"export folder {dst}", expected="a new or empty folder",
                          found="an existing folder with files" if dst.is_dir() else "a file",
                          fix="pass --overwrite (overwrite=True), or choose another --out")
    dst.parent.mkdir(parents=True, exist_ok=True)
    return dst


def refuse_unexportable(src: Path, meta: dict[str, Any]) -> None:
    """One-line errors for folders there is no single-task torch model to export from."""
    if meta.get("format") == ONNX_FORMAT:
        raise ModelError(f"folder {src}", expected="a training output folder (torch weights)",
                         found="an ONNX export already", fix="export the output folder it came from")
    if meta.get("task") == MULTI_TASK:
        raise ModelError(f"folder {src}", expected="a single-task output folder",
                         found=f"a multi-task model (tasks {list(meta.get('tasks', {}))})",
                         fix="export is not supported for multi-task folders yet; serve them with nlp_transfer.load")


def _quantize_checked(tmp: Path, batches: list[Any], ref: Any, labels: Any, meta: dict[str, Any],
                      torch_score: float, src: Path, unit: str) -> dict[str, Any]:
    """Replace ``tmp/model.onnx`` by its int8 version, score it on the check rows and refuse it when
    it drops more than ``INT8_MAX_DROP_PT`` below torch; the ``checks["int8"]`` record."""
    task, token_level = meta["task"], TASKS[meta["task"]].token_level
    quantize_int8(tmp / "model.onnx", tmp / "model.int8.onnx")
    for f in tmp.glob("model.onnx*"):
        f.unlink()
    os.replace(tmp / "model.int8.onnx", tmp / "model.onnx")
    z8 = _outputs(OnnxModel(tmp / "model.onnx"), batches, token_level)[0]
    int8_score = score(z8, labels, task, meta)
    drop = _check_int8(torch_score, int8_score, src, unit)
    return {**_rounded(compare(ref, z8, task, meta)), "score": _r(int8_score), "drop_pt": drop}


def _write_beside_graph(tmp: Path, model: Any, tok: Any, meta: dict[str, Any], src: Path, info: dict[str, Any]) -> None:
    """What loads next to ``model.onnx``: config (labels), tokenizer, the recipe, and the source's
    nlp_transfer.json marked as an ONNX export with the report ``info``."""
    _write_config(model, meta, src, tmp)
    tok.save_pretrained(tmp)
    if (src / "recipe.yaml").is_file():
        shutil.copy2(src / "recipe.yaml", tmp / "recipe.yaml")
    source_meta = json.loads((src / "nlp_transfer.json").read_text())
    (tmp / "nlp_transfer.json").write_text(json.dumps({**source_meta, "format": ONNX_FORMAT, "onnx": info},
                                                      indent=2) + "\n")


def export_onnx(output_dir: str | Path, out: str | Path, quantize: str | None = None, data: str | Path | None = None,
                *, opset: int = OPSET, overwrite: bool = False,
                batch_size: int = PREDICT_BATCH_SIZE) -> dict[str, Any]:
    """Export the output folder ``output_dir`` to ONNX in ``out`` (see the module doc); returns the
    report written under ``"onnx"`` in its nlp_transfer.json, plus ``out``, ``bytes`` and ``fp32_bytes``."""
    if quantize not in (None, *QUANTIZE_CHOICES):
        raise ConfigError("quantize", expected=f"one of {list(QUANTIZE_CHOICES)} or nothing (fp32)",
                          found=repr(quantize), fix="pass --quantize int8, or leave it out")
    src = resolve_output(output_dir)
    refuse_unexportable(src, json.loads((src / "nlp_transfer.json").read_text()))
    require_exporter()
    dst = _prepare_out(src, out, overwrite)
    model, tok, meta, src = rebuild_model(src, "cpu")
    task = meta["task"]
    spec = TASKS[task]
    recipe_data = {}
    if (src / "recipe.yaml").is_file():
        import yaml
        recipe_data = (yaml.safe_load((src / "recipe.yaml").read_text()) or {}).get("data") or {}
    rows, source = check_rows(src, meta, data)
    if not rows:
        raise DataError(f"check rows ({source})", expected="at least one row", found="none",
                        fix="pass --data FILE with labelled rows")
    batches = encode_rows(rows, meta, tok, recipe_data, batch_size)
    ref, labels = _outputs(model, batches, spec.token_level)
    if quantize and labels is None:
        raise DataError(f"check rows ({source})", expected="a label on every row (the int8 accuracy check)",
                        found="rows without labels", fix="pass --data FILE with labelled rows")
    unit = "Pearson r x 100" if task == "regression" else ("labelled-token accuracy" if spec.token_level else
                                                           "per-label accuracy" if task == "multi_label" else "accuracy")
    tmp = Path(tempfile.mkdtemp(prefix=f".partial-{dst.name}-", dir=dst.parent))
    try:
        example = _example(tok, meta, spec.token_level)
        export_graph(model, example, tmp / "model.onnx", opset)
        fp32_bytes = _onnx_bytes(tmp)
        z32 = _outputs(OnnxModel(tmp / "model.onnx"), batches, spec.token_level)[0]
        fp32 = compare(ref, z32, task, meta)
        _check_fp32(fp32, src)
        torch_score = score(ref, labels, task, meta)
        checks: dict[str, Any] = {"rows": len(rows), "source": source, "score": unit,
                                  "torch": {"score": _r(torch_score)},
                                  "fp32": {**_rounded(fp32), "score": _r(score(z32, labels, task, meta))},
                                  "tolerance": {"max_abs_logit_delta": MAX_ABS_LOGIT_DELTA}}
        if quantize == "int8":
            checks["int8"] = _quantize_checked(tmp, batches, ref, labels, meta, torch_score, src, unit)
            checks["tolerance"]["int8_max_drop_pt"] = INT8_MAX_DROP_PT
        info = {"opset": opset, "quantized": quantize,
                **({"quantization": {"weights": "QInt8", **INT8_OPTIONS}} if quantize else {}), "inputs": list(example), "outputs": ["logits"],
                "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
                "exported_from": str(src), "checks": checks}
        _write_beside_graph(tmp, model, tok, meta, src, info)
        size = _onnx_bytes(tmp)
        if dst.exists():
            shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**info, "out": str(dst), "bytes": size, "fp32_bytes": fp32_bytes}


def _onnx_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("model.onnx*"))


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def _rounded(d: dict[str, Any]) -> dict[str, Any]:
    return {"max_abs_logit_delta": float(f"{d['max_abs_logit_delta']:.3e}"), "agreement": d["agreement"]}
