"""The forward SDEs (sbgc.method.sde) against quadrature, ODE integration of their moments and simulation.

Every closed form of ``SDE`` is checked against something computed independently from the SDE's
coefficients β(t) and g(t)²: ∫β by quadrature, the kernel moments by integrating their ODEs with
scipy, the kernel itself by Euler–Maruyama simulation, the probability-flow ODE by transporting
points of a Gaussian, and the importance-sampling density by quadrature and sampling.
Precision-sensitive checks run with 64-bit JAX (``jax.enable_x64``); sampling runs in float32, the
precision used in training.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

from sbgc.method.sde import SDE

KINDS = ["subvp", "vp"]
TIMES = np.array([1e-4, 1e-3, 1e-2, 0.1, 0.3, 0.5, 0.7, 1.0])


def _f(x) -> float:
    return float(np.asarray(x))


def _marginal_gaussian(sde: SDE, mu: float, s: float, t: float) -> tuple[float, float]:
    """Mean and variance of p_t when x₀ ~ N(mu, s²): N(m mu, m² s² + σ²)."""
    m, sig = _f(sde.mean_coeff(t)), _f(sde.marginal_std(t))
    return m * mu, m**2 * s**2 + sig**2


def _gauss_legendre_cumulative(f, grid: np.ndarray, n_nodes: int = 24) -> np.ndarray:
    """∫_{grid[0]}^{grid[i]} f(t) dt for every i, with f evaluated vectorised.

    The integral is taken in s = log t (f has a ~1/t spike at small t, f(e^s) e^s is smooth), one
    Gauss–Legendre rule of ``n_nodes`` nodes per grid interval.
    """
    nodes, weights = special.roots_legendre(n_nodes)
    lo, hi = np.log(grid[:-1])[:, None], np.log(grid[1:])[:, None]  # [N-1, 1]
    s = 0.5 * (hi - lo) * nodes[None, :] + 0.5 * (hi + lo)  # [N-1, n_nodes]
    t = np.exp(s)
    vals = np.asarray(f(jnp.asarray(t))) * t  # [N-1, n_nodes]
    pieces = 0.5 * (hi - lo)[:, 0] * (vals @ weights)  # [N-1]
    return np.concatenate([[0.0], np.cumsum(pieces)])


def _log_quad(f, a: float, b: float) -> float:
    """∫_a^b f(t) dt by adaptive quadrature in s = log t."""
    val, err = integrate.quad(lambda s: _f(f(math.exp(s))) * math.exp(s), math.log(a), math.log(b),
                              epsabs=0.0, epsrel=1e-11, limit=200)
    assert err < 1e-9 * abs(val)
    return val


# --- schedule ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_int_beta_is_quadrature_of_beta(kind):
    with jax.enable_x64(True):
        sde = SDE(kind, beta_min=0.1, beta_max=20.0)
        for t in TIMES:
            np.testing.assert_allclose(_f(sde.beta(t)), 0.1 + t * 19.9, rtol=1e-14)
            quad, _ = integrate.quad(lambda s: _f(sde.beta(s)), 0.0, t, epsabs=0.0, epsrel=1e-13)
            np.testing.assert_allclose(_f(sde.int_beta(t)), quad, rtol=1e-12)
        # A different schedule, to catch constants baked into the closed form.
        other = SDE(kind, beta_min=0.5, beta_max=3.0)
        quad, _ = integrate.quad(lambda s: _f(other.beta(s)), 0.0, 0.6, epsabs=0.0, epsrel=1e-13)
        np.testing.assert_allclose(_f(other.int_beta(0.6)), quad, rtol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_diffusion_squared_is_the_documented_schedule(kind):
    with jax.enable_x64(True):
        sde = SDE(kind)
        beta = 0.1 + TIMES * 19.9
        big_b = 0.1 * TIMES + 0.5 * TIMES**2 * 19.9
        expect = beta if kind == "vp" else beta * (1.0 - np.exp(-2.0 * big_b))
        np.testing.assert_allclose(np.asarray(sde.diffusion_squared(jnp.asarray(TIMES))), expect, rtol=1e-12)
        np.testing.assert_allclose(np.asarray(sde.diffusion(jnp.asarray(TIMES))) ** 2, expect, rtol=1e-12)


# --- the perturbation kernel against the moment ODEs --------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_kernel_moments_solve_the_moment_odes(kind):
    """For dx = −½β x dt + g dw: dm/dt = −½ β m, m(0) = 1 and dv/dt = −β v + g², v(0) = 0."""
    with jax.enable_x64(True):
        sde = SDE(kind)

        def rhs(t, y):
            m, v = y
            beta, g2 = _f(sde.beta(t)), _f(sde.diffusion_squared(t))
            return [-0.5 * beta * m, -beta * v + g2]

        sol = integrate.solve_ivp(rhs, (0.0, 1.0), [1.0, 0.0], method="DOP853", t_eval=TIMES,
                                  rtol=1e-12, atol=1e-16)
        assert sol.success
        m_ode, v_ode = sol.y
        np.testing.assert_allclose(np.asarray(sde.mean_coeff(jnp.asarray(TIMES))), m_ode, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(sde.marginal_std(jnp.asarray(TIMES))) ** 2, v_ode, rtol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_marginal_broadcasts_per_example_times(kind):
    with jax.enable_x64(True):
        sde = SDE(kind)
        x0 = jnp.asarray(np.random.default_rng(0).normal(size=(3, 2, 5)))
        t = jnp.array([0.01, 0.4, 1.0])
        mean, std = sde.marginal(x0, t)
        assert mean.shape == (3, 2, 5) and std.shape == (3,)
        for i in range(3):
            np.testing.assert_allclose(mean[i], _f(sde.mean_coeff(t[i])) * np.asarray(x0[i]), rtol=1e-14)
            np.testing.assert_allclose(std[i], _f(sde.marginal_std(t[i])), rtol=1e-14)


@pytest.mark.parametrize("kind", KINDS)
def test_euler_maruyama_simulation_has_kernel_moments(kind):
    """50k paths of Euler–Maruyama (2000 steps, float32) from x₀ = 1.5 match N(m x₀, σ²)."""
    sde = SDE(kind)
    n_paths, n_steps, x0 = 50_000, 2000, 1.5
    h = 1.0 / n_steps
    seg = 200  # the path is recorded every `seg` steps
    checkpoints = (400, 1000, 2000)  # t = 0.2, 0.5, 1.0

    def step(x, inp):  # x [n_paths]
        t, key = inp
        dw = jnp.sqrt(h) * jax.random.normal(key, x.shape)
        return x + sde.drift(x, t) * h + sde.diffusion(t) * dw, None

    def segment(x, inp):  # inp: times [seg], keys [seg]
        x, _ = jax.lax.scan(step, x, inp)
        return x, x

    ts = (jnp.arange(n_steps) * h).reshape(-1, seg)
    keys = jax.random.split(jax.random.key(0), n_steps).reshape(-1, seg)
    _, recorded = jax.jit(lambda x: jax.lax.scan(segment, x, (ts, keys)))(jnp.full((n_paths,), x0))
    for n in checkpoints:
        t = n * h
        xs = np.asarray(recorded[n // seg - 1], np.float64)
        m, sig = _f(sde.mean_coeff(t)), _f(sde.marginal_std(t))
        # Statistical error (4 standard errors) plus the Euler bias in the variance, ≈ β h / 4.
        assert abs(xs.mean() - m * x0) < 4 * sig / math.sqrt(n_paths) + 1e-3 * abs(m * x0)
        rel_std_tol = 4 / math.sqrt(2 * n_paths) + sde.beta_max * h / 4
        assert abs(xs.std() / sig - 1) < rel_std_tol, (t, xs.std(), sig)


# --- prior -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_prior_is_close_to_standard_normal_at_T(kind):
    with jax.enable_x64(True):
        sde = SDE(kind)
        m, sig = _f(sde.mean_coeff(sde.T)), _f(sde.marginal_std(sde.T))
        b_t = 0.1 + 0.5 * 19.9  # B(1) = 10.05
        np.testing.assert_allclose(m, math.exp(-b_t / 2), rtol=1e-12)
        assert m < 7e-3  # e^{-5.025} = 0.00657: data leaks into p_T at this level
        # 1 − σ(1) = e^{−B} = 4.3e-5 (sub-VP) or ≈ ½ e^{−B} = 2.2e-5 (VP).
        assert 0 < 1 - sig < (5e-5 if kind == "subvp" else 2.5e-5)
        assert abs(sig - 1) > (4e-5 if kind == "subvp" else 2e-5)


def test_prior_logp_matches_scipy():
    sde = SDE()
    z = np.random.default_rng(1).normal(size=(6, 3, 4, 2)).astype(np.float32) * 1.7
    expect = stats.norm.logpdf(z.astype(np.float64)).reshape(6, -1).sum(1)
    got = np.asarray(sde.prior_logp(jnp.asarray(z)))
    assert got.shape == (6,)
    np.testing.assert_allclose(got, expect, rtol=1e-6)
    mvn = stats.multivariate_normal(np.zeros(24), np.eye(24)).logpdf(z.reshape(6, -1).astype(np.float64))
    np.testing.assert_allclose(got, mvn, rtol=1e-6)


# --- probability-flow ODE ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_probability_flow_drift_formula(kind):
    with jax.enable_x64(True):
        sde = SDE(kind)
        rng = np.random.default_rng(2)
        x = rng.normal(size=(4, 3))
        score = rng.normal(size=(4, 3))
        t = np.array([1e-3, 0.2, 0.6, 1.0])
        beta = 0.1 + t * 19.9
        big_b = 0.1 * t + 0.5 * t**2 * 19.9
        g2 = beta if kind == "vp" else beta * (1 - np.exp(-2 * big_b))
        expect = -0.5 * beta[:, None] * x - 0.5 * g2[:, None] * score
        got = sde.probability_flow_drift(jnp.asarray(x), jnp.asarray(t), jnp.asarray(score))
        np.testing.assert_allclose(np.asarray(got), expect, rtol=1e-13)


@pytest.mark.parametrize("kind", KINDS)
def test_probability_flow_transports_gaussian_data_onto_its_marginals(kind):
    """With the exact score of N(mu, s²) data, x(0) = mu ± s flows to m(t) mu ± sqrt(m² s² + σ²)."""
    mu, s = 0.7, 0.4
    with jax.enable_x64(True):
        sde = SDE(kind)

        def rhs(t, x):
            mean, var = _marginal_gaussian(sde, mu, s, t)
            score = -(x - mean) / var  # ∇ log N(x; m mu, m² s² + σ²)
            return np.asarray(sde.probability_flow_drift(jnp.asarray(x), t, jnp.asarray(score)))

        t_eval = np.array([0.05, 0.3, 0.6, 1.0])
        sol = integrate.solve_ivp(rhs, (0.0, 1.0), [mu - s, mu + s], method="DOP853", t_eval=t_eval,
                                  rtol=1e-11, atol=1e-13)
        assert sol.success
        for i, t in enumerate(t_eval):
            mean, var = _marginal_gaussian(sde, mu, s, t)
            np.testing.assert_allclose(sol.y[:, i], [mean - math.sqrt(var), mean + math.sqrt(var)], rtol=1e-8)


# --- likelihood weighting and its importance sampling ------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_likelihood_weight_is_g2_over_sigma2(kind):
    with jax.enable_x64(True):
        sde = SDE(kind)
        t = np.concatenate([[1e-5], TIMES])
        beta = 0.1 + t * 19.9
        big_b = 0.1 * t + 0.5 * t**2 * 19.9
        if kind == "vp":
            expect = beta / (1 - np.exp(-big_b))
        else:
            expect = beta * (1 - np.exp(-2 * big_b)) / (1 - np.exp(-big_b)) ** 2
        np.testing.assert_allclose(np.asarray(sde.likelihood_weight(jnp.asarray(t))), expect, rtol=1e-9)


@pytest.mark.parametrize("eps", [1e-5, 1e-2])
@pytest.mark.parametrize("kind", KINDS)
def test_importance_normalizer_and_density_by_quadrature(kind, eps):
    with jax.enable_x64(True):
        sde = SDE(kind)
        z_quad = _log_quad(sde.likelihood_weight, eps, sde.T)
        np.testing.assert_allclose(_f(sde.importance_weight_normalizer(eps)), z_quad, rtol=1e-9)
        mass = _log_quad(lambda t: sde.importance_t_density(t, eps), eps, sde.T)
        np.testing.assert_allclose(mass, 1.0, rtol=1e-9)


@pytest.mark.parametrize("eps", [1e-5, 1e-2])
@pytest.mark.parametrize("kind", KINDS)
def test_sample_importance_t_inverts_the_cumulative(kind, eps):
    with jax.enable_x64(True):
        sde = SDE(kind)
        grid = np.geomspace(eps, sde.T, 300)
        cdf = _gauss_legendre_cumulative(lambda t: sde.importance_t_density(t, eps), grid)
        np.testing.assert_allclose(cdf[-1], 1.0, rtol=1e-10)
        # u = F(t) maps back to t.
        t_of_cdf = np.asarray(sde.sample_importance_t(jnp.asarray(cdf), eps))
        np.testing.assert_allclose(t_of_cdf, grid, rtol=1e-8)
        # Monotone, from ε to T.
        t_of_u = np.asarray(sde.sample_importance_t(jnp.linspace(0.0, 1.0, 10_001), eps))
        assert np.all(np.diff(t_of_u) > 0)
        np.testing.assert_allclose([t_of_u[0], t_of_u[-1]], [eps, sde.T], rtol=1e-10)

    # Sampling in float32 (the training precision): empirical CDF of 200k draws against F.
    u = jax.random.uniform(jax.random.key(3), (200_000,))
    t_samples = np.sort(np.asarray(sde.sample_importance_t(u, eps)))
    assert t_samples.dtype == np.float32
    assert t_samples[0] >= np.float32(eps) and t_samples[-1] <= sde.T
    empirical = np.searchsorted(t_samples, grid, side="right") / t_samples.size
    ks = np.max(np.abs(empirical - cdf))
    assert ks < 0.01, ks


# --- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kind="ve"),
        dict(kind="sub-vp"),
        dict(beta_min=0.0),
        dict(beta_min=-0.1),
        dict(beta_min=20.0, beta_max=0.1),
        dict(beta_min=5.0, beta_max=5.0),
    ],
)
def test_bad_construction_raises(kwargs):
    with pytest.raises(ValueError):
        SDE(**kwargs)
