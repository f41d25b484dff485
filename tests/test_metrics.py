"""nlp_transfer.metrics: our offline evaluate modules against hand-computed / sklearn / scipy values.

Hand-computed references used below:

- classification, preds [0, 1, 1, 0] vs refs [0, 1, 0, 0]:
  accuracy 3/4; class 0: P = 2/2, R = 2/3, F1 = 0.8; class 1: P = 1/2, R = 1/1, F1 = 2/3
  -> macro P = 0.75, macro R = 5/6, macro F1 = 11/15.
- MCC, preds [1, 0, 1, 1] vs refs [1, 0, 0, 1]: TP 2, TN 1, FP 1, FN 0 -> 2 / sqrt(12).
- multilabel, preds [[1,0,1],[0,1,0]] vs refs [[1,0,0],[0,1,0]]: micro TP 2, FP 1, FN 0 ->
  F1 0.8; per-label F1 (1, 1, 0) -> macro 2/3; per-example F1 (2/3, 1) -> samples 5/6;
  subset accuracy 1/2.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

evaluate = pytest.importorskip("evaluate")
sklearn_metrics = pytest.importorskip("sklearn.metrics")
scipy_stats = pytest.importorskip("scipy.stats")
pytest.importorskip("seqeval")

from nlp_transfer import metrics as M  # noqa: E402
from nlp_transfer.errors import ConfigError, DataError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLS = ["accuracy", "f1", "precision", "recall", "matthews_correlation"]

P4, R4 = [0, 1, 1, 0], [0, 1, 0, 0]


@pytest.fixture(scope="module")
def rng_labels() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    refs = rng.integers(0, 4, 300)
    preds = np.where(rng.random(300) < 0.6, refs, rng.integers(0, 4, 300))
    return preds, refs


# ----------------------------------------------------------------------- layout / loading

def test_every_available_metric_is_a_folder_with_a_same_named_script() -> None:
    for name in M.AVAILABLE:
        folder = Path(M.metric_path(name))
        assert folder.is_dir() and (folder / f"{name}.py").is_file()
        assert folder.parent == ROOT / "nlp_transfer" / "metrics"


@pytest.mark.parametrize("name", M.AVAILABLE)
def test_evaluate_load_by_folder_has_documented_info(name: str) -> None:
    module = evaluate.load(M.metric_path(name))
    assert isinstance(module, evaluate.EvaluationModule)
    assert module.name == name
    info = module.info
    assert set(info.features) == {"predictions", "references"}
    assert len(info.description.strip()) > 80 and "@" in info.citation and "Args:" in info.inputs_description


def test_evaluate_load_by_script_path() -> None:
    module = evaluate.load(str(Path(M.metric_path("f1")) / "f1.py"))
    assert module.compute(predictions=P4, references=R4) == {"f1": pytest.approx(11 / 15)}


def test_aliases_and_case_resolve_to_our_modules() -> None:
    assert M.load_metric("mcc").name == "matthews_correlation"
    assert M.load_metric("Pearson").name == "pearsonr"
    assert M.metric_path("F1") == M.metric_path("f1")


def test_load_metric_keeps_data_in_memory_by_default() -> None:
    module = M.load_metric("accuracy")
    assert module.keep_in_memory is True
    module.add_batch(predictions=[0, 1], references=[0, 0])
    assert module.compute() == {"accuracy": 0.5}


def test_unknown_metric_names_the_available_ones_and_the_closest(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no Hub attempt: fails at once
    with pytest.raises(ConfigError) as err:
        M.load_metric("acuracy")
    msg = str(err.value)
    assert "metric 'acuracy'" in msg
    for name in M.AVAILABLE:
        assert name in msg
    assert "Fix: use 'accuracy'" in msg
    with pytest.raises(ConfigError, match="Fix: use 'spearmanr'"):
        M.compute(["spearman_rho"], [1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ConfigError, match="not shipped"):
        M.metric_path("bleu")


def test_loading_works_offline_with_a_fresh_hf_home(tmp_path: Path) -> None:
    """A separate interpreter, HF_HOME in an empty temp dir, every offline flag set and, where
    ``unshare -rn`` is allowed, no network at all."""
    script = r"""
import json, sys
import evaluate
from nlp_transfer import metrics as M
out = {}
for name in M.AVAILABLE:
    out[name] = evaluate.load(M.metric_path(name)).name
out["f1_by_file"] = evaluate.load(M.metric_path("f1") + "/f1.py").compute(
    predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])["f1"]
out["combined"] = M.combine(["accuracy", "f1"]).compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])
out["compute"] = M.compute(["pearsonr", "spearmanr"], [1.0, 2.0, 3.0, 5.0], [1.0, 2.0, 3.0, 4.0])
try:
    M.load_metric("bleu")
except Exception as e:
    out["bleu_error"] = type(e).__name__
print("RESULT" + json.dumps(out))
"""
    home = tmp_path / "hf_home"
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_EVALUATE_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for var in ("HF_MODULES_CACHE", "HF_METRICS_CACHE", "HF_EVALUATE_CACHE", "HF_DATASETS_CACHE"):
        env.pop(var, None)
    cmd = [sys.executable, "-c", script]
    if shutil.which("unshare") and subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0:
        cmd = ["unshare", "-rn", *cmd]  # no network namespace access at all
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    out = json.loads(line[len("RESULT"):])
    assert all(out[name] == name for name in M.AVAILABLE)
    assert out["f1_by_file"] == pytest.approx(11 / 15)
    assert out["combined"] == {"accuracy": 0.75, "f1": pytest.approx(11 / 15)}
    assert out["compute"]["spearmanr"] == 1.0
    assert out["bleu_error"] == "ConfigError"
    # evaluate's module copies went into the fresh HF_HOME; in-memory metrics wrote no Arrow files
    assert list((home / "modules" / "evaluate_modules" / "metrics").glob("accuracy/*/accuracy.py"))
    assert not list(home.rglob("*.arrow"))


# ----------------------------------------------------------------------- classification

def test_classification_hand_values() -> None:
    assert M.compute(CLS[:4], P4, R4) == {
        "accuracy": 0.75, "f1": pytest.approx(11 / 15), "precision": 0.75, "recall": pytest.approx(5 / 6)}
    mcc = M.load_metric("matthews_correlation").compute(predictions=[1, 0, 1, 1], references=[1, 0, 0, 1])
    assert mcc["matthews_correlation"] == pytest.approx(2 / math.sqrt(12))


@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
def test_f1_precision_recall_match_sklearn(rng_labels, average: str) -> None:
    preds, refs = rng_labels
    for name, fn in [("f1", sklearn_metrics.f1_score), ("precision", sklearn_metrics.precision_score),
                     ("recall", sklearn_metrics.recall_score)]:
        got = M.load_metric(name).compute(predictions=preds, references=refs, average=average)[name]
        assert got == pytest.approx(fn(refs, preds, average=average), abs=1e-12)


def test_f1_defaults_to_macro_and_supports_binary_per_class_labels(rng_labels) -> None:
    preds, refs = rng_labels
    f1 = M.load_metric("f1")
    assert f1.compute(predictions=preds, references=refs)["f1"] == pytest.approx(
        sklearn_metrics.f1_score(refs, preds, average="macro"))
    per_class = f1.compute(predictions=preds, references=refs, average=None)["f1"]
    assert per_class == pytest.approx(list(sklearn_metrics.f1_score(refs, preds, average=None)))
    subset = f1.compute(predictions=preds, references=refs, average=None, labels=[3, 1])["f1"]
    assert subset == pytest.approx([per_class[3], per_class[1]])
    binary = f1.compute(predictions=[1, 1, 0, 0], references=[1, 0, 0, 0], average="binary", pos_label=0)
    assert binary["f1"] == pytest.approx(sklearn_metrics.f1_score([1, 0, 0, 0], [1, 1, 0, 0], pos_label=0))


def test_zero_division_value_is_used_for_a_never_predicted_class() -> None:
    # class 2 is never predicted: its precision is 0/0
    precision = M.load_metric("precision")
    kw = dict(predictions=[0, 1, 0], references=[0, 1, 2], average=None)
    assert precision.compute(**kw)["precision"] == pytest.approx([0.5, 1.0, 0.0])
    assert precision.compute(**kw, zero_division=1.0)["precision"] == pytest.approx([0.5, 1.0, 1.0])


def test_accuracy_and_mcc_match_sklearn(rng_labels) -> None:
    preds, refs = rng_labels
    acc = M.load_metric("accuracy").compute(predictions=preds, references=refs)
    assert acc["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(refs, preds))
    count = M.load_metric("accuracy").compute(predictions=preds, references=refs, normalize=False)
    assert count["accuracy"] == float((preds == refs).sum())
    mcc = M.load_metric("matthews_correlation").compute(predictions=preds, references=refs)
    assert mcc["matthews_correlation"] == pytest.approx(sklearn_metrics.matthews_corrcoef(refs, preds))


def test_multilabel_config_of_f1_takes_indicator_rows() -> None:
    f1 = M.load_metric("f1", config_name="multilabel")
    got = f1.compute(predictions=[[1, 0, 1], [0, 1, 0]], references=[[1, 0, 0], [0, 1, 0]], average="micro")
    assert got["f1"] == pytest.approx(0.8)


# ----------------------------------------------------------------------- regression

def test_correlations_match_scipy_in_float64() -> None:
    rng = np.random.default_rng(1)
    preds = rng.normal(size=200)
    refs = preds + rng.normal(scale=0.5, size=200)
    pear = M.load_metric("pearsonr").compute(predictions=preds, references=refs, return_pvalue=True)
    expected = scipy_stats.pearsonr(refs, preds)
    assert pear["pearsonr"] == pytest.approx(expected.statistic, abs=1e-12)  # no float32 round trip
    assert pear["pearsonr_pvalue"] == pytest.approx(expected.pvalue, rel=1e-6)
    assert pear["pearsonr"] == pytest.approx(np.corrcoef(preds, refs)[0, 1], abs=1e-12)
    spear = M.load_metric("spearmanr").compute(predictions=preds, references=refs)
    assert spear == {"spearmanr": pytest.approx(scipy_stats.spearmanr(refs, preds).statistic, abs=1e-12)}


def test_spearman_is_one_for_monotonic_and_constant_input_is_nan() -> None:
    got = M.compute(["pearsonr", "spearmanr"], [1.0, 2.0, 3.0, 50.0], [1.0, 2.0, 3.0, 4.0])
    assert got["spearmanr"] == 1.0 and got["pearsonr"] < 0.9  # ranks agree, values are not linear
    flat = M.compute(["pearsonr"], [0.5, 0.5, 0.5], [1.0, 2.0, 3.0])
    assert math.isnan(flat["pearsonr"])


# ----------------------------------------------------------------------- seqeval

SEQ_REFS = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC"], ["B-ORG", "O", "B-PER"]]
SEQ_PREDS = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["B-ORG", "O", "B-LOC"]]


def test_seqeval_overall_and_per_type_scores() -> None:
    # gold: PER x2, LOC x1, ORG x1; predicted: PER(right), LOC(span cut: wrong), ORG(right), LOC(wrong)
    out = M.load_metric("seqeval").compute(predictions=SEQ_PREDS, references=SEQ_REFS)
    assert out["overall_precision"] == 0.5 and out["overall_recall"] == 0.5 and out["overall_f1"] == 0.5
    assert out["overall_accuracy"] == 0.75  # 6 of 8 tokens
    assert set(out) == {"PER", "LOC", "ORG", "overall_precision", "overall_recall", "overall_f1",
                        "overall_accuracy"}
    assert out["PER"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "number": 2}
    assert out["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "number": 1}
    assert out["ORG"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "number": 1}


def test_seqeval_strict_mode_rejects_ill_formed_iob2_spans() -> None:
    refs, preds = [["B-PER", "I-PER", "O"]], [["I-PER", "I-PER", "O"]]
    seqeval = M.load_metric("seqeval")
    assert seqeval.compute(predictions=preds, references=refs)["overall_f1"] == 1.0  # conlleval-lenient
    strict = seqeval.compute(predictions=preds, references=refs, mode="strict", scheme="IOB2")
    assert strict["overall_f1"] == 0.0
    assert seqeval.compute(predictions=preds, references=refs, mode="strict")["overall_f1"] == 0.0  # IOB2 default


def test_seqeval_flattened_by_compute_and_length_mismatch_is_explained() -> None:
    flat = M.compute("seqeval", SEQ_PREDS, SEQ_REFS)
    assert flat["overall_f1"] == 0.5 and flat["PER_recall"] == 0.5 and flat["ORG_number"] == 1.0
    assert all(isinstance(v, float) for v in flat.values())
    with pytest.raises(ValueError, match="sequence 0 has 2 predicted tags but 3"):
        M.compute("seqeval", [["O", "O"]], [["O", "O", "B-PER"]])
    with pytest.raises(ValueError, match="scheme must be one of"):
        M.compute("seqeval", [["O"]], [["O"]], mode="strict", scheme="BIO")


# ----------------------------------------------------------------------- multilabel

def test_multilabel_hand_values_and_label_names() -> None:
    out = M.load_metric("multilabel").compute(
        predictions=[[1, 0, 1], [0, 1, 0]], references=[[1, 0, 0], [0, 1, 0]],
        label_names=["joy", "anger", "fear"])
    assert out["micro_f1"] == pytest.approx(0.8)
    assert out["macro_f1"] == pytest.approx(2 / 3)
    assert out["samples_f1"] == pytest.approx(5 / 6)
    assert out["subset_accuracy"] == 0.5
    assert out["per_label_f1"] == {"joy": 1.0, "anger": 1.0, "fear": 0.0}
    flat = M.compute("multilabel", np.array([[1, 0, 1], [0, 1, 0]]), np.array([[1, 0, 0], [0, 1, 0]]))
    assert flat["per_label_f1_0"] == 1.0 and flat["per_label_f1_2"] == 0.0 and flat["micro_f1"] == pytest.approx(0.8)


def test_multilabel_matches_sklearn_on_random_matrices() -> None:
    rng = np.random.default_rng(2)
    refs = (rng.random((50, 6)) < 0.3).astype(int)
    preds = np.where(rng.random((50, 6)) < 0.8, refs, 1 - refs)
    out = M.compute("multilabel", preds, refs)
    for avg in ("micro", "macro", "samples"):
        assert out[f"{avg}_f1"] == pytest.approx(
            sklearn_metrics.f1_score(refs, preds, average=avg, zero_division=0.0), abs=1e-12)
    assert out["subset_accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(refs, preds))


def test_multilabel_rejects_non_binary_or_mismatched_input() -> None:
    with pytest.raises(ValueError, match="only 0/1"):
        M.compute("multilabel", [[0.2, 0.9]], [[0, 1]])
    with pytest.raises(ValueError, match="same shape"):
        M.compute("multilabel", [[0, 1, 1]], [[0, 1]])
    with pytest.raises(ValueError, match="label_names"):
        M.compute("multilabel", [[0, 1]], [[0, 1]], label_names=["a"])


# ----------------------------------------------------------------------- combine / compute

def test_combine_classification_metrics_forwards_shared_kwargs(rng_labels) -> None:
    preds, refs = rng_labels
    combined = M.combine(CLS)
    assert isinstance(combined, evaluate.CombinedEvaluations)
    out = combined.compute(predictions=preds, references=refs, average="weighted")
    assert set(out) == set(CLS)
    assert out["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(refs, preds))
    assert out["f1"] == pytest.approx(sklearn_metrics.f1_score(refs, preds, average="weighted"))
    assert out["recall"] == pytest.approx(sklearn_metrics.recall_score(refs, preds, average="weighted"))
    assert out["matthews_correlation"] == pytest.approx(sklearn_metrics.matthews_corrcoef(refs, preds))
    # evaluate.combine also accepts the folder paths directly
    direct = evaluate.combine([M.metric_path(n) for n in CLS]).compute(predictions=preds, references=refs)
    assert direct["f1"] == pytest.approx(sklearn_metrics.f1_score(refs, preds, average="macro"))


def test_combine_correlations() -> None:
    out = M.combine(["pearsonr", "spearmanr"]).compute(predictions=[0.1, 0.5, 0.4], references=[0.0, 1.0, 2.0])
    assert out == {"pearsonr": pytest.approx(scipy_stats.pearsonr([0.0, 1.0, 2.0], [0.1, 0.5, 0.4]).statistic),
                   "spearmanr": pytest.approx(0.5)}


def test_compute_matches_the_full_evaluate_path(rng_labels) -> None:
    preds, refs = rng_labels
    fast = M.compute(CLS, preds, refs)
    slow = M.combine(CLS).compute(predictions=preds, references=refs)
    assert fast == slow and list(fast) == CLS


def test_compute_routes_kwargs_to_the_metrics_that_take_them(rng_labels) -> None:
    preds, refs = rng_labels
    macro = M.compute(["accuracy", "f1"], preds, refs)
    weighted = M.compute(["accuracy", "f1"], preds, refs, average="weighted")
    assert weighted["accuracy"] == macro["accuracy"]
    assert weighted["f1"] == pytest.approx(sklearn_metrics.f1_score(refs, preds, average="weighted"))
    # return_pvalue only reaches the correlations; average only f1 -> both fine together
    out = M.compute(["f1", "pearsonr"], [0, 1, 1], [0, 1, 0], average="micro", return_pvalue=True)
    assert "pearsonr_pvalue" in out and out["f1"] == pytest.approx(2 / 3)
    with pytest.raises(ConfigError, match=r"metric keyword argument\(s\) \['averag'\]"):
        M.compute(["accuracy", "f1"], preds, refs, averag="macro")


def test_compute_accepts_tensors_caches_modules_and_checks_lengths() -> None:
    torch = pytest.importorskip("torch")
    assert M.compute(["accuracy", "f1"], torch.tensor(P4), torch.tensor(R4)) == M.compute(["accuracy", "f1"], P4, R4)
    reg = M.compute("pearsonr", torch.tensor([1.0, 2.0, 3.0], dtype=torch.bfloat16), torch.tensor([1.0, 2.0, 3.0]))
    assert reg["pearsonr"] == pytest.approx(1.0)
    assert M._cached("f1") is M._cached("F1")
    with pytest.raises(DataError, match="3 predictions and 4 references"):
        M.compute(["accuracy"], [0, 1, 1], R4)
    with pytest.raises(DataError, match="empty"):
        M.compute(["accuracy"], [], [])


def test_preload_caches_our_modules_for_compute_and_skips_other_names(monkeypatch) -> None:
    import nlp_transfer.metrics as metrics
    monkeypatch.setattr(metrics, "_CACHE", {})
    assert metrics.preload(["ACC", "f1_macro", "accuracy", "user/not-ours"]) == ["accuracy", "f1"]
    module = metrics._CACHE["accuracy"]
    assert set(metrics._CACHE) == {"accuracy", "f1"}  # the Hub name is left to its first use
    assert metrics.compute(["acc"], [0, 1], [0, 0]) == {"accuracy": 0.5}
    assert metrics._CACHE["accuracy"] is module  # compute reused the preloaded module
