"""Distribution-level scores on feature sets: Fréchet distance, kernel (MMD) distance, Inception Score.

Pure numpy/SciPy functions on arrays; the feature networks that produce the inputs live in
:mod:`shanshui.metrics.networks`. All statistics are computed in float64.

* :func:`frechet_distance` — ``‖μa − μb‖² + tr Σa + tr Σb − 2 tr (Σa Σb)^½`` between Gaussians fitted to
  two feature sets. ``ddof=0`` is the biased covariance (÷N) of the StyleGAN-V FVD code, ``ddof=1`` the
  unbiased one (÷N−1) of TATS, TensorFlow's FVD and pytorch-fid. Two independent routes to the trace
  term: ``method="sqrtm"`` (SciPy's ``sqrtm`` of the product, as the reference implementations do) and
  ``method="eigen"`` (the symmetric form ``tr (Σa^½ Σb Σa^½)^½`` from two symmetric eigendecompositions).
* :func:`kernel_distance` — the unbiased squared MMD with the cubic polynomial kernel
  ``k(x, y) = (x·y / d + 1)³`` (KID/KVD), on all rows or averaged over random subsets (KID style).
* :func:`inception_score` — ``exp E[KL(p(y|x) ‖ p(y))]`` over contiguous splits; mean and population std.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import ShanshuiError, check


def _two_sets(feats_a, feats_b, min_rows: int = 2) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    check(a.ndim == 2 and b.ndim == 2, f"feature sets must be 2-D (N, D), got shapes {a.shape} and {b.shape}")
    check(len(a) >= min_rows and len(b) >= min_rows,
          f"each feature set needs at least {min_rows} rows, got {len(a)} and {len(b)}")
    check(a.shape[1] == b.shape[1], f"feature dimensions differ: {a.shape[1]} and {b.shape[1]}")
    check(np.isfinite(a).all() and np.isfinite(b).all(), "feature sets must be finite (found NaN or inf)")
    return a, b


def feature_statistics(feats, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` of ``(N, D)`` features in float64 (``ddof`` 0: ÷N, 1: ÷N−1)."""
    f = np.asarray(feats, np.float64)
    check(f.ndim == 2 and len(f) > ddof, f"features must be (N > {ddof}, D), got {f.shape}")
    check(ddof in (0, 1), f"ddof={ddof} must be 0 (biased, ÷N) or 1 (unbiased, ÷N−1)")
    mu = f.mean(axis=0)
    x = f - mu
    return mu, (x.T @ x) / (len(f) - ddof)


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (eigenvalues below 0 clipped)."""
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(cov_a: np.ndarray, cov_b: np.ndarray, method: str = "sqrtm") -> float:
    """``tr (Σa Σb)^½`` for covariance matrices.

    ``"sqrtm"``: ``scipy.linalg.sqrtm(Σa Σb)``, real part, with pytorch-fid's guard (if the root is not
    finite, retry with 1e-6·I added to both); an imaginary diagonal above 1e-3 is refused. SciPy ≥ 1.18
    removed ``disp=False``, so the plain call is used. ``"eigen"``: ``Σ sqrt(eig(Σa^½ Σb Σa^½))``.
    """
    if method == "eigen":
        sa = _sqrt_psd(cov_a)
        return float(np.sqrt(np.clip(np.linalg.eigvalsh(sa @ cov_b @ sa), 0, None)).sum())
    check(method == "sqrtm", f"method={method!r} must be 'sqrtm' or 'eigen'")
    from scipy import linalg

    def root(a, b):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SciPy < 1.18 warns about singular products; checked below
            out = linalg.sqrtm(a @ b)
        return out[0] if isinstance(out, tuple) else out

    covmean = root(cov_a, cov_b)
    if not np.isfinite(covmean).all():
        eps = np.eye(len(cov_a)) * 1e-6
        covmean = root(cov_a + eps, cov_b + eps)
    if np.iscomplexobj(covmean):
        imag = float(np.max(np.abs(np.diagonal(covmean).imag)))
        if imag > 1e-3:
            raise ShanshuiError(f"the covariance product has a matrix square root with imaginary part {imag:.3g} "
                                "on its diagonal (> 1e-3): the statistics are degenerate")
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_from_statistics(mu_a, cov_a, mu_b, cov_b, method: str = "sqrtm") -> float:
    """Fréchet distance between two Gaussians given by their means and covariances."""
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    cov_a, cov_b = np.atleast_2d(np.asarray(cov_a, np.float64)), np.atleast_2d(np.asarray(cov_b, np.float64))
    check(mu_a.shape == mu_b.shape and cov_a.shape == cov_b.shape == (len(mu_a), len(mu_a)),
          f"statistics do not match: means {mu_a.shape}, {mu_b.shape}; covariances {cov_a.shape}, {cov_b.shape}")
    d = mu_a - mu_b
    value = float(d @ d + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt_product(cov_a, cov_b, method))
    return max(0.0, value)  # only rounding makes it negative


def frechet_distance(feats_a, feats_b, ddof: int = 1, method: str = "sqrtm") -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``(N, D)`` and ``(M, D)``.

    ``ddof`` selects the covariance (1: ÷N−1, TATS/pytorch-fid; 0: ÷N, StyleGAN-V); ``method`` the
    trace-term route (see :func:`trace_sqrt_product`). Fewer rows than ``D`` give rank-deficient
    covariances: the number is still defined but strongly biased (see :func:`covariance_warning`).
    """
    a, b = _two_sets(feats_a, feats_b)
    mu_a, cov_a = feature_statistics(a, ddof)
    mu_b, cov_b = feature_statistics(b, ddof)
    return frechet_from_statistics(mu_a, cov_a, mu_b, cov_b, method)


def covariance_warning(n_a: int, n_b: int, dim: int) -> str | None:
    """A one-line explanation when either set has no more rows than the feature dimension, else None."""
    n = min(n_a, n_b)
    if n > dim:
        return None
    return (f"only {n} samples for {dim}-dimensional features: the covariance has rank <= {n - 1} < {dim}, so "
            f"the Fréchet distance is dominated by estimation error (it is biased upward and shrinks as "
            f"samples are added); compare only numbers computed with the same sample counts")


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None,
                      coef0: float = 1.0) -> np.ndarray:
    """``(γ x·y + c)^degree`` with ``γ = 1/d`` by default."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (x @ y.T * gamma + coef0) ** degree


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int, gamma, coef0: float) -> float:
    m, n = len(x), len(y)
    kxx = polynomial_kernel(x, x, degree, gamma, coef0)
    kyy = polynomial_kernel(y, y, degree, gamma, coef0)
    kxy = polynomial_kernel(x, y, degree, gamma, coef0)
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def kernel_distance(feats_a, feats_b, degree: int = 3, gamma: float | None = None, coef0: float = 1.0,
                    subsets: int | None = None, subset_size: int = 1000, seed: int = 0) -> dict:
    """Unbiased squared MMD with the polynomial kernel ``(x·y/d + 1)³`` (KVD/KID).

    Without ``subsets`` (the TATS/LVDM ``polynomial_mmd``): one estimate on all rows, XX and YY without
    their diagonals, XY over all ``m·n`` pairs; ``std`` is None. With ``subsets=S`` (KID style): the mean
    and population std over ``S`` random subsets of ``min(subset_size, N, M)`` rows of each set, drawn
    without replacement by a numpy generator seeded with ``seed``. Returns ``{"value", "std", "subsets",
    "subset_size"}``.
    """
    a, b = _two_sets(feats_a, feats_b)
    check(degree >= 1, f"degree={degree} must be >= 1")
    if not subsets:
        return {"value": _mmd2_unbiased(a, b, degree, gamma, coef0), "std": None, "subsets": None,
                "subset_size": None}
    check(subsets >= 1 and subset_size >= 2, f"subsets={subsets} must be >= 1 and subset_size={subset_size} >= 2")
    size = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    values = [_mmd2_unbiased(a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)],
                             degree, gamma, coef0) for _ in range(subsets)]
    return {"value": float(np.mean(values)), "std": float(np.std(values)), "subsets": int(subsets),
            "subset_size": int(size)}


def _log_probabilities(x: np.ndarray, kind: str) -> np.ndarray:
    if kind == "logits":
        m = x.max(axis=1, keepdims=True)
        return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))
    check(kind == "probs", f"kind={kind!r} must be 'auto', 'probs' or 'logits'")
    check((x >= 0).all() and np.allclose(x.sum(axis=1), 1.0, atol=1e-4),
          "probabilities must be non-negative rows summing to 1 (pass kind='logits' for logits)")
    with np.errstate(divide="ignore"):
        return np.log(x)


def inception_score(probs_or_logits, splits: int = 10, kind: str = "auto") -> tuple[float, float]:
    """Inception Score: ``exp(mean_x KL(p(y|x) ‖ p(y)))`` in each of ``splits`` contiguous parts.

    Rows are class probabilities or logits (``kind="auto"``: probabilities when every row is
    non-negative and sums to 1). Logits go through ``log_softmax``, so tiny probabilities never turn
    into ``log(0)``. Parts are ``[i·N/S, (i+1)·N/S)`` as in the StyleGAN2-ADA / original TF code, with no
    shuffling. Returns ``(mean, std)`` over the parts (population std).
    """
    x = np.asarray(probs_or_logits, np.float64)
    check(x.ndim == 2 and x.shape[1] >= 2, f"IS input must be (N, classes >= 2), got {x.shape}")
    check(np.isfinite(x).all(), "IS input must be finite")
    check(isinstance(splits, int) and 1 <= splits <= len(x),
          f"splits={splits} must be between 1 and the number of samples ({len(x)})")
    if kind == "auto":
        kind = "probs" if (x >= 0).all() and np.allclose(x.sum(axis=1), 1.0, atol=1e-4) else "logits"
    logp = _log_probabilities(x, kind)
    p = np.exp(logp)
    n = len(x)
    scores = []
    for i in range(splits):
        lo, hi = i * n // splits, (i + 1) * n // splits
        part_p, part_logp = p[lo:hi], logp[lo:hi]
        log_marginal = np.log(part_p.mean(axis=0))
        terms = np.where(part_p > 0, part_p * (part_logp - log_marginal[None]), 0.0)
        scores.append(float(np.exp(terms.sum(axis=1).mean())))
    return float(np.mean(scores)), float(np.std(scores))
