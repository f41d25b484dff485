"""Transferability estimators on synthetic features whose answer is known."""
from __future__ import annotations

import numpy as np
import pytest

from nlp_transfer.errors import DataError
from nlp_transfer.selection.transferability import (
    chance_level,
    knn_probe,
    linear_probe,
    logme,
    score_features,
)


def clusters(n_per_class: int, n_classes: int, dim: int, separation: float,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters: class c has mean ``separation * e_c`` (unit noise)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    means = np.zeros((n_classes, dim))
    means[np.arange(n_classes), np.arange(n_classes)] = separation
    feats = means[labels] + rng.normal(size=(labels.size, dim))
    order = rng.permutation(labels.size)
    return feats[order], labels[order]


def direct_evidence(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """log p(y | F, alpha, beta) / n computed the slow way (d x d solve and log-det)."""
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    return float((d / 2 * np.log(alpha) + n / 2 * np.log(beta) - n / 2 * np.log(2 * np.pi)
                  - beta / 2 * np.sum((f @ m - y) ** 2) - alpha / 2 * m @ m
                  - 0.5 * np.linalg.slogdet(a)[1]) / n)


# --------------------------------------------------------------------------- LogME maths

@pytest.mark.parametrize("n,d", [(200, 20), (40, 120), (30, 30)])
def test_logme_equals_direct_evidence_at_its_alpha_beta(n: int, d: int) -> None:
    """The SVD-trick evidence equals the textbook formula (n > d, n < d, n == d)."""
    f, y = clusters(n // 3 + 1, 3, d, separation=1.0, seed=n)
    f, y = f[:n], y[:n]
    det = logme(f, y, return_details=True)
    onehot = np.eye(3)[y]
    direct = [direct_evidence(f, onehot[:, j], det["alphas"][j], det["betas"][j])
              for j in range(3)]
    np.testing.assert_allclose(det["evidences"], direct, rtol=0, atol=1e-8)
    assert det["score"] == pytest.approx(np.mean(direct), abs=1e-8)
    assert det["rank"] == min(n, d)


def test_logme_fixed_point_is_a_maximum_of_the_evidence() -> None:
    f, y = clusters(60, 3, 10, separation=2.0)
    det = logme(f, y, return_details=True)
    assert all(det["converged"])
    assert max(det["iterations"]) < 50
    onehot = np.eye(3)[y]
    for j in range(3):
        a, b = det["alphas"][j], det["betas"][j]
        best = direct_evidence(f, onehot[:, j], a, b)
        for fa, fb in [(1.2, 1), (0.8, 1), (1, 1.2), (1, 0.8), (1.2, 1.2), (0.8, 0.8)]:
            assert direct_evidence(f, onehot[:, j], a * fa, b * fb) <= best + 1e-9


def test_logme_without_signal_is_the_noise_only_evidence() -> None:
    """Random features on balanced 0/1 targets: the best model is pure noise with
    variance E[y^2] = 1/2, i.e. evidence/n = 1/2 log(2) - 1/2 log(2 pi) - 1/2."""
    rng = np.random.default_rng(3)
    f = rng.normal(size=(2000, 8))
    y = np.arange(2000) % 2
    expected = 0.5 * np.log(2.0) - 0.5 * np.log(2 * np.pi) - 0.5
    assert logme(f, y) == pytest.approx(expected, abs=0.01)


def test_logme_deterministic_and_invariant_to_row_order_and_label_names() -> None:
    f, y = clusters(30, 4, 12, separation=1.5)
    first = logme(f, y)
    assert logme(f, y) == first
    perm = np.random.default_rng(1).permutation(len(y))
    assert logme(f[perm], y[perm]) == pytest.approx(first, abs=1e-10)
    renamed = np.array([3, 7, 11, 42])[y]
    assert logme(f, renamed) == pytest.approx(first, abs=1e-12)
    assert logme(f.astype(np.float32), y) == pytest.approx(first, abs=1e-5)


@pytest.mark.parametrize("n,d", [(12, 1000), (5, 384), (1000, 4), (64, 64)])
def test_logme_finite_for_any_shape(n: int, d: int) -> None:
    rng = np.random.default_rng(n + d)
    score = logme(rng.normal(size=(n, d)), np.arange(n) % 2)
    assert np.isfinite(score)


def test_logme_handles_rank_deficient_features() -> None:
    """Duplicated columns and a constant column do not break the decomposition."""
    f, y = clusters(40, 2, 5, separation=2.0)
    padded = np.hstack([f, f, np.ones((len(y), 1))])
    det = logme(padded, y, return_details=True)
    assert det["rank"] == 6
    assert np.isfinite(det["score"])
    assert det["score"] > logme(np.random.default_rng(0).normal(size=padded.shape), y)


# --------------------------------------------------------------------------- ranking

def test_separable_clusters_outscore_random_features_on_every_estimator() -> None:
    good, y = clusters(40, 4, 16, separation=4.0)
    rand = np.random.default_rng(5).normal(size=good.shape)
    g, r = score_features(good, y), score_features(rand, y)
    assert g["logme"] > r["logme"] + 0.3
    assert g["linear_probe"]["mean"] > 0.9
    assert g["knn"]["mean"] > 0.9
    # random features sit at chance (4 balanced classes: 0.25)
    assert abs(r["linear_probe"]["mean"] - 0.25) < 0.15
    assert abs(r["knn"]["mean"] - 0.25) < 0.15


def test_separable_beats_random_when_dim_exceeds_examples() -> None:
    good, y = clusters(15, 3, 300, separation=6.0)
    rand = np.random.default_rng(6).normal(size=good.shape)
    assert logme(good, y) > logme(rand, y)
    assert linear_probe(good, y)["mean"] > linear_probe(rand, y)["mean"] + 0.3
    assert knn_probe(good, y)["mean"] > knn_probe(rand, y)["mean"] + 0.3


def test_scores_increase_with_label_signal() -> None:
    strengths = [0.0, 0.5, 1.0, 2.0, 4.0]
    lm, probe, knn = [], [], []
    for s in strengths:
        f, y = clusters(40, 3, 10, separation=s, seed=11)
        lm.append(logme(f, y))
        probe.append(linear_probe(f, y, folds=4)["mean"])
        knn.append(knn_probe(f, y, folds=4)["mean"])
    assert all(a < b for a, b in zip(lm, lm[1:])), lm
    # probes saturate at 1.0 and are noisy at chance: allow a small dip, demand a big rise
    for curve in (probe, knn):
        assert all(b >= a - 0.05 for a, b in zip(curve, curve[1:])), curve
        assert curve[-1] > curve[0] + 0.5, curve


def test_regression_ranks_correlated_features_above_noise() -> None:
    rng = np.random.default_rng(7)
    n, d = 300, 8
    signal = rng.normal(size=(n, d))
    target = signal @ rng.normal(size=d) + 0.3 * rng.normal(size=n)
    noise = rng.normal(size=(n, d))
    assert logme(signal, target, regression=True) > logme(noise, target, regression=True) + 0.5
    good, bad = (linear_probe(x, target, regression=True) for x in (signal, noise))
    assert good["metric"] == "spearman"
    assert good["mean"] > 0.9 and abs(bad["mean"]) < 0.3
    assert good["r2_mean"] > 0.9 and bad["r2_mean"] < 0.1
    assert knn_probe(signal, target, regression=True)["mean"] > \
        knn_probe(noise, target, regression=True)["mean"] + 0.3
    # multi-target: scored per column and averaged
    two = np.stack([target, -target], axis=1)
    assert logme(signal, two, regression=True) == pytest.approx(
        logme(signal, target, regression=True), abs=1e-9)


# --------------------------------------------------------------------------- probe details

def test_linear_probe_reports_folds_and_is_seeded() -> None:
    f, y = clusters(20, 2, 6, separation=1.0)
    a, b = linear_probe(f, y, seed=3), linear_probe(f, y, seed=3)
    assert a == b
    assert a["folds"] == 5 and len(a["scores"]) == 5
    assert a["std"] == pytest.approx(np.std(a["scores"]))


def test_probe_folds_shrink_to_smallest_class() -> None:
    f, y = clusters(20, 2, 6, separation=3.0)
    y = y.copy()
    keep = np.concatenate([np.flatnonzero(y == 0), np.flatnonzero(y == 1)[:3]])
    out = linear_probe(f[keep], y[keep], folds=5)
    assert out["folds"] == 3 and len(out["scores"]) == 3
    assert knn_probe(f[keep], y[keep], k=50)["k"] <= len(keep)


def test_chance_level_is_majority_rate() -> None:
    assert chance_level([0, 0, 0, 1]) == 0.75
    f, y = clusters(10, 2, 4, separation=1.0)
    assert score_features(f, y, probes=False)["chance"] == 0.5


def test_score_features_record() -> None:
    f, y = clusters(20, 3, 8, separation=2.0)
    out = score_features(f, y, folds=3)
    assert out["n"] == 60 and out["dim"] == 8 and out["n_classes"] == 3
    assert set(out["timings_s"]) == {"logme", "linear_probe", "knn"}
    assert all(t >= 0 for t in out["timings_s"].values())
    assert out["linear_probe"]["folds"] == 3 and out["knn"]["k"] == 5
    only = score_features(f, y, probes=False)
    assert "linear_probe" not in only and only["logme"] == out["logme"]


# --------------------------------------------------------------------------- errors

def test_row_mismatch_error_message() -> None:
    with pytest.raises(DataError) as err:
        logme(np.zeros((10, 3)), np.arange(9) % 2)
    assert str(err.value) == ("features and labels: expected the same number of rows, "
                              "found 10 feature rows and 9 labels. Fix: extract features "
                              "for exactly the labelled examples")


def test_non_finite_features_are_rejected() -> None:
    f = np.ones((6, 2))
    f[2, 1] = np.nan
    with pytest.raises(DataError, match=r"found NaN/inf in 1 of 6 rows"):
        logme(f, [0, 1, 0, 1, 0, 1])


def test_single_class_and_float_labels_are_rejected() -> None:
    with pytest.raises(DataError, match="expected at least 2 distinct classes"):
        linear_probe(np.random.default_rng(0).normal(size=(8, 3)), np.zeros(8, dtype=int))
    with pytest.raises(DataError, match="Fix: pass regression=True for continuous targets"):
        logme(np.ones((4, 2)), [0.5, 1.5, 0.2, 0.1])
    with pytest.raises(DataError, match=r"features: expected a 2-D array"):
        logme(np.ones(4), [0, 1, 0, 1])


def test_class_with_one_example_cannot_be_probed() -> None:
    f = np.random.default_rng(0).normal(size=(7, 3))
    with pytest.raises(DataError, match="expected at least 2 examples of every class"):
        linear_probe(f, [0, 0, 0, 1, 1, 1, 2])
