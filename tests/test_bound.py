"""The variational-bound classifier (sbgc.method.bound) against closed forms, the ODE, and the ci network.

Closed forms used here (all in float64, independent of the package's float32 schedule code):

* the expected bound for an isotropic Gaussian class N(μ, s² I) and the linear score c · ∇log p_t
  (c = 1: the exact score): with v = m² s² + σ², σ s_θ + z = c σ m (μ − x₀)/v + (1 − c σ²/v) z, so
  E‖σ s_θ + z‖² = c² σ² m² ‖μ − x₀‖²/v² + D (1 − c σ²/v)², integrated over t by quadrature;
* the density of the bound's model itself for that linear score: the reverse SDE is then linear,
  its marginal at ε Gaussian with moments from two ODEs, and the decoder linear-Gaussian.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from sbgc.checks.analytic import GaussianMixtureClasses
from sbgc.experiments import compute
from sbgc.method import bound as elbo
from sbgc.method.bound import BoundSettings as B
from sbgc.method.likelihood import SolverSettings, log_likelihood, prepare_batch
from sbgc.method.losses import denoising_error
from sbgc.method.sde import SDE

UNIT = dict(dequantize=False, data_scaling="unit", progress=False)
MEANS = np.array([[-1.0, 0.5], [1.0, -0.5]])
STD = 0.7
POINTS = np.array([[0.3, -0.2], [-1.5, 1.0], [2.0, 0.1]], np.float32)


# --- closed forms ------------------------------------------------------------------------------------
def _schedule(kind: str, t: float, beta_min: float = 0.1, beta_max: float = 20.0):
    """m(t), σ(t), g(t)², β(t) in float64."""
    b = beta_min * t + 0.5 * t * t * (beta_max - beta_min)
    beta = beta_min + t * (beta_max - beta_min)
    if kind == "vp":
        return math.exp(-0.5 * b), math.sqrt(-math.expm1(-b)), beta, beta
    return math.exp(-0.5 * b), -math.expm1(-b), beta * -math.expm1(-2 * b), beta


def _expected_denoising_error(kind, t, x0, mu, std, c):
    m, s, _, _ = _schedule(kind, t)
    v = m * m * std * std + s * s
    return c * c * s * s * m * m * float(np.sum((mu - x0) ** 2)) / v**2 + x0.size * (1 - c * s * s / v) ** 2


def _expected_bound(kind, x0, mu, std, c, eps=1e-5, T=1.0):
    """E L(x₀) for the class N(mu, std² I) with score c · (exact score), by quadrature in log t."""
    x0, mu = np.asarray(x0, np.float64), np.asarray(mu, np.float64)
    d = x0.size

    def integrand(log_t):
        t = math.exp(log_t)
        _, s, g2, _ = _schedule(kind, t)
        return g2 / s**2 * _expected_denoising_error(kind, t, x0, mu, std, c) * t

    diffusion, _ = integrate.quad(integrand, math.log(eps), math.log(T), limit=500, epsabs=1e-10, epsrel=1e-10)
    m_e, s_e, _, _ = _schedule(kind, eps)
    m_t, s_t, _, _ = _schedule(kind, T)
    kl = 0.5 * (m_t**2 * float(np.sum(x0**2)) + d * (s_t**2 - 1 - 2 * math.log(s_t)))
    decoder_error = _expected_denoising_error(kind, eps, x0, mu, std, c)
    decoder = -0.5 * d * math.log(2 * math.pi * s_e**2 / m_e**2) - 0.5 * decoder_error
    return decoder - kl - 0.5 * diffusion


def _expected_uniform_score(kind, x0, mu, std, c, eps=1e-5, T=1.0):
    """E of the uniform-weighted denoising score: −½ ∫_ε^T E‖σ s_θ + z‖² dt (λ = σ²), by quadrature."""
    x0, mu = np.asarray(x0, np.float64), np.asarray(mu, np.float64)
    integral, _ = integrate.quad(lambda t: _expected_denoising_error(kind, t, x0, mu, std, c), eps, T, limit=500,
                                 epsabs=1e-10, epsrel=1e-10)  # fmt: skip
    return -0.5 * integral


def _model_log_density(kind, x0, mu, std, c, eps=1e-5, T=1.0):
    """log density at x₀ of the bound's model (reverse SDE from N(0, I) with score c · exact, then the
    Gaussian decoder). Reverse time r = T − t: dY = [(½β − c g²/v) Y + c g² m μ / v] dr + g dW."""
    from scipy.integrate import solve_ivp

    mu = np.asarray(mu, np.float64)

    def moments(r, state):
        m, s, g2, beta = _schedule(kind, T - r)
        v = m * m * std * std + s * s
        k = 0.5 * beta - c * g2 / v
        return np.concatenate([k * state[:-1] + c * g2 * m * mu / v, [2 * k * state[-1] + g2]])

    sol = solve_ivp(moments, (0.0, T - eps), np.concatenate([np.zeros_like(mu), [1.0]]), method="DOP853",
                    rtol=1e-11, atol=1e-12)  # fmt: skip
    mean_eps, var_eps = sol.y[:-1, -1], sol.y[-1, -1]
    m, s, _, _ = _schedule(kind, eps)
    r = 1 - c * s * s / (m * m * std * std + s * s)  # decoder: x₀ = (r x_ε + c σ² m μ / v) / m + (σ/m) ξ
    mean = (r * mean_eps + (1 - r) * mu * m) / m
    var = (r * r * var_eps + s * s) / m**2
    sq = float(np.sum((np.asarray(x0, np.float64) - mean) ** 2))
    return -0.5 * mu.size * math.log(2 * math.pi * var) - 0.5 * sq / var


def _gauss_log_density(x0, mu, std):
    x0, mu = np.asarray(x0, np.float64), np.asarray(mu, np.float64)
    return -0.5 * x0.size * math.log(2 * math.pi * std**2) - 0.5 * float(np.sum((x0 - mu) ** 2)) / std**2


def _mixture(kind="subvp"):
    return GaussianMixtureClasses.isotropic_gaussians(MEANS, STD, sde=SDE(kind))


# --- the terms ------------------------------------------------------------------------------------------
def test_terms_match_the_training_loss_and_the_gaussian_decoder():
    mix = _mixture()
    sde = mix.sde
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    x0 = jax.random.normal(k1, (6, 2))
    t = jax.random.uniform(k2, (6,), minval=1e-3, maxval=1.0)
    z = jax.random.normal(k3, (6, 2))
    y = jnp.array([0, 1, 0, 1, 0, 1])
    err, z_sq, ss = elbo.denoising_terms(mix.score, sde, x0, y, t, z)
    np.testing.assert_allclose(err, denoising_error(mix.score, sde, x0, y, t, z), rtol=1e-6)
    np.testing.assert_allclose(z_sq, np.sum(np.asarray(z) ** 2, axis=1), rtol=1e-6)
    sigma = np.asarray(sde.marginal_std(t))[:, None]
    sigma_s = sigma * np.asarray(mix.score(sde.marginal(x0, t)[0] + sigma * z, t, y))
    np.testing.assert_allclose(ss, np.sum(sigma_s**2, axis=1), rtol=1e-5)

    # The decoder: N(x₀; (x_ε + σ² s)/m, σ²/m²) evaluated directly (float64, ε = 1e-2 so that x_ε
    # still resolves σ z) equals −(D/2) log(2π σ²/m²) − ½ ‖σ s + z‖².
    eps = 1e-2
    m, s, _, _ = _schedule("subvp", eps)
    x0_np, z_np = np.array([0.4, -0.9]), np.array([1.3, 0.2])
    x_eps = m * x0_np + s * z_np
    v = m * m * STD**2 + s * s
    score = (m * MEANS[0] - x_eps) / v  # exact score of class 0
    dec_mean, dec_std = (x_eps + s * s * score) / m, s / m
    direct = float(np.sum(-0.5 * np.log(2 * np.pi * dec_std**2) - 0.5 * ((x0_np - dec_mean) / dec_std) ** 2))
    h = float(np.sum((s * score + z_np) ** 2))
    assert elbo.decoder_log_prob(sde, eps, h, 2) == pytest.approx(direct, rel=1e-5, abs=1e-6)

    # Prior term: KL = cross-entropy − entropy of N(m_T x₀, σ_T² I) against N(0, I).
    for kind in ("subvp", "vp"):
        m_t, s_t, _, _ = _schedule(kind, 1.0)
        xx = np.array([[3.0, -2.0, 0.5]])
        cross = 1.5 * math.log(2 * math.pi) + 0.5 * (m_t**2 * np.sum(xx**2) + 3 * s_t**2)
        entropy = 1.5 * math.log(2 * math.pi * math.e * s_t**2)
        assert float(elbo.prior_kl(SDE(kind), jnp.asarray(xx))[0]) == pytest.approx(cross - entropy, abs=2e-5)

    # The control variate's weight: 0 without it, in (0, 1], → 1 as t → 0, decreasing in t.
    ts = jnp.array([1e-5, 1e-3, 0.1, 0.5, 1.0])
    assert np.all(np.asarray(elbo.control_variate_weight(sde, ts, None)) == 0)
    gamma = np.asarray(elbo.control_variate_weight(sde, ts, 0.5))
    assert gamma[0] == pytest.approx(1.0, abs=1e-6) and np.all(np.diff(gamma) < 0) and gamma[-1] > 0


# --- the bound in closed form ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["subvp", "vp"])
def test_closed_form_bound_lies_below_the_density_of_its_model(kind):
    """Exact score: the bound equals log p₀ to 1e-3 nats (the decoder gap vanishes at ε = 1e-5).
    A wrong score (c ≠ 1): the bound lies strictly below the density of its OWN model (reverse SDE +
    decoder), which is not the data density; the bound may then exceed log p₀."""
    above_data = []
    for x0 in POINTS:
        for mu in MEANS:
            exact = _gauss_log_density(x0, mu, STD)
            assert _model_log_density(kind, x0, mu, STD, 1.0) == pytest.approx(exact, abs=1e-3)
            assert _expected_bound(kind, x0, mu, STD, 1.0) == pytest.approx(exact, abs=1e-3)
            for c in (0.8, 1.2):
                bound = _expected_bound(kind, x0, mu, STD, c)
                assert bound < _model_log_density(kind, x0, mu, STD, c) - 0.01, (x0, mu, c)
                above_data.append(bound > exact)
    assert any(above_data)  # a bound on the model's density, not on the data's


@pytest.mark.parametrize("sampling", ["stratified", "importance"])
def test_estimate_is_unbiased_with_a_calibrated_error_bar(sampling):
    """4,000 independent estimates (K = 16) of the bound at one point, both classes."""
    mix = _mixture()
    x = np.repeat(POINTS[1:2], 4000, axis=0)
    res = elbo.class_log_bounds(mix.score, mix.sde, x, jax.random.key(3), n_classes=2,
                                settings=B(n_times=16, sampling=sampling, data_std=STD), chunk_size=32768, **UNIT)  # fmt: skip
    closed = np.array([_expected_bound("subvp", POINTS[1], mu, STD, 1.0) for mu in MEANS])
    spread = res.log_p.std(axis=0)
    assert np.all(np.abs(res.log_p.mean(axis=0) - closed) < 4 * spread / math.sqrt(len(x)))
    ratio = res.log_p_se.mean(axis=0) / spread  # reported vs actual error of one estimate
    assert np.all((ratio > 0.8) & (ratio < 1.5)), ratio
    assert np.all(res.nfe == 17)


@pytest.mark.parametrize("sampling", ["stratified", "importance"])
def test_uniform_weighting_is_the_unbiased_eps_mse_score_without_a_decoder_pass(sampling):
    """4,000 estimates (K = 16) of the uniform-in-t score at one point: mean = −½ ∫ E‖σ s + z‖² dt (closed
    form), calibrated error bar, K passes per class (no decoder), no bits/dim; not the bound."""
    mix = _mixture()
    x = np.repeat(POINTS[1:2], 4000, axis=0)
    settings = B(n_times=16, sampling=sampling, data_std=STD, weighting="uniform")
    res = elbo.class_log_bounds(mix.score, mix.sde, x, jax.random.key(3), n_classes=2, settings=settings,
                                chunk_size=32768, **UNIT)  # fmt: skip
    closed = np.array([_expected_uniform_score("subvp", POINTS[1], mu, STD, 1.0) for mu in MEANS])
    bound = np.array([_expected_bound("subvp", POINTS[1], mu, STD, 1.0) for mu in MEANS])
    assert np.all(np.abs(closed - bound) > 1.0)  # a different quantity from the bound
    spread = res.log_p.std(axis=0)
    assert np.all(np.abs(res.log_p.mean(axis=0) - closed) < 4 * spread / math.sqrt(len(x)))
    ratio = res.log_p_se.mean(axis=0) / spread
    assert np.all((ratio > 0.8) & (ratio < 1.5)), ratio
    assert np.all(res.nfe == 16) and np.all(np.isnan(res.bpd)) and res.log_det == 0.0
    assert np.all(res.prior_term == 0) and np.all(res.decoder_term == 0)
    # times uniform on [ε, T]: stratified ones one per stratum of [ε, T]
    if sampling == "stratified":
        strata = np.floor((res.times - 1e-5) / (1.0 - 1e-5) * 16).astype(int)
        np.testing.assert_array_equal(strata, np.broadcast_to(np.arange(16), res.times.shape))
    assert not settings.is_bound and "not a bound" in settings.describe()


@pytest.mark.slow
@pytest.mark.parametrize("weighting", ["likelihood", "uniform"])
def test_the_differentiable_form_equals_the_table_for_either_weighting(weighting):
    """class_log_bounds_pure with bound_random_numbers gives the table's numbers, and the uniform weighting
    shares the times and noises across classes (a label-blind score gives equal classes)."""
    mix = _mixture()
    settings = B(n_times=8, data_std=STD, weighting=weighting)
    key = jax.random.key(4)
    table = elbo.class_log_bounds(mix.score, mix.sde, POINTS, key, n_classes=2, settings=settings, **UNIT)
    t, z = elbo.bound_random_numbers(mix.sde, key, jnp.arange(len(POINTS)), settings, (2,))
    np.testing.assert_allclose(t, table.times, rtol=1e-6)
    pure, ok = elbo.class_log_bounds_pure(mix.score, mix.sde, jnp.asarray(POINTS), t, z, settings=settings,
                                          n_classes=2, data_scaling="unit")  # fmt: skip
    assert bool(ok.all())
    np.testing.assert_allclose(pure, table.log_p, rtol=2e-5, atol=2e-4)
    blind = lambda x, t_, y: mix.score(x, t_, jnp.zeros_like(y))
    same = elbo.class_log_bounds(blind, mix.sde, POINTS, key, n_classes=3, settings=settings, **UNIT)
    np.testing.assert_array_equal(same.log_p[:, 1:], same.log_p[:, :1].repeat(2, axis=1))


def test_pruning_with_the_uniform_weighting_counts_no_decoder_pass():
    mix = _mixture()
    pruned = elbo.pruned_class_bounds(mix.score, mix.sde, POINTS, jax.random.key(1), n_classes=2, keep=1, second_times=10,
                                      settings=B(n_times=4, data_std=STD, weighting="uniform"), **UNIT)  # fmt: skip
    np.testing.assert_array_equal(pruned.nfe, 2 * 4 + 10)
    assert np.all(np.isfinite(pruned.log_p)) and np.all(pruned.kept.sum(axis=1) == 1)


def test_estimate_converges_to_the_closed_form_bound_and_stays_below_the_density():
    mix = _mixture()
    closed = np.array([[_expected_bound("subvp", x0, mu, STD, 1.0) for mu in MEANS] for x0 in POINTS])
    exact = np.array([[_gauss_log_density(x0, mu, STD) for mu in MEANS] for x0 in POINTS])
    errors = {}
    for k in (64, 1024, 8192):
        res = elbo.class_log_bounds(mix.score, mix.sde, POINTS, jax.random.key(k), n_classes=2,
                                    settings=B(n_times=k, data_std=STD), chunk_size=32768, **UNIT)  # fmt: skip
        assert np.all(np.abs(res.log_p - closed) < 4 * res.log_p_se), (k, res.log_p - closed, res.log_p_se)
        assert np.all(res.log_p < exact + 3 * res.log_p_se)  # never above the density beyond its error bar
        errors[k] = res.log_p_se
    assert np.all(errors[8192] < 0.2)  # nats
    assert np.all(errors[64] / errors[8192] > 6), errors  # ~ √(8192/64) ≈ 11 for a smooth integrand


def test_control_variate_keeps_the_mean_and_cuts_the_noise():
    mix = _mixture()
    x = np.repeat(POINTS[:1], 3000, axis=0)
    runs = {ds: elbo.class_log_bounds(mix.score, mix.sde, x, jax.random.key(5), n_classes=2,
                                      settings=B(n_times=16, data_std=ds), chunk_size=32768, **UNIT).log_p for ds in (STD, None)}  # fmt: skip
    se = np.sqrt(runs[STD].var(axis=0) + runs[None].var(axis=0)) / math.sqrt(len(x))
    assert np.all(np.abs(runs[STD].mean(axis=0) - runs[None].mean(axis=0)) < 4 * se)
    assert np.all(runs[STD].std(axis=0) < 0.5 * runs[None].std(axis=0))


# --- bookkeeping -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_common_random_numbers_chunking_and_dequantization():
    mix = _mixture()
    label_blind = lambda x, t, y: mix.score(x, t, jnp.zeros_like(y))
    res = elbo.class_log_bounds(label_blind, mix.sde, POINTS, jax.random.key(0), n_classes=3, settings=B(n_times=8), **UNIT)
    np.testing.assert_array_equal(res.log_p[:, 1:], res.log_p[:, :1].repeat(2, axis=1))  # same draws per class
    run = lambda chunk: elbo.class_log_bounds(mix.score, mix.sde, POINTS, jax.random.key(1), n_classes=2, settings=B(n_times=8),
                                              chunk_size=chunk, **UNIT)  # fmt: skip
    small, large = run(5), run(4096)
    np.testing.assert_allclose(small.log_p, large.log_p, rtol=1e-6)
    assert small.times.shape == (3, 8) and np.all(np.diff(small.times, axis=1) >= 0)
    assert np.all((small.times >= 1e-5) & (small.times <= 1.0))
    # uint8 pixels: the same key dequantizes exactly as sbgc.method.likelihood (the prior term reads x₀)
    pixels = jax.random.randint(jax.random.key(2), (2, 4, 4, 3), 0, 256).astype(jnp.uint8)
    blind = lambda x, t, y: -x / (1.0 + 0 * t[:, None, None, None])
    key = jax.random.key(7)
    bound = elbo.log_bound(blind, SDE(), pixels, np.array([0, 1]), key, settings=B(n_times=4), progress=False)
    batch = prepare_batch(pixels, key, n_probes=1, probe="rademacher", dequantize=True, data_scaling="centered")
    x_model = batch.x_model
    np.testing.assert_allclose(bound.prior_term, -np.asarray(elbo.prior_kl(SDE(), x_model)), rtol=1e-6)
    assert bound.log_det == pytest.approx(48 * math.log(2)) and bound.dim == 48


def test_full_image_path_agrees_with_the_exact_ode_and_the_closed_form():
    """4×4×3 uint8 'images' of a Gaussian class model in model space, exact score: bound ≈ ODE ≈ truth.

    Class y is N(μ_y, s² I) in model space x̃ = 2x − 1, so log p_[0,1](x) = log N(x̃) + D log 2, and
    the exact sub-VP score is (m μ_y − x)/(m² s² + σ²)."""
    sde = SDE()
    mus = jnp.stack([jnp.full((4, 4, 3), -0.2), jnp.full((4, 4, 3), 0.3)])
    s = 0.4

    def score(x, t, y):
        m, sig = sde.mean_coeff(t)[:, None, None, None], sde.marginal_std(t)[:, None, None, None]
        return (m * mus[y] - x) / (m**2 * s**2 + sig**2)

    pixels = jax.random.randint(jax.random.key(0), (2, 4, 4, 3), 90, 170).astype(jnp.uint8)
    y = np.array([0, 1], np.int32)
    key = jax.random.key(1)
    bound = elbo.log_bound(score, sde, pixels, y, key, settings=B(n_times=2048, data_std=s), progress=False)
    ode = log_likelihood(score, sde, pixels, y, key, probe="exact", solver=SolverSettings(rtol=1e-5, atol=1e-5),
                         progress=False)
    x_model = prepare_batch(pixels, key, n_probes=1, probe="exact", dequantize=True, data_scaling="centered").x_model
    truth = np.array([_gauss_log_density(np.asarray(x_model[i]).ravel(), np.asarray(mus[y[i]]).ravel(), s)
                      for i in range(2)]) + 48 * math.log(2)  # fmt: skip
    np.testing.assert_allclose(ode.log_p, truth, atol=0.1)  # ODE solver (rtol 1e-5, float32) and prior mismatch
    assert np.all(np.abs(bound.log_p - truth) < 4 * bound.log_p_se + 0.01), (bound.log_p - truth, bound.log_p_se)
    np.testing.assert_allclose(bound.bpd, -bound.log_p / (48 * math.log(2)) + 8, rtol=1e-12)
    assert np.all(bound.log_p_se < 1.0)


def test_pruning_refines_only_the_kept_classes():
    mix = GaussianMixtureClasses.isotropic_gaussians(np.array([[1.0, 1.0], [-1, 1], [-1, -1], [1, -1]]), 0.8)
    x, _ = mix.sample(jax.random.key(0), 50)
    kw = dict(n_classes=4, chunk_size=4096, **UNIT)
    pruned = elbo.pruned_class_bounds(mix.score, mix.sde, x, jax.random.key(1), settings=B(n_times=6, data_std=0.8), keep=2,
                                      second_times=42,
                                      **kw)  # fmt: skip
    first = elbo.class_log_bounds(mix.score, mix.sde, x, jax.random.key(1), settings=B(n_times=6, data_std=0.8), **kw)
    np.testing.assert_array_equal(pruned.first.log_p, first.log_p)  # stage 1 = the plain K₁ classifier
    assert np.all(pruned.kept.sum(axis=1) == 2)
    top = np.sort(np.argsort(-first.log_p, axis=1)[:, :2], axis=1)
    np.testing.assert_array_equal(np.sort(np.nonzero(pruned.kept)[1].reshape(-1, 2), axis=1), top)
    np.testing.assert_array_equal(pruned.log_p[~pruned.kept], first.log_p[~pruned.kept])
    assert np.all(pruned.log_p[pruned.kept] != first.log_p[pruned.kept])
    # 48 times instead of 6: the standard error shrinks by about √8 (its 6-time estimate is rough)
    assert np.median(pruned.log_p_se[pruned.kept] / first.log_p_se[pruned.kept]) < 0.6
    assert np.all(pruned.kept[np.arange(len(x)), pruned.predict()])
    np.testing.assert_array_equal(pruned.nfe, 4 * (6 + 1) + 2 * 42)  # counted passes per image


def test_pruned_classifier_reaches_the_bayes_accuracy():
    """Four classes N(μ_k, s² I) at the corners (±a, ±a): the Bayes regions are the quadrants, so the
    Bayes accuracy is Φ(a/s)² in closed form."""
    a, s = 0.6, 0.7
    mix = GaussianMixtureClasses.isotropic_gaussians(np.array([[a, a], [-a, a], [-a, -a], [a, -a]]), s)
    x, y = mix.sample(jax.random.key(0), 300)
    pruned = elbo.pruned_class_bounds(mix.score, mix.sde, x, jax.random.key(1), n_classes=4, settings=B(n_times=64, data_std=s),
                                      keep=2, second_times=1024, chunk_size=65536, **UNIT)  # fmt: skip
    bayes = (0.5 * (1 + math.erf(a / s / math.sqrt(2)))) ** 2  # ≈ 0.647
    accuracy = np.mean(pruned.predict() == np.asarray(y))
    assert abs(accuracy - bayes) < 3 * math.sqrt(bayes * (1 - bayes) / len(y)), (accuracy, bayes)
    assert np.mean(pruned.predict() == np.asarray(mix.bayes_predict(x))) > 0.9
    assert np.all(pruned.nfe == 4 * 65 + 2 * 1024) and pruned.nfe[0] < 4 * (64 + 1024 + 1)


def test_bad_arguments_raise():
    mix = _mixture()
    key = jax.random.key(0)
    run = lambda **kw: elbo.class_log_bounds(mix.score, mix.sde, POINTS, key, n_classes=2, **{**UNIT, **kw})
    with pytest.raises(ValueError, match="n_times must be an int >= 2"):
        B(n_times=1)
    with pytest.raises(ValueError, match="sampling must be one of"):
        B(sampling="uniform")
    with pytest.raises(ValueError, match="weighting must be one of"):
        B(weighting="sigma2")
    with pytest.raises(ValueError, match="eps must lie in"):
        B(eps=0.0)
    with pytest.raises(ValueError, match="data_std must be positive"):
        B(data_std=-1.0)
    with pytest.raises(TypeError, match="settings must be a BoundSettings"):
        run(settings={"n_times": 8})
    with pytest.raises(TypeError, match="n_times"):  # the settings' fields are not keywords of the API
        run(n_times=8)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        run(chunk_size=0)
    with pytest.raises(ValueError, match="data_scaling must be one of"):
        run(data_scaling="minus_one_one")
    with pytest.raises(ValueError, match="a PRNG key is needed"):
        elbo.class_log_bounds(mix.score, mix.sde, POINTS, None, n_classes=2, **UNIT)
    with pytest.raises(ValueError, match=r"y must be an int array of shape \(3,\)"):
        elbo.log_bound(mix.score, mix.sde, POINTS, np.array([0, 1]), jax.random.key(0), **UNIT)
    with pytest.raises(ValueError, match="keep must be an int in"):
        elbo.pruned_class_bounds(mix.score, mix.sde, POINTS, jax.random.key(0), n_classes=2, keep=3, **UNIT)


def test_frontier_helpers():
    def point(method, settings, hits, passes):
        correct = np.arange(20) < hits
        return compute.FrontierPoint(method, str(settings), settings, correct, np.full(20, passes), np.full(20, passes),
                                  1.0, np.zeros(20), np.zeros(20), 3072)  # fmt: skip

    ode_loose = point("ODE", {"n_probes": 3, "rtol": 1e-2}, 17, 5000)
    ode_ref = point("ODE", {"n_probes": 3, "rtol": 1e-5}, 19, 90000)
    cheap_bad = point("bound", {"n_times": 10}, 8, 110)
    cheap_good = point("bound + pruning", {}, 18, 400)
    points = [ode_loose, ode_ref, cheap_bad, cheap_good]
    assert compute.cheapest_match(points, ode_ref, ("bound", "bound + pruning"), 0.05) is cheap_good  # 90 >= 95 - 5
    assert compute.cheapest_match(points, ode_ref, ("bound", "bound + pruning"), 0.005) is None
    assert compute.cheapest_match([cheap_bad], ode_ref, ("bound",), 0.05) is None
    assert "| bound + pruning |" in compute.frontier_table(points)
    assert compute.bound_method("uniform", pruned=True) == "uniform-t score + pruning"
    assert cheap_good.summary()["true_class_bpd_mean"] is not None
    assert point("uniform-t score", {}, 18, 100).summary()["true_class_bpd_mean"] is None  # not a density
    assert set(compute.METHODS) >= {compute.bound_method(w, p) for w in ("likelihood", "uniform") for p in (0, 1)}


# --- the trained ci network ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_bound_lies_below_the_ode_likelihood_on_the_ci_network():
    """2 exact CIFAR-10 test images, their true class: bound (K = 512) vs ODE (4 probes, rtol 1e-3).

    The bound's upper 3-SE edge must lie below the ODE's lower edge: 3 standard errors of its
    4-probe mean, plus 1 % of |log p| for the error of the loose solve.
    """
    from sbgc.data.cifar10 import load_exact_test_head
    from sbgc.train.pretrained import load_model

    try:
        model = load_model("ci")
        data = load_exact_test_head()
    except FileNotFoundError as missing:
        pytest.skip(f"needs the shipped ci network and the exact CIFAR-10 test head: {missing}")
    x, y = data.images[:2], data.labels[:2].astype(np.int32)
    key = jax.random.key(0)
    bound = elbo.log_bound(model.score_fn, model.sde, x, y, key, settings=B(n_times=512), chunk_size=256, progress=False)
    ode = log_likelihood(model.score_fn, model.sde, x, y, key, n_probes=4,
                         solver=SolverSettings(rtol=1e-3, atol=1e-3), progress=False)
    ode_se = ode.log_p_probes.std(axis=1, ddof=1) / np.sqrt(4)
    ode_low = ode.log_p - 3 * ode_se - 0.01 * np.abs(ode.log_p)
    assert np.all(bound.log_p + 3 * bound.log_p_se < ode_low), (bound.log_p, bound.log_p_se, ode.log_p_probes)
    assert np.all(bound.nfe == 513)


@pytest.mark.slow
def test_the_differentiable_bound_equals_the_table_and_its_gradient_the_finite_differences():
    """class_log_bounds_pure with bound_random_numbers gives log_bound_table's numbers (same key,
    an image's draws follow its position), for a subset of classes too, and a gradient that agrees
    with central differences (the function an attack on the bound classifier ascends)."""
    import functools

    from tiny_nets import init_tiny, tiny_score

    sde, shape = SDE(), (6, 6, 3)
    score = functools.partial(tiny_score, init_tiny(jax.random.key(3), 3, 8, 4))
    x = np.asarray(jax.random.uniform(jax.random.key(4), (3, *shape)), np.float32)
    key, settings = jax.random.key(5), elbo.BoundSettings(n_times=6)
    table = elbo.class_log_bounds(score, sde, x, key, n_classes=4, settings=settings, dequantize=False, progress=False)
    t, z = elbo.bound_random_numbers(sde, key, jnp.arange(3), settings, shape)
    np.testing.assert_allclose(t, table.times, rtol=1e-6)
    pure, ok = elbo.class_log_bounds_pure(score, sde, jnp.asarray(x), t, z, settings=settings, n_classes=4)
    assert bool(ok.all())
    np.testing.assert_allclose(pure, table.log_p, rtol=2e-6, atol=1e-3)
    # images 1 and 2 alone, by their ids, classes (2, 0) only
    t2, z2 = elbo.bound_random_numbers(sde, key, jnp.array([1, 2]), settings, shape)
    sub, _ = elbo.class_log_bounds_pure(score, sde, jnp.asarray(x[1:]), t2, z2, settings=settings,
                                        classes=jnp.array([[2, 0], [2, 0]]))  # fmt: skip
    np.testing.assert_allclose(sub, table.log_p[1:][:, [2, 0]], rtol=2e-6, atol=1e-3)
    # gradient of ⟨c, L⟩ along random directions vs central differences
    c = jnp.asarray(jax.random.normal(jax.random.key(6), (1, 4)))
    f = lambda xi: jnp.sum(c * elbo.class_log_bounds_pure(score, sde, xi, t[:1], z[:1], settings=settings, n_classes=4)[0])
    grad = jax.grad(f)(jnp.asarray(x[:1]))
    h = 1e-2
    for j in range(3):
        d = jax.random.normal(jax.random.key(10 + j), x[:1].shape)
        d = d / jnp.linalg.norm(d)
        fd = (f(x[:1] + h * d) - f(x[:1] - h * d)) / (2 * h)
        assert float(jnp.sum(grad * d)) == pytest.approx(float(fd), rel=2e-2, abs=2e-2 * float(jnp.linalg.norm(grad)))
    with pytest.raises(ValueError, match="need times"):
        elbo.class_log_bounds_pure(score, sde, jnp.asarray(x), t[:, :3], z, settings=settings)
