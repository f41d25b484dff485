"""Transferability estimators: how well do frozen features fit a labelled task?

Everything here works on a feature matrix that has already been extracted from a
pretrained model (``features``: ``(n, d)`` floats) and the task targets
(``labels``: ``(n,)`` integer class ids, or float targets when ``regression=True``).
Nothing here touches a model, so the functions are cheap, deterministic and
testable on synthetic data.

* :func:`logme` -- LogME (You et al., 2021): the log marginal likelihood
  (evidence) of a Bayesian linear model on the features, maximised over its two
  hyper-parameters. Higher is better; it needs no training loop and no
  hyper-parameter search.
* :func:`linear_probe` -- k-fold logistic regression on standardised features
  (accuracy), or ridge regression for regression targets (Spearman rho, R^2).
* :func:`knn_probe` -- k-fold k-nearest-neighbour accuracy with cosine distance.
* :func:`score_features` -- all of the above plus timings and the chance level,
  the record ``rank-models`` prints one row of.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from nlp_transfer.errors import DataError

__all__ = [
    "LOGME_TOL",
    "LOGME_MAX_ITER",
    "chance_level",
    "logme",
    "linear_probe",
    "knn_probe",
    "score_features",
]

#: Relative change of ``alpha / beta`` below which the LogME fixed-point iteration stops.
LOGME_TOL = 1e-5
#: Upper bound on LogME fixed-point iterations. Informative features converge in
#: a handful of steps; on label-free (noise) features alpha grows towards infinity
#: and takes a few hundred steps to settle (each step is O(min(n, d)), so cheap).
LOGME_MAX_ITER = 1000
#: Added to the denominators of the alpha/beta updates so an exact fit cannot divide by 0.
_LOGME_EPS = 1e-10


# --------------------------------------------------------------------------- checks

def _check_features(features: Any, n_expected: int | None = None) -> np.ndarray:
    """Return ``features`` as a finite float64 ``(n, d)`` matrix or raise DataError."""
    f = np.asarray(features)
    if f.ndim != 2:
        raise DataError("features", expected="a 2-D array of shape (n_examples, dim)",
                        found=f"an array of shape {f.shape}",
                        fix="stack one feature vector per example (pool token states first)")
    if f.shape[0] < 2 or f.shape[1] < 1:
        raise DataError("features", expected="at least 2 examples and 1 dimension",
                        found=f"shape {f.shape}", fix="score a larger sample")
    if not np.issubdtype(f.dtype, np.number):
        raise DataError("features", expected="numeric values", found=f"dtype {f.dtype}",
                        fix="pass the extracted feature matrix, not raw text")
    f = f.astype(np.float64, copy=False)
    if not np.all(np.isfinite(f)):
        bad = int((~np.isfinite(f)).any(axis=1).sum())
        raise DataError("features", expected="finite values",
                        found=f"NaN/inf in {bad} of {f.shape[0]} rows",
                        fix="check the model output (fp16 overflow?) or drop those rows")
    if n_expected is not None and f.shape[0] != n_expected:
        raise DataError("features and labels", expected="the same number of rows",
                        found=f"{f.shape[0]} feature rows and {n_expected} labels",
                        fix="extract features for exactly the labelled examples")
    return f


def _check_labels(labels: Any, regression: bool) -> np.ndarray:
    """Return class ids (``(n,)`` int) or regression targets (``(n, t)`` float)."""
    y = np.asarray(labels)
    if regression:
        if y.ndim not in (1, 2) or y.shape[0] < 2:
            raise DataError("regression targets", expected="shape (n,) or (n, n_targets), n >= 2",
                            found=f"shape {y.shape}", fix="pass one float target row per example")
        if not np.issubdtype(y.dtype, np.number):
            raise DataError("regression targets", expected="numeric values", found=f"dtype {y.dtype}",
                            fix="convert the label column to float")
        y = y.astype(np.float64).reshape(y.shape[0], -1)
        if not np.all(np.isfinite(y)):
            raise DataError("regression targets", expected="finite values", found="NaN/inf",
                            fix="drop or impute the rows with missing targets")
        return y
    if y.ndim != 1:
        raise DataError("labels", expected="a 1-D array of class ids", found=f"shape {y.shape}",
                        fix="pass one integer label per example (use regression=True for floats)")
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError("labels", expected="integer class ids",
                            found="non-integer floats",
                            fix="pass regression=True for continuous targets")
    elif not np.issubdtype(y.dtype, np.integer) and not np.issubdtype(y.dtype, np.bool_):
        raise DataError("labels", expected="integer class ids", found=f"dtype {y.dtype}",
                        fix="map label names to ids first (e.g. with ClassLabel.str2int)")
    _, y_ids = np.unique(y, return_inverse=True)
    n_classes = int(y_ids.max()) + 1
    if n_classes < 2:
        raise DataError("labels", expected="at least 2 distinct classes",
                        found=f"only class {y[0]!r}",
                        fix="score a stratified sample that contains every class")
    return y_ids.astype(np.int64)


def chance_level(labels: Any) -> float:
    """Accuracy of always predicting the most frequent class (the probe's floor)."""
    y = _check_labels(labels, regression=False)
    return float(np.bincount(y).max() / y.shape[0])


# --------------------------------------------------------------------------- LogME

def _spectrum(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-zero part of the SVD of ``f`` (n x d) through the smaller Gram matrix.

    Returns ``(sigma, u)`` where ``sigma`` are the squared singular values
    (eigenvalues of ``f.T @ f``) above numerical noise, and ``u`` (n x rank) the
    matching left singular vectors (``rank = len(sigma)``). For ``n >= d`` the
    d x d covariance ``f.T f``
    is decomposed (O(n d^2)) and ``u = f v / s``; for ``n < d`` the n x n kernel
    ``f f.T`` gives ``u`` directly (O(d n^2)). Either way only ``rank <= min(n, d)``
    directions are kept, which is all the evidence needs.
    """
    n, d = f.shape
    if n >= d:
        sigma, v = np.linalg.eigh(f.T @ f)
    else:
        sigma, u_full = np.linalg.eigh(f @ f.T)
    order = np.argsort(sigma)[::-1]
    sigma = sigma[order]
    # eigenvalues of a Gram matrix carry absolute error ~ eps * largest eigenvalue
    cutoff = max(sigma[0], 0.0) * max(n, d) * np.finfo(np.float64).eps
    keep = sigma > cutoff
    sigma = sigma[keep]
    if n >= d:
        v = v[:, order][:, keep]
        u = (f @ v) / np.sqrt(sigma)
    else:
        u = u_full[:, order][:, keep]
    return sigma, u


def _logme_single(sigma: np.ndarray, z: np.ndarray, y_sq: float, n: int, d: int,
                  tol: float, max_iter: int) -> tuple[float, float, float, int, bool]:
    """Maximise the evidence for one target column.

    Returns ``(evidence / n, alpha, beta, iterations, converged)``.

    ``sigma`` are the non-zero eigenvalues of ``F^T F`` (k of them), ``z = U^T y``
    the target projected on the matching left singular vectors, ``y_sq = y^T y``.
    With ``t = alpha / beta``, in the eigenbasis:

    * posterior mean ``m = V diag(s_i / (sigma_i + t)) z`` so
      ``||m||^2 = sum sigma_i z_i^2 / (sigma_i + t)^2``;
    * residual ``||F m - y||^2 = sum (t / (sigma_i + t))^2 z_i^2 + (y^T y - ||z||^2)``
      (the last term is the part of y outside the column space of F);
    * effective number of parameters ``gamma = sum sigma_i / (sigma_i + t)``;
    * MacKay's fixed point: ``alpha = gamma / ||m||^2``, ``beta = (n - gamma) / residual``.
    """
    z2 = z * z
    res_out = max(y_sq - float(z2.sum()), 0.0)
    k = sigma.shape[0]
    alpha, beta = 1.0, 1.0
    iters, converged = 0, False
    for iters in range(1, max_iter + 1):
        t = alpha / beta
        gamma = float((sigma / (sigma + t)).sum())
        m_sq = float((sigma * z2 / (sigma + t) ** 2).sum())
        res_sq = float(((t / (sigma + t)) ** 2 * z2).sum()) + res_out
        alpha = gamma / (m_sq + _LOGME_EPS)
        beta = (n - gamma) / (res_sq + _LOGME_EPS)
        if abs(alpha / beta - t) <= tol * t:
            converged = True
            break
    # evidence at the final (alpha, beta): recompute m and the residual there
    t = alpha / beta
    m_sq = float((sigma * z2 / (sigma + t) ** 2).sum())
    res_sq = float(((t / (sigma + t)) ** 2 * z2).sum()) + res_out
    # log|A| with A = alpha I_d + beta F^T F: k eigenvalues alpha + beta sigma_i, d - k equal to alpha
    logdet_a = float(np.log(alpha + beta * sigma).sum()) + (d - k) * np.log(alpha)
    evidence = (d / 2.0 * np.log(alpha) + n / 2.0 * np.log(beta)
                - beta / 2.0 * res_sq - alpha / 2.0 * m_sq
                - 0.5 * logdet_a - n / 2.0 * np.log(2.0 * np.pi))
    return float(evidence / n), float(alpha), float(beta), iters, converged


def logme(features: Any, labels: Any, regression: bool = False, *,
          tol: float = LOGME_TOL, max_iter: int = LOGME_MAX_ITER,
          return_details: bool = False) -> float | dict[str, Any]:
    """LogME transferability score of ``features`` for ``labels`` (higher is better).

    Implements the algorithm of You, Liu, Wang and Long, "LogME: Practical
    Assessment of Pre-trained Models for Transfer Learning", ICML 2021
    (http://proceedings.mlr.press/v139/you21b.html), Algorithm 1, in the
    eigen-decomposed fixed-point form of their follow-up (arXiv:2110.10545).

    For each target column y (one-hot indicator of each class, or each
    regression target), a Bayesian linear model ``y = F w + noise`` with prior
    ``w ~ N(0, alpha^-1 I)`` and noise ``N(0, beta^-1)`` has the log evidence::

        L(alpha, beta) = d/2 log alpha + n/2 log beta - n/2 log 2 pi
                         - beta/2 ||F m - y||^2 - alpha/2 ||m||^2 - 1/2 log|A|
        A = alpha I + beta F^T F,   m = beta A^-1 F^T y

    It is maximised by MacKay's fixed-point iteration (starting from
    alpha = beta = 1, stopping when alpha/beta changes by less than ``tol``
    relative, or after ``max_iter`` steps). One decomposition of F (via the
    smaller of ``F^T F`` and ``F F^T``, so n < d and n > d are both cheap) makes
    every step O(min(n, d)). The score is the maximised evidence divided by n,
    averaged over the target columns.

    Features are used as given (no centring or scaling), as in the paper.

    Args:
        features: ``(n, d)`` feature matrix.
        labels: ``(n,)`` class ids (any integers; mapped to 0..C-1), or with
            ``regression=True`` float targets of shape ``(n,)`` or ``(n, t)``.
        regression: score continuous targets instead of classes.
        tol: relative convergence tolerance on alpha/beta.
        max_iter: maximum fixed-point iterations per target.
        return_details: return a dict with ``score`` and per-target
            ``evidences``, ``alphas``, ``betas``, ``iterations``, ``converged``
            and ``rank``.

    Returns:
        The LogME score (a float; typically between -2 and 2 for classification),
        or the details dict.
    """
    y = _check_labels(labels, regression)
    f = _check_features(features, n_expected=y.shape[0])
    if tol <= 0 or max_iter < 1:
        raise DataError("logme settings", expected="tol > 0 and max_iter >= 1",
                        found=f"tol={tol}, max_iter={max_iter}", fix="use the defaults")
    n, d = f.shape
    targets = y if regression else np.eye(int(y.max()) + 1)[y]
    sigma, u = _spectrum(f)
    if sigma.shape[0] == 0:
        raise DataError("features", expected="a non-zero matrix", found="all-zero features",
                        fix="check the pooling / layer selection")
    projected = u.T @ targets  # (k, n_targets)
    evidences, alphas, betas, iterations, converged = [], [], [], [], []
    for j in range(targets.shape[1]):
        y_sq = float(targets[:, j] @ targets[:, j])
        ev, a, b, it, conv = _logme_single(sigma, projected[:, j], y_sq, n, d, tol, max_iter)
        evidences.append(ev)
        alphas.append(a)
        betas.append(b)
        iterations.append(it)
        converged.append(conv)
    score = float(np.mean(evidences))
    if not return_details:
        return score
    return {"score": score, "evidences": evidences, "alphas": alphas, "betas": betas,
            "iterations": iterations, "converged": converged,
            "rank": int(sigma.shape[0])}


# --------------------------------------------------------------------------- probes

def _folds_for(y: np.ndarray | None, n: int, folds: int, what: str) -> int:
    """Number of folds that fits the data (stratified: at most the smallest class size)."""
    if folds < 2:
        raise DataError(f"{what} folds", expected="at least 2", found=str(folds),
                        fix="use folds=5 (the default)")
    limit = n if y is None else int(np.bincount(y).min())
    if limit < 2:
        raise DataError(f"{what} data", expected="at least 2 examples of every class",
                        found=f"a class with {limit} example",
                        fix="sample more examples or merge rare classes")
    return min(folds, limit)


def _summary(scores: list[float], **extra: Any) -> dict[str, Any]:
    arr = np.asarray(scores, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std()), "scores": [float(s) for s in arr],
            **extra}


def linear_probe(features: Any, labels: Any, folds: int = 5, seed: int = 0,
                 regression: bool = False, C: float = 1.0, max_iter: int = 1000) -> dict[str, Any]:
    """k-fold linear probe of frozen features.

    Classification: stratified k-fold logistic regression (L2, ``C``) on
    standardised features (the scaler is fitted on each training fold only),
    scored by accuracy. Regression: k-fold ridge regression (alpha = 1/C) on
    standardised features, scored by Spearman rho (``mean``/``std``/``scores``)
    with R^2 alongside (``r2_mean``/``r2_std``); multi-target regression
    averages over targets.

    ``folds`` is lowered to the size of the smallest class when a class has
    fewer examples than folds (the value used is returned as ``folds``).

    Returns:
        ``{"mean", "std", "scores", "metric", "folds"}`` (+ R^2 for regression).
    """
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import KFold, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = _check_labels(labels, regression)
    f = _check_features(features, n_expected=y.shape[0])
    if regression:
        k = _folds_for(None, f.shape[0], folds, "linear probe")
        splits = KFold(n_splits=k, shuffle=True, random_state=seed).split(f)
        rhos, r2s = [], []
        for train, test in splits:
            model = make_pipeline(StandardScaler(), Ridge(alpha=1.0 / C))
            model.fit(f[train], y[train])
            pred = np.asarray(model.predict(f[test])).reshape(len(test), -1)
            rhos.append(float(np.mean([_spearman(pred[:, j], y[test, j])
                                       for j in range(y.shape[1])])))
            r2s.append(float(np.mean([_r2(pred[:, j], y[test, j]) for j in range(y.shape[1])])))
        return _summary(rhos, metric="spearman", folds=k,
                        r2_mean=float(np.mean(r2s)), r2_std=float(np.std(r2s)))
    k = _folds_for(y, f.shape[0], folds, "linear probe")
    accs = []
    for train, test in StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(f, y):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
        model.fit(f[train], y[train])
        accs.append(float((model.predict(f[test]) == y[test]).mean()))
    return _summary(accs, metric="accuracy", folds=k)


def knn_probe(features: Any, labels: Any, k: int = 5, folds: int = 5, seed: int = 0,
              regression: bool = False) -> dict[str, Any]:
    """k-fold k-nearest-neighbour probe with cosine distance (no training, no scaling).

    Classification: majority vote of the ``k`` nearest training-fold neighbours,
    accuracy. Regression: mean of the neighbours' targets, Spearman rho.
    ``k`` is capped at the training-fold size.

    Returns:
        ``{"mean", "std", "scores", "metric", "folds", "k"}``.
    """
    from sklearn.model_selection import KFold, StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

    if k < 1:
        raise DataError("knn k", expected="at least 1", found=str(k), fix="use k=5 (the default)")
    y = _check_labels(labels, regression)
    f = _check_features(features, n_expected=y.shape[0])
    n = f.shape[0]
    if regression:
        nf = _folds_for(None, n, folds, "kNN probe")
        splits = KFold(n_splits=nf, shuffle=True, random_state=seed).split(f)
    else:
        nf = _folds_for(y, n, folds, "kNN probe")
        splits = StratifiedKFold(n_splits=nf, shuffle=True, random_state=seed).split(f, y)
    scores, k_used = [], k
    for train, test in splits:
        k_used = min(k, len(train))
        cls = KNeighborsRegressor if regression else KNeighborsClassifier
        model = cls(n_neighbors=k_used, metric="cosine", algorithm="brute")
        model.fit(f[train], y[train])
        pred = model.predict(f[test])
        if regression:
            pred = np.asarray(pred).reshape(len(test), -1)
            scores.append(float(np.mean([_spearman(pred[:, j], y[test, j])
                                         for j in range(y.shape[1])])))
        else:
            scores.append(float((pred == y[test]).mean()))
    return _summary(scores, metric="spearman" if regression else "accuracy", folds=nf, k=k_used)


def _spearman(pred: np.ndarray, target: np.ndarray) -> float:
    """Spearman rho; 0.0 when either side is constant (no ranking information)."""
    from scipy.stats import spearmanr

    if np.ptp(pred) == 0 or np.ptp(target) == 0:
        return 0.0
    return float(spearmanr(pred, target).statistic)


def _r2(pred: np.ndarray, target: np.ndarray) -> float:
    ss_tot = float(((target - target.mean()) ** 2).sum())
    if ss_tot == 0:
        return 0.0
    return 1.0 - float(((target - pred) ** 2).sum()) / ss_tot


# --------------------------------------------------------------------------- all together

def score_features(features: Any, labels: Any, regression: bool = False, folds: int = 5,
                   seed: int = 0, knn_k: int = 5, probes: bool = True) -> dict[str, Any]:
    """Every transferability score of one feature matrix, with timings.

    Returns a JSON-serialisable dict::

        {"n": ..., "dim": ..., "n_classes": ... (None for regression),
         "chance": majority-class accuracy (0.0 for regression),
         "logme": float,
         "linear_probe": {"mean", "std", "scores", "metric", "folds", ...},
         "knn": {"mean", "std", "scores", "metric", "folds", "k"},
         "timings_s": {"logme": s, "linear_probe": s, "knn": s}}

    ``probes=False`` computes LogME only (the probes are the slow part on large samples).
    """
    y = _check_labels(labels, regression)
    f = _check_features(features, n_expected=y.shape[0])
    out: dict[str, Any] = {
        "n": int(f.shape[0]), "dim": int(f.shape[1]),
        "n_classes": None if regression else int(y.max()) + 1,
        "chance": 0.0 if regression else float(np.bincount(y).max() / y.shape[0]),
    }
    timings: dict[str, float] = {}
    start = time.perf_counter()
    out["logme"] = logme(f, y, regression=regression)
    timings["logme"] = time.perf_counter() - start
    if probes:
        start = time.perf_counter()
        out["linear_probe"] = linear_probe(f, y, folds=folds, seed=seed, regression=regression)
        timings["linear_probe"] = time.perf_counter() - start
        start = time.perf_counter()
        out["knn"] = knn_probe(f, y, k=knn_k, folds=folds, seed=seed, regression=regression)
        timings["knn"] = time.perf_counter() - start
    out["timings_s"] = {key: round(val, 4) for key, val in timings.items()}
    return out
