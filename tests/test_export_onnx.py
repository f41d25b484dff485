"""ONNX export (``nlp-transfer export --format onnx``, ``train(...).export``): the graph matches the torch
model for every strategy and task kind on shapes other than the export example's, ``load()`` serves it
with the torch predictor's outputs, int8 shrinks the file and passes (or refuses) its accuracy check,
and bad input fails in one line."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from conftest import recipe_kwargs  # noqa: E402
from nlp_transfer import Recipe, load, train  # noqa: E402
from nlp_transfer.errors import ConfigError, DataError, EnvironmentSetupError, ModelError  # noqa: E402
from nlp_transfer.export import export  # noqa: E402
from nlp_transfer.export import onnx as onnx_export  # noqa: E402
from nlp_transfer.predict import OnnxModel  # noqa: E402
from nlp_transfer.predict.rebuild import rebuild_model  # noqa: E402
from toy import make_rows, write_csv  # noqa: E402
from toy_tasks import write_conll, write_multilabel_csv  # noqa: E402

#: Batches of sizes and lengths other than the export example's (2 rows).
TEXTS = ["goal", "bank stock price money today the market report says it is big news for the trade",
         "robot code chip data", "the coach says win", "a", "tax profit of the new phone software and the internet"]
PAIRS = ["match team", "computer", "stock tax price", "league player goal score", "the", "data"]
NER_TEXTS = ["the coach and bank market in zq today", "coach", "zq zq bank market report says the coach was big"]

#: case -> (strategy, task, data kind, extra recipe sections): every strategy (frozen: mean pooling; lora:
#: adapters merged) and every task kind, in as few exports as that takes (each costs ~4 s on 2 cores).
CASES: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "full": ("full", "sequence_classification", "topics", {"train": {"epochs": 4}}),
    "frozen_multi_label_no_token_types": ("frozen", "multi_label", "multi_label", {"data": {"label_column": "labels"}}),
    "lora_pair": ("lora", "sequence_classification", "pairs", {"data": {"text_column": "s1", "text_pair_column": "s2"},
                                                              "model": {"pooling": "cls"}}),
    "partial_regression": ("partial", "regression", "values", {}),
    "contrastive": ("contrastive", "sequence_classification", "topics",
                    {"strategy": {"name": "contrastive", "pair_rounds": 1}, "train": {"epochs": 1}}),
    "ner": ("full", "token_classification", "conll", {"train": {"epochs": 2}}),
}


def _data(kind: str, folder: Path) -> Path:
    import random
    if kind == "topics":
        return write_csv(folder / "topics.csv", make_rows(150))
    if kind == "values":
        return write_csv(folder / "values.csv", [{"text": " ".join(["goal"] * (i % 5 + 1)) + f" w {i}",
                                                  "label": float(i % 5)} for i in range(80)])
    if kind == "multi_label":
        return write_multilabel_csv(folder / "ml.csv", n=150)
    if kind == "conll":
        return write_conll(folder / "conll", {"train": 80, "dev": 30, "test": 10})
    from toy import TOPICS
    rng, topics, rows = random.Random(0), sorted(TOPICS), []
    for _ in range(120):
        a, b = rng.choice(topics), rng.choice(topics)
        rows.append({"s1": " ".join(rng.sample(TOPICS[a], 3)), "s2": " ".join(rng.sample(TOPICS[b], 2)),
                     "label": "same" if a == b else "different"})
    return write_csv(folder / "pairs.csv", rows)


def _no_token_types(tiny_model: Path, folder: Path) -> Path:
    """The tiny BERT whose tokenizer makes no token_type_ids (as RoBERTa-like ones)."""
    shutil.copytree(tiny_model, folder)
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model_input_names"] = ["input_ids", "attention_mask"]
    cfg_path.write_text(json.dumps(cfg))
    return folder


class Runs:
    """Trains each case once, exports it once (fp32, through ``train(...).export``), on demand."""

    def __init__(self, tiny_model: Path, root: Path) -> None:
        self.tiny, self.root = tiny_model, root
        self.results: dict[str, Any] = {}
        self.exports: dict[str, tuple[Path, dict[str, Any]]] = {}

    def result(self, case: str) -> Any:
        if case not in self.results:
            strategy, task, kind, sections = CASES[case]
            model = _no_token_types(self.tiny, self.root / "tiny_no_tt") if "no_token_types" in case else self.tiny
            kw = recipe_kwargs(model, _data(kind, self.root / f"data_{case}"), self.root / case, strategy,
                               **{"train": {"epochs": 1}, **sections})
            kw["task"] = task
            self.results[case] = train(Recipe(**kw))
        return self.results[case]

    def onnx(self, case: str) -> tuple[Path, dict[str, Any]]:
        if case not in self.exports:
            out = self.root / f"{case}-onnx"
            self.exports[case] = (out, self.result(case).export(out=out))
        return self.exports[case]


@pytest.fixture(scope="module")
def runs(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(tiny_model, tmp_path_factory.mktemp("export"))


def _texts(case: str) -> tuple[list[str], list[str] | None]:
    if case == "ner":
        return NER_TEXTS, None
    return TEXTS, (PAIRS if case == "lora_pair" else None)


def _same(a: Any, b: Any, path: str = "") -> None:
    """Predictions equal: labels/strings/ints exactly, scores within 1e-4."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, abs=1e-4), path
    else:
        assert a == b, path


# --------------------------------------------------------------------------- every strategy, every task kind

@pytest.mark.parametrize("case", list(CASES))
def test_graph_matches_torch_on_other_batch_and_sequence_shapes(runs: Runs, case: str) -> None:
    out, report = runs.onnx(case)
    src = runs.result(case).output_dir
    model, tok, meta, _ = rebuild_model(src, "cpu")
    session = OnnxModel(out / "model.onnx")
    expected_inputs = ["input_ids", "attention_mask"] + ([] if "no_token_types" in case else ["token_type_ids"])
    assert session.input_names == expected_inputs == report["inputs"]
    shapes = {i.name: i.shape for i in session.session.get_inputs()}
    assert all(isinstance(d, str) for s in shapes.values() for d in s)  # batch and sequence axes symbolic
    texts, pairs = _texts(case)
    for lo, hi in ((0, 1), (0, len(texts)), (1, 3)):  # batch 1, all, 2 of other lengths
        enc = tok(texts[lo:hi], pairs[lo:hi] if pairs else None, padding=True, truncation=True,
                  max_length=meta["max_length"], return_tensors="pt")
        enc = {k: v for k, v in enc.items() if k in expected_inputs}
        with torch.inference_mode():
            want = model(**enc)["logits"].numpy()
        got = session(**enc)["logits"].numpy()
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-3
    # what the export checked and recorded
    saved = json.loads((out / "nlp_transfer.json").read_text())
    source = json.loads((src / "nlp_transfer.json").read_text())
    assert saved["format"] == "onnx" and {k: saved[k] for k in source} == source
    assert saved["onnx"]["quantized"] is None and saved["onnx"]["opset"] == onnx_export.OPSET
    checks = saved["onnx"]["checks"]
    assert checks == report["checks"] and checks["rows"] > 0
    assert checks["fp32"]["max_abs_logit_delta"] <= 1e-3
    assert checks["fp32"]["agreement"] == (None if meta["task"] == "regression" else 1.0)
    assert checks["torch"]["score"] is not None  # fp32 scores the same (regression's Pearson r to rounding)
    assert checks["fp32"]["score"] == pytest.approx(checks["torch"]["score"], abs=1e-3)
    config = json.loads((out / "config.json").read_text())
    if meta.get("label_names"):
        assert config["id2label"] == {str(i): n for i, n in enumerate(meta["label_names"])}
        assert config["label2id"] == {n: i for i, n in enumerate(meta["label_names"])}
    assert (out / "tokenizer.json").is_file() and (out / "tokenizer_config.json").is_file()
    assert not list(out.parent.glob(".partial-*"))


@pytest.mark.parametrize("case", list(CASES))
def test_load_serves_the_export_like_the_torch_folder(runs: Runs, case: str) -> None:
    out, _ = runs.onnx(case)
    torch_p, onnx_p = load(runs.result(case).output_dir), load(out)
    assert isinstance(onnx_p.model, OnnxModel)
    texts, pairs = _texts(case)
    for bs in (2, 64):  # several length-sorted batches, and one
        _same(torch_p(texts, pairs, batch_size=bs), onnx_p(texts, pairs, batch_size=bs))
    if onnx_p.meta["task"] in ("sequence_classification", "multi_label"):
        assert np.abs(torch_p.predict_proba(texts, pairs) - onnx_p.predict_proba(texts, pairs)).max() <= 1e-4
    if onnx_p.meta["task"] == "sequence_classification":
        _same(torch_p(texts, pairs, top_k=2), onnx_p(texts, pairs, top_k=2))


# --------------------------------------------------------------------------- int8

def _reuse_graph(runs: Runs, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The int8 tests export the "full" folder again: its fp32 graph is the one already exported
    (and checked above), copied instead of re-traced (~4 s saved per test)."""
    fp32_dir, _ = runs.onnx("full")
    monkeypatch.setattr(onnx_export, "export_graph", lambda model, example, path, opset:
                        shutil.copy(fp32_dir / "model.onnx", path))
    return fp32_dir


def test_int8_via_cli_is_smaller_and_passes_its_check_on_saved_held_out_rows(
        runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from nlp_transfer.cli import main
    fp32_dir = _reuse_graph(runs, monkeypatch)
    src = tmp_path / "full"
    shutil.copytree(runs.result("full").output_dir, src)
    # held_out.jsonl as training writes it (label ids), 300 rows: one flipped prediction costs 0.33 pt
    rows = [{"text": r["text"], "label": ["finance", "sport", "tech"].index(r["label"])} for r in make_rows(300, 7)]
    (src / "held_out.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dst = tmp_path / "int8"
    capsys.readouterr()  # the module's training printout, when this test runs first
    assert main(["export", str(src), "--format", "onnx", "--quantize", "int8", "--out", str(dst)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["quantized"] == "int8" and report["out"] == str(dst.resolve())
    assert (dst / "model.onnx").stat().st_size < (fp32_dir / "model.onnx").stat().st_size
    assert report["bytes"] < report["fp32_bytes"]
    checks = json.loads((dst / "nlp_transfer.json").read_text())["onnx"]["checks"]
    assert checks == report["checks"] and checks["source"] == "held_out.jsonl" and checks["rows"] == 300
    assert checks["int8"]["drop_pt"] <= onnx_export.INT8_MAX_DROP_PT
    assert checks["int8"]["score"] == pytest.approx(checks["torch"]["score"] - checks["int8"]["drop_pt"], abs=1e-3)
    assert checks["tolerance"]["int8_max_drop_pt"] == onnx_export.INT8_MAX_DROP_PT
    labels = [p["label"] for p in load(dst)(TEXTS)]
    assert sum(a == b["label"] for a, b in zip(labels, load(src)(TEXTS))) >= len(TEXTS) - 1
    # activations are quantized per batch: the check ran the batches serving forms, so its score is
    # exactly the served model's accuracy on those rows
    served = [p["label"] for p in load(dst)([r["text"] for r in rows])]
    names = ["finance", "sport", "tech"]
    assert checks["int8"]["score"] == pytest.approx(
        100 * np.mean([names.index(p) == r["label"] for p, r in zip(served, rows)]), abs=1e-3)
    # MatMul weights int8 per output channel; the embedding tables stay fp32
    import onnx
    graph = onnx.load(str(dst / "model.onnx")).graph
    assert {n.op_type for n in graph.node} >= {"MatMulInteger", "DynamicQuantizeLinear"}
    weights = {t.name: t for t in graph.initializer}
    assert all(weights[n.input[0]].data_type == onnx.TensorProto.FLOAT for n in graph.node
               if n.op_type == "Gather" and n.input[0] in weights and len(weights[n.input[0]].dims) == 2)
    quantized = [n.input[1] for n in graph.node if n.op_type == "MatMulInteger"]
    scales = [weights[w.removesuffix("_quantized") + "_scale"] for w in quantized]
    assert scales and all(len(t.dims) == 1 and t.dims[0] > 1 for t in scales)  # one scale per channel
    assert report["quantization"] == {"weights": "QInt8", **onnx_export.INT8_OPTIONS}


REAL_QUANTIZE = onnx_export.quantize_int8


def _negating_quantizer(src: Path, dst: Path) -> None:
    """The real int8 quantizer, then logits negated: argmax becomes argmin (accuracy collapses)."""
    import onnx
    REAL_QUANTIZE(src, dst)
    m = onnx.load(str(dst))
    for node in m.graph.node:
        node.output[:] = ["logits_raw" if o == "logits" else o for o in node.output]
    m.graph.node.append(onnx.helper.make_node("Neg", ["logits_raw"], ["logits"]))
    onnx.save(m, str(dst))


def test_int8_that_loses_accuracy_is_refused_and_writes_nothing(runs: Runs, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _reuse_graph(runs, monkeypatch)
    monkeypatch.setattr(onnx_export, "quantize_int8", _negating_quantizer)
    rows = [{"text": r["text"], "label": r["label"]} for r in make_rows(45, 3)]  # label names, not ids
    data = write_csv(tmp_path / "check.csv", rows)
    dst = tmp_path / "refused"
    with pytest.raises(ModelError, match=r"^int8 quantization of .*: expected held-out accuracy within 0\.5 pt of "
                                         r"the torch model's \(\d+\.\d\d\), found \d+\.\d\d, \d+\.\d\d pt lower\. "
                                         r"Fix: export without --quantize") as e:
        export(runs.result("full").output_dir, out=dst, quantize="int8", data=data)
    assert "\n" not in str(e.value)
    assert not dst.exists() and not list(tmp_path.glob(".partial-*"))


# --------------------------------------------------------------------------- bad input, one line each

def test_exporting_a_folder_that_is_not_an_output_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ModelError, match=r"^folder .*: expected an nlp_transfer output folder \(with "
                                         r"nlp_transfer.json\), found files \['notes.txt'\]\. Fix: pass the output.dir"):
        export(tmp_path, out=tmp_path.parent / "x-onnx")


def test_unknown_format_and_quantization(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^export format: expected one of \['onnx', 'transformers'\], "
                                          r"found 'onxx' \(did you mean 'onnx'\?\)\. Fix: pass --format onnx"):
        export(tmp_path, format="onxx")
    with pytest.raises(ConfigError, match=r"^quantize: expected one of \['int8'\] or nothing \(fp32\), found 'int4'"):
        export(tmp_path, quantize="int4")


def test_multi_task_and_onnx_folders_are_refused(tmp_path: Path) -> None:
    multi = tmp_path / "multi"
    multi.mkdir()
    (multi / "nlp_transfer.json").write_text(json.dumps({"task": "multi_task", "tasks": {"a": {}, "b": {}}}))
    with pytest.raises(ModelError, match=r"^folder .*multi: expected a single-task output folder, found a "
                                         r"multi-task model \(tasks \['a', 'b'\]\)\. Fix: export is not supported"):
        export(multi)
    again = tmp_path / "onnx"
    again.mkdir()
    (again / "nlp_transfer.json").write_text(json.dumps({"task": "regression", "format": "onnx"}))
    with pytest.raises(ModelError, match=r"expected a training output folder \(torch weights\), found an ONNX export"):
        export(again)


def test_missing_onnxruntime_names_the_extra(runs: Runs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture) -> None:
    from nlp_transfer.cli import main
    out, _ = runs.onnx("full")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    with pytest.raises(EnvironmentSetupError, match=r'^export --format onnx: expected the onnxruntime package, '
                                                    r'found it is not installed\. Fix: pip install "nlp_transfer\[onnx\]"$'):
        export(runs.result("full").output_dir, out=tmp_path / "o")
    with pytest.raises(EnvironmentSetupError, match=r'^ONNX model .*: expected the onnxruntime package, found it is '
                                                    r'not installed\. Fix: pip install "nlp_transfer\[onnx\]"$'):
        load(out)
    assert main(["export", str(runs.result("full").output_dir), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: export --format onnx: expected the onnxruntime package")
    assert not (tmp_path / "o").exists()


def test_existing_output_and_bad_check_rows(runs: Runs, tmp_path: Path) -> None:
    src = runs.result("full").output_dir
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"^export folder .*busy: expected a new or empty folder, found an existing "
                                          r"folder with files\. Fix: pass --overwrite"):
        export(src, out=busy)
    with pytest.raises(ConfigError, match=r"expected a folder outside the output folder it exports"):
        export(src, out=src / "onnx")
    bad = write_csv(tmp_path / "bad.csv", [{"sentence": "goal", "y": "sport"}])
    with pytest.raises(DataError, match=r"^check row 0: expected a 'text' column \(string\), found columns "
                                        r"\['sentence', 'y'\]"):
        export(src, out=tmp_path / "o", data=bad)
    assert not (tmp_path / "o").exists() and (busy / "keep.txt").is_file()


def test_transformers_format_takes_no_onnx_options_and_default_out(tmp_path: Path) -> None:
    from nlp_transfer.export import default_out
    with pytest.raises(ConfigError, match=r"^export --format transformers: expected no --quantize / --data / ONNX "
                                          r"options, found quantize='int8'"):
        export(tmp_path, format="transformers", quantize="int8")
    assert default_out(tmp_path / "run", "onnx", "int8") == tmp_path / "run-onnx-int8"
    assert default_out(tmp_path / "run", "transformers") == tmp_path / "run-transformers"


