"""The closed-form class-conditional Gaussian mixture (sbgc.checks.analytic)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from sbgc.checks.analytic import GaussianMixtureClasses
from sbgc.method.sde import SDE


def _mixture(kind="subvp"):
    means = np.array(
        [
            [[1.0, 0.0, 0.5], [-1.0, 1.0, 0.0]],
            [[0.0, 0.0, 2.0], [0.0, -1.0, 0.5]],
            [[2.0, 2.0, 0.0], [0.5, 0.5, 0.5]],
        ]
    )
    stds = np.array([[0.5, 0.7], [0.6, 0.4], [0.3, 0.9]])
    weights = np.array([[1.0, 3.0], [1.0, 1.0], [2.0, 1.0]])
    return GaussianMixtureClasses(means, stds, weights, SDE(kind))


def test_log_prob_matches_scipy_mixture_density():
    mix = _mixture()
    x = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2, 2], np.int32)
    w = np.array([[0.25, 0.75], [0.5, 0.5], [2 / 3, 1 / 3]])
    means = np.asarray(mix.means)
    stds = np.asarray(mix.stds)
    expect = [
        np.log(sum(w[k, j] * stats.multivariate_normal(means[k, j], stds[k, j] ** 2).pdf(xi) for j in range(2)))
        for xi, k in zip(x, y)
    ]
    np.testing.assert_allclose(mix.log_prob(x, y), expect, rtol=1e-5)
    np.testing.assert_allclose(mix.class_log_probs(x)[np.arange(7), y], expect, rtol=1e-5)


@pytest.mark.parametrize("kind", ["subvp", "vp"])
def test_marginal_matches_diffused_samples(kind):
    """p_t(x | y) from the closed form has the moments of samples pushed through the kernel."""
    mix = GaussianMixtureClasses.isotropic_gaussians(np.array([[3.0, -1.0], [0.0, 2.0]]), 0.5, SDE(kind))
    t = 0.3
    x0, y = mix.sample(jax.random.key(0), 20000)
    z = jax.random.normal(jax.random.key(1), x0.shape)
    xt = mix.sde.mean_coeff(t) * x0 + mix.sde.marginal_std(t) * z
    mean, var = mix.marginal_params(jnp.full((1,), t))  # [1, K, 1, D], [1, K, 1]
    for k in range(2):
        sel = np.asarray(xt[y == k])
        np.testing.assert_allclose(sel.mean(0), mean[0, k, 0], atol=0.02)
        np.testing.assert_allclose(sel.var(0), np.full(2, var[0, k, 0]), rtol=0.04)


@pytest.mark.parametrize("t", [0.0, 1e-3, 0.5, 1.0])
def test_score_equals_gradient_of_marginal_log_prob(t):
    mix = _mixture()
    x = 1.5 * jax.random.normal(jax.random.key(2), (9, 3))
    y = jnp.arange(9, dtype=jnp.int32) % 3
    grad = jax.grad(lambda z: mix.marginal_log_prob(z, t, y).sum())(x)
    np.testing.assert_allclose(mix.score(x, t, y), grad, rtol=1e-4, atol=1e-4)


def test_sample_class_moments():
    mix = _mixture()
    x, y = mix.sample(jax.random.key(3), 20000)
    assert x.shape == (60000, 3) and x.dtype == jnp.float32 and y.dtype == jnp.int32
    w = np.exp(np.asarray(mix.log_weights))
    for k in range(3):
        expect = (w[k, :, None] * np.asarray(mix.means[k])).sum(0)
        np.testing.assert_allclose(np.asarray(x[y == k]).mean(0), expect, atol=0.03)


def test_two_gaussian_bayes_accuracy_closed_form_matches_monte_carlo():
    mix = GaussianMixtureClasses.isotropic_gaussians(np.array([[-1.0, 0.0], [1.0, 0.0]]), 0.8)
    expect = 0.5 * (1 + math.erf(1.25 / math.sqrt(2)))
    assert mix.two_gaussian_bayes_accuracy() == pytest.approx(expect, abs=1e-6)  # float32 parameters
    n = 20000
    x, y = mix.sample(jax.random.key(4), n // 2)
    acc = float(jnp.mean(mix.bayes_predict(x) == y))
    assert abs(acc - expect) < 4 * math.sqrt(expect * (1 - expect) / n)
    # The Bayes rule here is the sign of x₀.
    np.testing.assert_array_equal(mix.bayes_predict(x), (x[:, 0] > 0).astype(int))


def test_terminal_density_is_close_to_but_not_the_prior():
    mix = GaussianMixtureClasses.isotropic_gaussians(np.array([[3.0, 3.0]]), 0.5)
    z = jax.random.normal(jax.random.key(5), (100, 2))
    y = jnp.zeros(100, jnp.int32)
    gap = np.abs(np.asarray(mix.terminal_log_prob(z, y) - mix.sde.prior_logp(z)))
    assert 1e-4 < gap.max() < 0.2


def test_bad_input_raises():
    with pytest.raises(ValueError, match="means must have shape"):
        GaussianMixtureClasses(np.zeros((2, 3)), np.ones((2, 1)))
    with pytest.raises(ValueError, match="stds must be positive"):
        GaussianMixtureClasses(np.zeros((2, 1, 3)), np.array([[1.0], [0.0]]))
    with pytest.raises(ValueError, match="weights must have shape"):
        GaussianMixtureClasses(np.zeros((2, 1, 3)), np.ones((2, 1)), np.ones((2, 2)))
    mix = _mixture()
    with pytest.raises(ValueError, match=r"x must have shape \[B, 3\]"):
        mix.log_prob(np.zeros((4, 2)), np.zeros(4, np.int32))
    with pytest.raises(ValueError, match="y must have shape"):
        mix.log_prob(np.zeros((4, 3)), np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="integer class labels"):
        mix.score(np.zeros((4, 3)), 0.1, np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="closed form needs 2 classes"):
        mix.two_gaussian_bayes_accuracy()
