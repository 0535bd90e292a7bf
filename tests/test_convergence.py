"""Subsampled repetitions of the trace estimator and the CRN / shared-trajectory comparisons
(sbgc.experiments.convergence), on synthetic per-probe values with known statistics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from sbgc.checks.analytic import GaussianMixtureClasses
from sbgc.method.classify import ClassLikelihoods, class_log_likelihoods
from sbgc.method.likelihood import SolverSettings
from sbgc.experiments.convergence import (
    accuracy_curve,
    best_wrong_class,
    class_log_likelihoods_independent,
    TimedRun,
    dequantization_std,
    equal_compute_table,
    likelihood_curves,
    network_passes,
    probe_std,
    subsample_indices,
    subsample_means,
    variant_curves,
)
from sbgc.method.likelihood import log_likelihood


def _synthetic(b: int, k: int, n: int, gap: float, sigma: float, shared: float, seed: int):
    """Per-probe log-likelihoods [B, K, n]: class means 0 except the label's (+gap), probe noise of
    std sigma, a fraction ``shared`` of its variance common to all classes of an image (CRN)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, b)
    means = np.zeros((b, k))
    means[np.arange(b), y] = gap
    common = rng.normal(size=(b, 1, n))
    own = rng.normal(size=(b, k, n))
    noise = sigma * (math.sqrt(shared) * common + math.sqrt(1 - shared) * own)
    return means[..., None] + noise + rng.normal(0, 50, (b, 1, 1)), y  # + an image-level offset


def test_subsets_are_without_replacement_and_shared_across_leading_axes():
    rng = np.random.default_rng(0)
    idx = subsample_indices(10, 4, 50, rng)
    assert idx.shape == (50, 4) and idx.min() >= 0 and idx.max() < 10
    assert all(len(set(row)) == 4 for row in idx.tolist())
    v = np.arange(2 * 3 * 10, dtype=float).reshape(2, 3, 10)
    means = subsample_means(v, 10, 3, rng)
    np.testing.assert_allclose(means, np.broadcast_to(v.mean(-1), (3, 2, 3)))  # m = n: every subset is all
    # the same subset for every image and class: offsets between entries survive exactly
    means = subsample_means(v, 2, 7, rng)
    np.testing.assert_allclose(means - means[:, :1, :1], np.broadcast_to(v[:, :, :1] - v[:1, :1, :1], (7, 2, 3, 1))[..., 0])
    with pytest.raises(ValueError, match=r"m must be in \[1, 10\]"):
        subsample_indices(10, 11, 5, rng)


def test_subset_means_scatter_with_the_finite_population_variance():
    """Means of m of n iid values of std σ scatter around the n-mean with variance σ²/m · (n − m)/(n − 1)."""
    rng = np.random.default_rng(1)
    n, sigma = 20, 3.0
    v = sigma * rng.normal(size=(400, n))
    for m in (1, 5, 15):
        spread = subsample_means(v, m, 300, rng).std(axis=0, ddof=1)  # [400]
        expect = v.std(axis=1, ddof=1) * math.sqrt((n - m) / (n - 1) / m)
        assert np.sqrt(np.mean(spread**2)) == pytest.approx(np.sqrt(np.mean(expect**2)), rel=0.03)


def test_accuracy_curve_follows_the_gaussian_prediction_and_crn_removes_the_noise():
    b, k, n, gap, sigma = 3000, 2, 16, 1.0, 2.0
    v, y = _synthetic(b, k, n, gap, sigma, shared=0.0, seed=2)
    rng = np.random.default_rng(3)
    curve = accuracy_curve(v, y, [1, 4, 16], 20, rng)
    # independent noise: the m-mean margin is N(gap, 2σ²/m)
    expect = norm.cdf(gap / (sigma * np.sqrt(2 / np.array([1, 4, 16]))))
    np.testing.assert_allclose(curve.mean, expect, atol=4 * math.sqrt(0.25 / b))
    assert np.all(np.diff(curve.mean) > 0) and curve.std[-1] == 0.0 and curve.std[0] > 0
    assert curve.values.shape == (3, 20)
    # 90 % of the noise shared across classes (CRN): the margin's noise is σ²·0.1·2/m
    crn, y2 = _synthetic(b, k, n, gap, sigma, shared=0.9, seed=2)
    crn_curve = accuracy_curve(crn, y2, [1, 4, 16], 20, rng)
    expect_crn = norm.cdf(gap / (sigma * np.sqrt(0.1 * 2 / np.array([1, 4, 16]))))
    np.testing.assert_allclose(crn_curve.mean, expect_crn, atol=4 * math.sqrt(0.25 / b))
    assert np.all(crn_curve.mean > curve.mean)


def test_likelihood_curves_sem_and_the_best_wrong_class():
    b, k, n, gap, sigma = 2000, 5, 30, 3.0, 4.0
    v, y = _synthetic(b, k, n, gap, sigma, shared=0.75, seed=4)
    ms = np.array([1, 2, 5, 10, 30])
    ll = likelihood_curves(v, y, ms, 10, np.random.default_rng(5))
    np.testing.assert_allclose(ll.correct_sem, sigma / np.sqrt(ms), rtol=0.03)  # s/√m
    np.testing.assert_allclose(ll.wrong_sem, sigma / np.sqrt(ms), rtol=0.05)
    np.testing.assert_allclose(ll.margin_sem, sigma * np.sqrt(2 * 0.25 / ms), rtol=0.05)  # CRN cancels 75 %
    offset = v.mean(axis=(1, 2)).mean() - gap / k  # the image-level offsets' mean
    # the correct class is unbiased at every m ...
    np.testing.assert_allclose(ll.correct_mean - offset, gap, atol=4 * sigma / math.sqrt(b))
    # ... the best wrong class is the maximum of 4 noisy zeros: biased upwards, less so with more m
    expected_max = 1.0294 * sigma * math.sqrt(0.25)  # E max of 4 N(0,1) = 1.0294; only own noise differs
    assert ll.wrong_mean[0] - offset == pytest.approx(expected_max, rel=0.1)
    assert np.all(np.diff(ll.wrong_mean) < 0)
    np.testing.assert_allclose(ll.margin_mean, ll.correct_mean - ll.wrong_mean)
    assert ll.first_m_correct.shape == (5,) and ll.first_m_correct[-1] == pytest.approx(ll.correct_mean[-1])
    stds = probe_std(v, y)
    assert set(stds) == {"correct", "wrong", "margin"} and stds["margin"].shape == (b,)


def test_input_checks():
    v, y = _synthetic(4, 3, 5, 1.0, 1.0, 0.0, 0)
    with pytest.raises(ValueError, match=r"shape \[B, K, n\]"):
        accuracy_curve(v[..., :1], y, [1], 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        accuracy_curve(v, y + 3, [1], 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"every m must be in \[1, 5\]"):
        likelihood_curves(v, y, [0, 2], 2, np.random.default_rng(0))
    np.testing.assert_array_equal(best_wrong_class(np.array([[5.0, 4.0, 6.0], [1.0, 3.0, 2.0]]), np.array([2, 1])), [0, 2])


def test_dequantization_std_recovers_a_known_spread():
    rng = np.random.default_rng(6)
    b, k, n, tau, sigma = 300, 10, 8, 2.5, 4.0
    base = rng.normal(0, 30, (b, k, 1))
    crn = base + tau * rng.normal(size=(b, 1, 1)) + sigma * rng.normal(size=(b, k, n))  # one u per image
    ind = base + tau * rng.normal(size=(b, k, 1)) + sigma * rng.normal(size=(b, k, n))  # one u per class
    assert dequantization_std(crn, ind) == pytest.approx(tau, rel=0.1)
    assert dequantization_std(crn, crn) == 0.0


def test_cost_model_and_equal_compute():
    np.testing.assert_allclose(network_passes([100, 200], 9, shared_trajectory=True), [1000, 2000])
    np.testing.assert_allclose(network_passes([900], 9, shared_trajectory=False), [1800])
    b, k, n = 40, 3, 6
    per_probe, y = _synthetic(b, k, n, 2.0, 1.0, 0.0, seed=8)
    table = lambda nfe: ClassLikelihoods(per_probe.mean(-1), per_probe, *(np.zeros((b, k)),) * 2, nfe,
                                         *(np.zeros((b, k, n)),) * 2, 0.0, 4)  # fmt: skip
    shared = TimedRun(table(np.full((b, k), 50)), 3.0, True, "shared")
    separate = TimedRun(table(np.full((b, k), 6 * 40)), 9.0, False, "independent solves")
    np.testing.assert_allclose(shared.passes_per_image([1, 6]), [k * 50 * 2, k * 50 * 7])  # nfe (1 + m)
    np.testing.assert_allclose(separate.passes_per_image([1, 6]), [k * 40 * 2, k * 40 * 12])  # 2 m nfe
    curves = [variant_curves(run, y, 10, np.random.default_rng(0)) for run in (shared, separate)]
    assert curves[1].passes[-1] == pytest.approx(1440) and curves[0].passes[-1] == pytest.approx(1050)
    text = equal_compute_table(curves)
    # budget = 1050 passes: the shared solve affords all 6 repetitions, independent solves 4 (960 passes)
    assert "| shared | 6 | 1,050 |" in text and "| independent solves | 4 | 960 |" in text
    np.testing.assert_allclose(curves[0].margin_se, np.sqrt(np.mean(probe_std(per_probe, y)["margin"] ** 2) / np.arange(1, 7)))
    first = shared.head(10, "first ten")
    assert first.label == "first ten" and first.seconds == pytest.approx(0.75)
    np.testing.assert_array_equal(first.result.log_p_probes, per_probe[:10])
    assert first.result.dim == 4 and first.passes_per_image(6) == pytest.approx(k * 50 * 7)
    with pytest.raises(ValueError, match=r"b must be in \[1, 40\]"):
        shared.head(41)
    extra = variant_curves(shared, y, 10, np.random.default_rng(0), extra_margin_var=4.0)
    assert np.all(extra.margin_se > 2.0) and extra.margin_se[-1] == pytest.approx(np.sqrt(curves[0].margin_se[-1] ** 2 + 4))


@pytest.mark.slow
def test_independent_random_numbers_per_class():
    """A score that ignores the label: CRN gives identical classes; independent draws do not, and each
    class equals a separate log_likelihood call with the key fold_in(key, k)."""
    mix = GaussianMixtureClasses([[[0.2, -0.3, 0.1, 0.0], [-0.4, 0.2, 0.0, 0.3]]] * 3, [[0.4, 0.3]] * 3)
    score = lambda x, t, y: mix.score(x, t, jnp.zeros_like(y))  # the same density for every label
    x = np.array([[100, 140, 120, 131], [90, 150, 128, 110]], np.uint8)
    kw = dict(n_probes=4, solver=SolverSettings(rtol=1e-3, atol=1e-3), progress=False)
    key = jax.random.key(7)
    crn = class_log_likelihoods(score, mix.sde, x, key, n_classes=3, **kw)
    ind = class_log_likelihoods_independent(score, mix.sde, x, key, n_classes=3, **kw)
    np.testing.assert_allclose(crn.log_p_probes, np.broadcast_to(crn.log_p_probes[:, :1], crn.log_p_probes.shape), rtol=1e-6)
    assert ind.log_p_probes.shape == (2, 3, 4) and ind.nfe.shape == (2, 3)
    assert np.abs(ind.log_p[:, 1] - ind.log_p[:, 0]).min() > 1e-4
    one = log_likelihood(score, mix.sde, x, np.full(2, 2, np.int32), jax.random.fold_in(key, 2), **kw)
    np.testing.assert_allclose(ind.log_p_probes[:, 2], one.log_p_probes, rtol=1e-6)
    np.testing.assert_array_equal(ind.predict(), np.argmax(ind.log_p, axis=1))


def test_sufficient_repetitions_is_the_first_m_within_the_sample_resolution():
    from sbgc.experiments.convergence import RepetitionCurve, sufficient_repetitions

    ms = np.arange(1, 6)
    mean = np.array([0.80, 0.88, 0.905, 0.91, 0.91])
    curve = RepetitionCurve(ms, mean[:, None], mean, np.zeros(5))
    m, tol = sufficient_repetitions(curve, n_images=300)
    assert tol == pytest.approx(np.sqrt(0.91 * 0.09 / 300)) and m == 3  # 0.88 is 3 points off, 0.905 within 1.65
    assert sufficient_repetitions(curve, n_images=300, tolerance=0.05)[0] == 2
    assert sufficient_repetitions(curve, n_images=300, tolerance=0.0)[0] == 4
