"""Interpolation paths, convexity statistics and f(t) along paths (sbgc.experiments.interpolation)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbgc.checks.analytic import GaussianMixtureClasses
from sbgc.method.classify import log_marginal
from sbgc.method.likelihood import SolverSettings
from sbgc.experiments.interpolation import (
    chord_gaps,
    convexity_statistics,
    curvature_per_probe,
    dequantize_pairs,
    interpolate,
    interpolation_times,
    path_log_likelihoods,
    probe_standard_error,
    random_pairs,
    second_differences,
)

UNIT = dict(data_scaling="unit", solver=SolverSettings(rtol=1e-5, atol=1e-5))


def test_paths_have_the_endpoints_and_are_straight():
    key = jax.random.key(0)
    x_a = jax.random.uniform(key, (3, 4, 4, 3))
    x_b = jax.random.uniform(jax.random.fold_in(key, 1), (3, 4, 4, 3))
    ts = interpolation_times(5)
    np.testing.assert_allclose(ts, [0, 0.25, 0.5, 0.75, 1.0])
    paths = np.asarray(interpolate(x_a, x_b, ts))
    assert paths.shape == (3, 5, 4, 4, 3)
    np.testing.assert_allclose(paths[:, 0], x_b, atol=1e-7)  # t = 0 is x_B (eq. 4)
    np.testing.assert_allclose(paths[:, -1], x_a, atol=1e-7)
    np.testing.assert_allclose(paths[:, 2], 0.5 * (x_a + x_b), atol=1e-6)
    np.testing.assert_allclose(paths[:, 1] - paths[:, 0], paths[:, 4] - paths[:, 3], atol=1e-6)
    with pytest.raises(ValueError, match="n_t must be an int >= 3"):
        interpolation_times(2)
    with pytest.raises(ValueError, match="continuous"):
        interpolate(np.zeros((2, 3), np.uint8), np.zeros((2, 3), np.uint8), ts)
    with pytest.raises(ValueError, match="same shape"):
        interpolate(x_a, x_b[:2], ts)


def test_random_pairs_are_distinct_and_cover_small_sets():
    pairs = random_pairs(50, 200, seed=1)
    assert pairs.shape == (200, 2) and pairs.min() >= 0 and pairs.max() < 50
    assert np.all(pairs[:, 0] != pairs[:, 1])
    assert len({tuple(sorted(p)) for p in pairs.tolist()}) == 200
    every = random_pairs(4, 6, seed=2)  # all 6 unordered pairs of 4 images
    assert {tuple(sorted(p)) for p in every.tolist()} == {(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)}
    np.testing.assert_array_equal(random_pairs(50, 20, seed=3), random_pairs(50, 20, seed=3))
    with pytest.raises(ValueError, match=r"n_pairs must be in \[1, 6\]"):
        random_pairs(4, 7, seed=0)


def test_dequantized_pairs_share_one_noise_draw():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    x_a, x_b = (np.asarray(v, np.float64) for v in dequantize_pairs(a, b, jax.random.key(3)))
    np.testing.assert_array_equal(np.floor(x_a * 256), a)  # (pixel + u)/256 with u in [0, 1)
    np.testing.assert_array_equal(np.floor(x_b * 256), b)
    # the same u in both endpoints: their difference is exactly the pixel difference
    np.testing.assert_allclose((x_a - x_b) * 256, a.astype(np.float64) - b, atol=1e-4)
    y_a, y_b = (np.asarray(v, np.float64) for v in dequantize_pairs(a, b, jax.random.key(3), shared_noise=False))
    assert np.abs((y_a - y_b) * 256 - (a.astype(np.float64) - b)).max() > 0.5
    with pytest.raises(ValueError, match="uint8"):
        dequantize_pairs(a.astype(np.float32), b, jax.random.key(0))


def test_second_differences_are_exact_for_quadratics_on_any_grid():
    ts = np.array([0.0, 0.1, 0.35, 0.4, 0.8, 1.0])
    f = np.stack([3.0 * ts**2 - ts + 2.0, -0.5 * ts**2 + 4.0 * ts])
    np.testing.assert_allclose(second_differences(f, ts), [[6.0] * 4, [-1.0] * 4], atol=1e-12)
    gaps = chord_gaps(f, ts)
    np.testing.assert_allclose(gaps[:, [0, -1]], 0.0, atol=1e-12)
    np.testing.assert_allclose(gaps[0], 3.0 * ts * (1 - ts), atol=1e-12)  # chord − a t² = a t (1 − t)
    with pytest.raises(ValueError, match="strictly increasing"):
        second_differences(f, ts[::-1])
    with pytest.raises(ValueError, match=r"shape \[P, T\] with T >= 3"):
        second_differences(f[:, :2], ts[:2])


def test_convexity_statistics_on_known_convex_concave_and_straight_curves():
    ts = interpolation_times(25)  # odd: t = ½ is a grid point
    rng = np.random.default_rng(0)
    a = rng.uniform(1.0, 3.0, 12)  # curvature f'' = 2a > 0
    level = rng.normal(0, 100, (12, 1)) + rng.normal(0, 5, (12, 1)) * ts  # endpoint levels and slopes
    convex = level + a[:, None] * (ts - 0.3) ** 2
    stats = convexity_statistics(convex, ts)
    np.testing.assert_allclose(stats.midpoint_gap, a / 4, rtol=1e-9)
    np.testing.assert_allclose(stats.mean_curvature, 2 * a, rtol=1e-9)
    assert stats.below_chord.successes == 12 and stats.below_chord.lo > 0.5
    assert stats.as_dict()["below_chord"]["sign_test_p"] == pytest.approx(2 / 2**12)  # the sign test, exact
    assert "p = 0.00049" in stats.to_markdown()
    assert stats.curvature.lo > 0 and stats.verdict() == "convex"
    concave = convexity_statistics(level - a[:, None] * (ts - 0.3) ** 2, ts)
    assert concave.below_chord.successes == 0 and concave.curvature.hi < 0 and concave.verdict() == "concave"
    straight = convexity_statistics(level + 0.0 * ts, ts)
    assert straight.verdict() == "undecided" and np.abs(straight.midpoint_gap).max() < 1e-10
    # noisy curves without curvature: the intervals cover zero
    noisy = convexity_statistics(level + rng.normal(0, 1, (12, 25)) * 1e-3, ts)
    assert noisy.verdict() == "undecided" and not noisy.curvature.excludes(0.0)
    with pytest.raises(ValueError, match="at least 2 pairs"):
        convexity_statistics(convex[:1], ts)


def test_probe_standard_error_of_a_known_noise():
    rng = np.random.default_rng(1)
    values = 5.0 + 2.0 * rng.normal(size=(2000, 16))
    se = probe_standard_error(values)
    assert np.sqrt(np.mean(se**2)) == pytest.approx(2.0 / 4.0, rel=0.03)


def _two_mode_mixture(d: int = 3):
    """One class with modes at ±1 along the first axis; a second class: one Gaussian at the origin."""
    modes = np.zeros((2, 2, d), np.float32)
    modes[0, 0, 0], modes[0, 1, 0] = 1.0, -1.0
    modes[1, :, 1] = 0.1  # class 1: both components at the same place (a single Gaussian)
    return GaussianMixtureClasses(modes, [[0.25, 0.25], [0.5, 0.5]])


def test_f_along_paths_matches_the_closed_form_and_detects_convexity():
    """Between the modes of a bimodal density f dips (convex); across one Gaussian it bulges."""
    mix = _two_mode_mixture()
    ts = interpolation_times(7)
    x_a = np.array([[1.0, 0.0, 0.0], [0.3, 0.3, 0.0]], np.float32)  # pair 0: mode to mode
    x_b = np.array([[-1.0, 0.0, 0.0], [-0.3, -0.3, 0.0]], np.float32)  # pair 1: across the origin
    paths = interpolate(x_a, x_b, ts)
    res = path_log_likelihoods(mix.score, mix.sde, paths, ts, None, n_classes=2, probe="exact",
                               prior_logp_fn=mix.terminal_log_prob, **UNIT)  # fmt: skip
    closed = np.asarray(mix.class_log_probs(np.asarray(paths).reshape(-1, 3))).reshape(2, 7, 2)
    assert res.class_log_p.shape == (2, 7, 2) and res.nfe.shape == (2, 7, 2)
    np.testing.assert_allclose(res.class_log_p, closed, atol=2e-3)
    np.testing.assert_allclose(res.log_p, log_marginal(closed.reshape(-1, 2)).reshape(2, 7), atol=2e-3)
    gaps = chord_gaps(res.log_p, ts)
    assert gaps[0, 3] > 1.0  # mode to mode: the midpoint lies far below the chord
    assert gaps[1, 3] < -0.1  # across the shared centre: above the chord
    with pytest.raises(ValueError, match="dequantize must be False"):
        path_log_likelihoods(mix.score, mix.sde, paths, ts, None, n_classes=2, dequantize=True, **UNIT)
    with pytest.raises(ValueError, match=r"continuous images \[P, T, ...\]"):
        path_log_likelihoods(mix.score, mix.sde, np.zeros((2, 7, 3), np.uint8), ts, None, **UNIT)


def test_the_same_probes_are_used_along_a_path():
    """A constant path (x_A = x_B) gives the same f at every t only if every t sees the same probes;
    different pairs see different probes."""
    sde = _two_mode_mixture().sde
    d = 8
    coupling = jnp.eye(d) + 0.3 * jax.random.normal(jax.random.key(5), (d, d))  # vᵀAv depends on v

    def score(x, t, y):  # a linear score with a non-diagonal Jacobian
        return -(x @ coupling.T) * (1.0 + 0.2 * y[:, None].astype(x.dtype))

    ts = interpolation_times(4)
    x = np.tile(np.linspace(-0.5, 0.5, d, dtype=np.float32), (2, 1))  # two pairs, the same point
    res = path_log_likelihoods(score, sde, interpolate(x, x, ts), ts, jax.random.key(4), n_classes=2,
                               n_probes=3, **dict(UNIT, solver=SolverSettings(rtol=1e-3, atol=1e-3)))  # fmt: skip
    per_probe = res.class_log_p_probes  # [P, T, K, n]
    np.testing.assert_allclose(per_probe, np.broadcast_to(per_probe[:, :1], per_probe.shape), rtol=1e-6)
    assert np.abs(per_probe[0] - per_probe[1]).max() > 1e-3  # pairs: independent probes
    curv = curvature_per_probe(res)
    assert curv.shape == (2, 3) and np.abs(curv).max() < 1e-2
