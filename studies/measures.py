"""The analysis's statistics, in plain numpy: rank correlations (Spearman with average ranks for ties, Kendall's
tau-b), a percentile bootstrap interval over the paired points, linear CKA (Kornblith et al. 2019) and LogME
(You et al. 2021, Algorithm 1). Each is tested against a hand computation in tests/test_analysis.py."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n; tied values share the mean of the ranks they span (as scipy.stats.rankdata 'average')."""
    x = np.asarray(values, dtype=float)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and x[order[j + 1]] == x[order[i]]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson r; nan when either side is constant or has fewer than 2 points."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(a) < 2:
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / denom if denom > 0 else math.nan


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: Pearson r of the average ranks (the tie-corrected form)."""
    return pearson(average_ranks(x), average_ranks(y))


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b: (concordant - discordant) / sqrt((n0 - ties in x) (n0 - ties in y)); nan if undefined."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    concordant = discordant = tie_x = tie_y = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            dx, dy = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
            if dx == 0 and dy == 0:
                tie_x, tie_y = tie_x + 1, tie_y + 1
            elif dx == 0:
                tie_x += 1
            elif dy == 0:
                tie_y += 1
            elif dx == dy:
                concordant += 1
            else:
                discordant += 1
    n0 = len(a) * (len(a) - 1) // 2
    denom = math.sqrt((n0 - tie_x) * (n0 - tie_y))
    return (concordant - discordant) / denom if denom > 0 else math.nan


def bootstrap_interval(
    stat: Callable[[np.ndarray, np.ndarray], float],
    x: Sequence[float],
    y: Sequence[float],
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of ``stat`` over resamples of the (x, y) pairs; resamples where it is undefined (a
    constant side) are left out. (nan, nan) when fewer than half of them are defined."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        idx = rng.integers(0, len(a), len(a))
        v = stat(a[idx], b[idx])
        if not math.isnan(v):
            values.append(v)
    if len(values) < resamples / 2:
        return math.nan, math.nan
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two representations of the same n items, (n, d1) and (n, d2):
    ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), columns centred. 1 for equal up to rotation and scale."""
    xc = np.asarray(x, dtype=np.float64) - np.mean(x, axis=0)
    yc = np.asarray(y, dtype=np.float64) - np.mean(y, axis=0)
    cross = np.linalg.norm(yc.T @ xc) ** 2
    denom = np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    return float(cross / denom) if denom > 0 else math.nan


def evidence(features: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """log p(y | F, alpha, beta) of Bayesian linear regression y = F w + noise, w ~ N(0, alpha^-1 I), noise ~
    N(0, beta^-1 I), w integrated out (You et al. 2021, eq. 2), for one target column y (n,)."""
    f = np.asarray(features, dtype=np.float64)
    n, d = f.shape
    a_mat = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a_mat, f.T @ y)
    residual = float(np.sum((f @ m - y) ** 2))
    _, logdet = np.linalg.slogdet(a_mat)
    return float(
        n / 2 * math.log(beta)
        + d / 2 * math.log(alpha)
        - n / 2 * math.log(2 * math.pi)
        - beta / 2 * residual
        - alpha / 2 * float(m @ m)
        - logdet / 2
    )


def maximise_evidence(features: np.ndarray, y: np.ndarray, steps: int = 100, tol: float = 1e-5) -> tuple[float, float]:
    """The fixed-point iteration of You et al. 2021 (Algorithm 1) for alpha, beta: with sigma_i the eigenvalues
    of F^T F, gamma = sum beta sigma_i / (alpha + beta sigma_i), m = beta (alpha I + beta F^T F)^-1 F^T y,
    alpha <- gamma / m^T m, beta <- (n - gamma) / ||F m - y||^2, from alpha = beta = 1."""
    f = np.asarray(features, dtype=np.float64)
    n = f.shape[0]
    sigma, v = np.linalg.eigh(f.T @ f)
    sigma = np.clip(sigma, 0, None)
    fty = v.T @ (f.T @ y)  # F^T y in the eigenbasis
    alpha, beta = 1.0, 1.0
    for _ in range(steps):
        gamma = float(np.sum(beta * sigma / (alpha + beta * sigma)))
        m = v @ (beta * fty / (alpha + beta * sigma))
        residual = float(np.sum((f @ m - y) ** 2))
        new_alpha = gamma / max(float(m @ m), 1e-12)
        new_beta = (n - gamma) / max(residual, 1e-12)
        done = abs(new_alpha - alpha) / alpha < tol and abs(new_beta - beta) / beta < tol
        alpha, beta = new_alpha, new_beta
        if done:
            break
    return alpha, beta


def logme(features: np.ndarray, labels: Sequence[int]) -> float:
    """LogME of features (n, d) for class labels (n,): per class, the maximised evidence of its one-hot column
    divided by n, averaged over classes (higher: the features suit the task better)."""
    f = np.asarray(features, dtype=np.float64)
    y_all = np.asarray(labels)
    scores = []
    for c in np.unique(y_all):
        y = (y_all == c).astype(np.float64)
        alpha, beta = maximise_evidence(f, y)
        scores.append(evidence(f, y, alpha, beta) / len(y))
    return float(np.mean(scores))


def retrieval_accuracy(queries: np.ndarray, keys: np.ndarray) -> float:
    """Share of queries whose nearest key by cosine similarity is the key at the same index (Tatoeba-style)."""
    q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    k = keys / np.maximum(np.linalg.norm(keys, axis=1, keepdims=True), 1e-12)
    return float(np.mean(np.argmax(q @ k.T, axis=1) == np.arange(len(q))))
