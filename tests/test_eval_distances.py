"""Known answers and cross-checks for the distribution scores (shanshui.metrics.distances)."""

from __future__ import annotations

import numpy as np
import pytest

from shanshui.errors import ShanshuiError
from shanshui.metrics import feature_statistics, frechet_distance, inception_score, kernel_distance
from shanshui.metrics.distances import covariance_warning, frechet_from_statistics, trace_sqrt_product


def _feats(n=50, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d)


@pytest.mark.parametrize("method", ["sqrtm", "eigen"])
@pytest.mark.parametrize("ddof", [0, 1])
def test_frechet_shift_is_squared_norm(method, ddof):
    x = _feats()
    c = np.array([1.0, -2.0, 0.5, 0.0, 3.0, 1.5])
    assert frechet_distance(x, x + c, ddof=ddof, method=method) == pytest.approx(c @ c, rel=1e-7)


@pytest.mark.parametrize("method", ["sqrtm", "eigen"])
def test_frechet_scaling_pins_the_covariance_normalisation(method):
    x, a = _feats(n=20), 0.3
    for ddof, div in ((0, 20), (1, 19)):
        mu = x.mean(0)
        cov_trace = ((x - mu) ** 2).sum() / div
        expected = (1 - a) ** 2 * (mu @ mu + cov_trace)
        assert frechet_distance(x, a * x, ddof=ddof, method=method) == pytest.approx(expected, rel=1e-7)
    # the two normalisations give visibly different numbers on 20 samples
    assert frechet_distance(x, a * x, ddof=0) != pytest.approx(frechet_distance(x, a * x, ddof=1), rel=1e-3)


@pytest.mark.parametrize("method", ["sqrtm", "eigen"])
def test_frechet_diagonal_gaussians(method):
    mu_a, mu_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, -1.0])
    va, vb = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    expected = ((mu_a - mu_b) ** 2).sum() + ((np.sqrt(va) - np.sqrt(vb)) ** 2).sum()
    got = frechet_from_statistics(mu_a, np.diag(va), mu_b, np.diag(vb), method=method)
    assert got == pytest.approx(expected, rel=1e-9)


def test_sqrtm_and_eigen_routes_agree_on_non_commuting_covariances():
    a, b = _feats(n=40, d=8, seed=1), _feats(n=30, d=8, seed=2) * 1.7
    _, ca = feature_statistics(a)
    _, cb = feature_statistics(b)
    assert not np.allclose(ca @ cb, cb @ ca)  # the product is not symmetric: the routes differ in form
    t1, t2 = trace_sqrt_product(ca, cb, "sqrtm"), trace_sqrt_product(ca, cb, "eigen")
    assert t1 == pytest.approx(t2, rel=1e-8)
    assert frechet_distance(a, b, method="sqrtm") == pytest.approx(frechet_distance(a, b, method="eigen"), rel=1e-8)
    # and the trace term is not trivially tr(Σa)^½·tr(Σb)^½ or similar: compare with a brute eigen-root
    w, v = np.linalg.eig(ca @ cb)
    assert t1 == pytest.approx(np.sqrt(w.real.clip(0)).sum(), rel=1e-6)


def test_frechet_rank_deficient_covariances_are_defined_and_warned():
    a, b = _feats(n=5, d=8, seed=3), _feats(n=5, d=8, seed=4)
    v1, v2 = frechet_distance(a, b, method="sqrtm"), frechet_distance(a, b, method="eigen")
    assert np.isfinite(v1) and v1 == pytest.approx(v2, rel=1e-5)
    msg = covariance_warning(5, 5, 8)
    assert msg and "rank <= 4" in msg and "8-dimensional" in msg
    assert covariance_warning(9, 20, 8) is None


def test_frechet_bad_input():
    with pytest.raises(ShanshuiError, match="at least 2 rows"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ShanshuiError, match="dimensions differ"):
        frechet_distance(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ShanshuiError, match="'sqrtm' or 'eigen'"):
        frechet_distance(np.zeros((4, 3)), np.zeros((4, 3)), method="svd")
    with pytest.raises(ShanshuiError, match="finite"):
        frechet_distance(np.full((3, 2), np.nan), np.zeros((3, 2)))


def test_kernel_distance_known_answer():
    # d = 1: k(0,0) = 1, k(1,1) = 8, k(0,1) = 1 -> 1 + 8 - 2·1 = 7
    assert kernel_distance(np.zeros((6, 1)), np.ones((4, 1)))["value"] == pytest.approx(7.0)


def test_kernel_distance_matches_a_double_loop():
    a, b = _feats(n=7, d=3, seed=5), _feats(n=5, d=3, seed=6)
    k = lambda x, y: (x @ y / 3 + 1) ** 3  # noqa: E731
    xx = sum(k(a[i], a[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    yy = sum(k(b[i], b[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    xy = sum(k(a[i], b[j]) for i in range(7) for j in range(5)) / 35
    assert kernel_distance(a, b)["value"] == pytest.approx(xx + yy - 2 * xy, rel=1e-10)


def test_kernel_distance_subsets():
    a, b = _feats(n=30, d=4, seed=7), _feats(n=25, d=4, seed=8) + 0.5
    full = kernel_distance(a, b)["value"]
    # subsets as large as the sets are permutations of all rows: the same estimate, zero spread
    assert kernel_distance(a, b, subsets=3, subset_size=1000)["subset_size"] == 25
    whole = kernel_distance(a[:25], b, subsets=3, subset_size=25)
    assert whole["value"] == pytest.approx(kernel_distance(a[:25], b)["value"], rel=1e-10)
    assert whole["std"] == pytest.approx(0.0, abs=1e-10)
    small = kernel_distance(a, b, subsets=20, subset_size=10, seed=1)
    again = kernel_distance(a, b, subsets=20, subset_size=10, seed=1)
    assert small == again and small["std"] > 0 and small["subset_size"] == 10
    assert small["value"] == pytest.approx(full, rel=0.5)  # an unbiased estimate of the same quantity


def test_inception_score_known_answers():
    assert inception_score(np.full((10, 5), 0.2), splits=2) == pytest.approx((1.0, 0.0))
    # K samples, each peaked on its own class with logits c·I: K·exp(-H(p)), K = 10, c = 5
    logits = 5.0 * np.eye(10)
    mean, std = inception_score(logits, splits=1)
    assert mean == pytest.approx(7.0840037, abs=1e-6) and std == 0.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert inception_score(probs, splits=1)[0] == pytest.approx(mean, rel=1e-10)
    # huge logits: one-hot rows, no log(0) NaN; the score is K
    assert inception_score(1e4 * np.eye(10), splits=1) == pytest.approx((10.0, 0.0))


def test_inception_score_contiguous_splits_and_population_std():
    rows = np.concatenate([np.zeros((10, 10)), 5.0 * np.eye(10)])  # first half uniform (IS 1), second 7.084
    mean, std = inception_score(rows, splits=2, kind="logits")
    assert mean == pytest.approx((1 + 7.0840037) / 2, abs=1e-6)
    assert std == pytest.approx((7.0840037 - 1) / 2, abs=1e-6)
    with pytest.raises(ShanshuiError, match="splits=30"):
        inception_score(rows, splits=30)
