"""The generative classifier (sbgc.method.classify) on closed-form class-conditional Gaussian mixtures."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbgc.checks.analytic import GaussianMixtureClasses
from sbgc.method.classify import (
    class_log_likelihoods,
    class_log_likelihoods_pure,
    log_marginal,
    predict,
)
from sbgc.method.likelihood import SolverSettings, log_likelihood, prepare_batch

UNIT = dict(dequantize=False, data_scaling="unit", progress=False)


def test_predict_and_log_marginal():
    log_p = np.array([[-10.0, -3.0, -7.0], [-1000.0, -1001.0, -2000.0]])
    np.testing.assert_array_equal(predict(log_p), [1, 0])
    expect = np.log(np.exp(log_p[0]).mean())
    assert log_marginal(log_p)[0] == pytest.approx(expect, abs=1e-12)
    # Large magnitudes: no underflow, and the paper's sum is log K larger than the mean.
    paper_sum = -1000.0 + math.log(1 + math.exp(-1) + math.exp(-1000))
    assert log_marginal(log_p)[1] == pytest.approx(paper_sum - math.log(3), abs=1e-9)
    # 10 classes, D = 3072: the two conventions differ by log(10) / (D ln 2) bits/dim.
    assert math.log(10) / (3072 * math.log(2)) == pytest.approx(0.0011, abs=5e-5)
    with pytest.raises(ValueError, match=r"log_p must have shape \[B, K\]"):
        predict(np.zeros(3))
    with pytest.raises(ValueError, match=r"log_p must have shape \[B, K\]"):
        log_marginal(np.zeros((2, 3, 4)))


def test_classifier_reaches_the_bayes_accuracy():
    """Two Gaussians in 2-D: the ODE classifier makes the Bayes decisions, at the Bayes accuracy."""
    mix = GaussianMixtureClasses.isotropic_gaussians(np.array([[-0.6, 0.3], [0.6, -0.3]]), 0.7)
    n = 150
    x, y = mix.sample(jax.random.key(0), n)
    res = class_log_likelihoods(
        mix.score, mix.sde, x, None, n_classes=2, probe="exact", prior_logp_fn=mix.terminal_log_prob, **UNIT
    )
    closed = np.asarray(mix.class_log_probs(x))
    assert np.max(np.abs(res.log_p - closed)) / 2 < 1e-3  # nats per dimension
    bayes = np.asarray(mix.bayes_predict(x))
    margin = np.abs(closed[:, 1] - closed[:, 0])
    decided = margin > 1e-2  # away from the boundary, where solver error cannot flip the argmax
    assert decided.mean() > 0.97
    np.testing.assert_array_equal(res.predict()[decided], bayes[decided])
    assert np.mean(res.predict() == bayes) > 0.99
    p = mix.two_gaussian_bayes_accuracy()  # Φ(‖Δμ‖/(2s)) = Φ(0.958) ≈ 0.831
    acc = np.mean(res.predict() == np.asarray(y))
    assert abs(acc - p) < 4 * math.sqrt(p * (1 - p) / (2 * n)), (acc, p)


def test_mixture_classes_match_closed_form_with_hutchinson_probes():
    """Three classes of two-component mixtures in 3-D, Rademacher probes shared across classes."""
    means = [[[1.0, 0.0, 0.5], [-1.0, 1.0, 0.0]], [[0.0, 0.0, 2.0], [0.0, -1.0, 0.5]], [[2.0, 2.0, 0.0], [0.5, 0.5, 0.5]]]
    mix = GaussianMixtureClasses(np.array(means), [[0.5, 0.7], [0.6, 0.4], [0.3, 0.9]], [[1, 3], [1, 1], [2, 1]])
    x, _ = mix.sample(jax.random.key(1), 4)  # 12 points × 3 classes
    res = class_log_likelihoods(
        mix.score, mix.sde, x, jax.random.key(2), n_classes=3, n_probes=64,
        prior_logp_fn=mix.terminal_log_prob, **UNIT,
    )  # fmt: skip
    closed = np.asarray(mix.class_log_probs(x))
    assert res.log_p.shape == (12, 3) and res.log_p_probes.shape == (12, 3, 64)
    # In D = 3 a Rademacher probe takes only 4 sign patterns (up to sign): 64 probes make the
    # standard-error estimate reliable (with 16, one point's SE was underestimated 3-fold).
    se = res.log_p_probes.std(axis=-1, ddof=1) / 8
    assert np.all(np.abs(res.log_p - closed) < 4 * se + 4e-3)
    np.testing.assert_array_equal(res.predict(), closed.argmax(1))
    np.testing.assert_allclose(res.log_marginal(), log_marginal(closed), atol=4 * se.max() + 4e-3)


@pytest.mark.slow
def test_common_random_numbers_across_classes():
    """A score that ignores y gives IDENTICAL class log-likelihoods only if every class of an image
    sees the same dequantization noise and the same probes; another key gives other values."""
    mix = GaussianMixtureClasses(np.array([[[0.3, -0.2, 0.1, 0.0], [-0.3, 0.2, 0.0, 0.2]]]), [[0.3, 0.4]])

    def score_ignoring_label(xx, t, yy):  # images [B, 2, 2, 1]
        flat = mix.score(xx.reshape(xx.shape[0], -1), t, jnp.zeros_like(yy))
        return flat.reshape(xx.shape)

    px = jax.random.randint(jax.random.key(3), (4, 2, 2, 1), 0, 256).astype(jnp.uint8)
    kw = dict(n_classes=3, n_probes=4, data_scaling="centered", progress=False)
    a = class_log_likelihoods(score_ignoring_label, mix.sde, px, jax.random.key(4), **kw)
    np.testing.assert_allclose(a.log_p_probes, np.broadcast_to(a.log_p_probes[:, :1], a.log_p_probes.shape), atol=1e-5)
    b = class_log_likelihoods(score_ignoring_label, mix.sde, px, jax.random.key(5), **kw)
    assert np.all(np.abs(a.log_p - b.log_p) > 1e-3)
    # The same key in log_likelihood for one class reproduces that column (same per-image draws).
    one = log_likelihood(score_ignoring_label, mix.sde, px, np.full(4, 2, np.int32), jax.random.key(4),
                         n_probes=4, data_scaling="centered", progress=False)  # fmt: skip
    np.testing.assert_allclose(one.log_p_probes, a.log_p_probes[:, 2], atol=1e-5)
    # A block of the batch, passed with its offset, gets the draws it has in the whole batch (so a
    # sample can be evaluated and cached block by block); without the offset it gets other draws.
    block = class_log_likelihoods(score_ignoring_label, mix.sde, px[2:], jax.random.key(4), first_image=2, **kw)
    np.testing.assert_allclose(block.log_p_probes, a.log_p_probes[2:], atol=1e-5)
    unshifted = class_log_likelihoods(score_ignoring_label, mix.sde, px[2:], jax.random.key(4), **kw)
    assert np.all(np.abs(unshifted.log_p - a.log_p[2:]) > 1e-3)
    with pytest.raises(ValueError, match="first_image must be a non-negative int"):
        class_log_likelihoods(score_ignoring_label, mix.sde, px, jax.random.key(4), first_image=-1, **kw)


@pytest.mark.slow
def test_pure_version_matches_and_its_gradient_is_the_data_score():
    """∇ₓ log p₀(x | y) through the ODE solve equals the closed-form score at t = 0."""
    mix = GaussianMixtureClasses(np.array([[[1.0, -0.5], [-0.5, 0.5]], [[0.0, 1.0], [1.0, 1.0]]]), [[0.5, 0.6], [0.4, 0.7]])
    x, _ = mix.sample(jax.random.key(6), 2)  # [4, 2]
    settings = SolverSettings(rtol=1e-6, atol=1e-6)
    pure = lambda xx: class_log_likelihoods_pure(
        mix.score, mix.sde, xx, None, n_classes=2, solver=settings, data_scaling="unit",
        prior_logp_fn=mix.terminal_log_prob,
    )  # fmt: skip
    # Rows are independent, so the gradient of Σ_i log p(x_i | k) w.r.t. x holds every row's own.
    summed = lambda xx: (lambda lp, ok: (lp.sum(axis=0), (lp, ok)))(*pure(xx))
    grads, (log_p, ok) = jax.jit(jax.jacrev(summed, has_aux=True))(x)  # grads [K, B, D]
    assert bool(ok.all())
    checked = class_log_likelihoods(
        mix.score, mix.sde, x, None, n_classes=2, probe="exact", solver=SolverSettings(rtol=1e-6, atol=1e-6),
        prior_logp_fn=mix.terminal_log_prob, **UNIT,
    )  # fmt: skip
    np.testing.assert_allclose(log_p, checked.log_p, atol=1e-4)
    for k in range(2):
        expect = mix.score(x, 0.0, jnp.full((4,), k, jnp.int32))
        np.testing.assert_allclose(grads[k], expect, atol=1e-3)  # measured: ≤ 6e-5


def test_pure_version_uses_the_given_probes():
    mix = GaussianMixtureClasses(np.array([[[1.0, -0.5], [-0.5, 0.5]]]), [[0.5, 0.6]])
    x, _ = mix.sample(jax.random.key(7), 3)
    batch = prepare_batch(x, jax.random.key(8), n_probes=2, probe="gaussian", dequantize=False, data_scaling="unit")
    log_p, ok = class_log_likelihoods_pure(
        mix.score, mix.sde, x, batch.probes(np.arange(3)), n_classes=1, solver=SolverSettings(), data_scaling="unit"
    )
    res = class_log_likelihoods(mix.score, mix.sde, x, jax.random.key(8), n_classes=1, n_probes=2, probe="gaussian", **UNIT)
    assert bool(ok.all())
    np.testing.assert_allclose(log_p, res.log_p, atol=1e-4)


@pytest.mark.slow
def test_pure_version_solves_only_the_given_classes():
    """``classes`` [B, k] solves those classes of each image: the matching columns of the full table
    (a margin's gradient needs two of them), in the given order; a malformed array is refused."""
    mix = GaussianMixtureClasses(np.array([[[1.0, -0.5]], [[0.0, 1.0]], [[-1.0, 0.3]]]), [[0.5], [0.4], [0.6]])
    x = mix.sample(jax.random.key(9), 1)[0][:2]  # [2, 2]
    kw = dict(n_classes=3, solver=SolverSettings(rtol=1e-5, atol=1e-5), data_scaling="unit",
              prior_logp_fn=mix.terminal_log_prob)  # fmt: skip
    full, ok = class_log_likelihoods_pure(mix.score, mix.sde, x, None, **kw)
    pick = jnp.asarray([[2, 0], [1, 2]], jnp.int32)
    part, ok_part = class_log_likelihoods_pure(mix.score, mix.sde, x, None, classes=pick, **kw)
    assert part.shape == (2, 2) and bool(ok.all()) and bool(ok_part.all())
    np.testing.assert_allclose(part, np.take_along_axis(np.asarray(full), np.asarray(pick), axis=1), atol=1e-5)
    with pytest.raises(ValueError, match=r"classes must be an int array \[B=2, k\]"):
        class_log_likelihoods_pure(mix.score, mix.sde, x, None, classes=jnp.zeros((3,), jnp.int32), **kw)
