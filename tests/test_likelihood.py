"""Probability-flow log-likelihoods (sbgc.method.likelihood) against closed forms, counts and the scipy reference."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbgc.checks import reference
from sbgc.checks.analytic import GaussianMixtureClasses
from sbgc.method.likelihood import (
    LikelihoodSolveError,
    SolverSettings,
    bits_per_dim,
    log_likelihood,
    prepare_batch,
    to_unit_interval,
)
from sbgc.method.sde import SDE
from tiny_nets import init_tiny, tiny_score

UNIT = dict(dequantize=False, data_scaling="unit", progress=False)


def _mixture():
    """Two classes in D = 4, two components each: non-diagonal score Jacobians (probe noise > 0)."""
    means = [[[1.0, 0.0, 0.0, 0.5], [-1.0, 1.0, 0.0, 0.0]], [[0.0, 0.0, 2.0, 0.0], [0.0, -1.0, 0.0, 1.0]]]
    return GaussianMixtureClasses(np.array(means), np.array([[0.5, 0.7], [0.6, 0.4]]), [[1.0, 2.0], [1.0, 1.0]])


@pytest.fixture(scope="module")
def mixture_data():
    mix = _mixture()
    x, y = mix.sample(jax.random.key(0), 6)  # 12 points
    return mix, x, y, np.asarray(mix.log_prob(x, y))


# --- conventions ----------------------------------------------------------------------------------
def test_bits_per_dim_convention():
    # The uniform density on the dequantized unit cube: log p = 0 → exactly 8 bits/dim.
    assert bits_per_dim(0.0, 3072) == 8.0
    # log p in [-1, 1] units is D log 2 lower; score_sde's "+7" then gives the same number.
    d, log_p_unit = 3072, -5000.0
    log_p_centred = log_p_unit - d * math.log(2)
    assert bits_per_dim(log_p_unit, d) == pytest.approx(-log_p_centred / (d * math.log(2)) + 7)
    with pytest.raises(ValueError, match="dim must be a positive"):
        bits_per_dim(0.0, 0)


def test_dequantization():
    px = np.arange(256, dtype=np.uint8).reshape(4, 8, 8)
    x = np.asarray(to_unit_interval(px, jax.random.key(0), dequantize=True))
    assert np.all(x >= px / 256) and np.all(x < (px.astype(np.float64) + 1) / 256)
    frac = x * 256 - px
    assert 0.4 < frac.mean() < 0.6 and frac.std() > 0.2  # uniform noise, not a constant offset
    np.testing.assert_allclose(to_unit_interval(px, None, dequantize=False), (px + 0.5) / 256)
    with pytest.raises(ValueError, match="dequantize=True expects uint8"):
        to_unit_interval(x, jax.random.key(0), dequantize=True)
    with pytest.raises(ValueError, match="uint8 pixels or floats"):
        to_unit_interval(px.astype(np.int32), None, dequantize=False)
    with pytest.raises(ValueError, match="needs a PRNG key"):
        to_unit_interval(px, None, dequantize=True)


# --- the ODE against closed forms ------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["subvp", "vp"])
def test_exact_trace_matches_closed_form(mixture_data, kind):
    mix, x, y, expect = mixture_data
    mix = GaussianMixtureClasses(mix.means, mix.stds, np.exp(mix.log_weights), SDE(kind))
    res = log_likelihood(
        mix.score, mix.sde, x, y, None, probe="exact", prior_logp_fn=mix.terminal_log_prob, **UNIT
    )
    assert res.log_p.shape == (12,) and res.log_p_probes.shape == (12, 1)
    assert np.max(np.abs(res.log_p - expect)) / 4 < 1e-3  # nats per dimension


@pytest.mark.slow
@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_unbiased_and_shared_equals_independent(mixture_data, probe):
    """Per point: the probe mean is within 4 standard errors of the closed form. The shared and the
    independent solves see the same probes, so each probe's value agrees up to solver error."""
    mix, x, y, expect = mixture_data
    kw = dict(probe=probe, n_probes=32, prior_logp_fn=mix.terminal_log_prob, **UNIT)
    shared = log_likelihood(mix.score, mix.sde, x, y, jax.random.key(1), solver=SolverSettings(shared_trajectory=True), **kw)
    indep = log_likelihood(mix.score, mix.sde, x, y, jax.random.key(1), solver=SolverSettings(shared_trajectory=False), **kw)
    np.testing.assert_allclose(shared.log_p_probes, indep.log_p_probes, atol=2e-3)
    for res in (shared, indep):
        spread = res.log_p_probes.std(axis=1, ddof=1)
        assert np.all(spread > 1e-2)  # the estimator is noisy here: the test has teeth
        se = spread / np.sqrt(32)
        z = (res.log_p - expect) / se
        assert np.all(np.abs(z) < 4), z
        pooled = (res.log_p - expect).mean() / np.sqrt((se**2).sum() / 12**2)
        assert abs(pooled) < 4
    assert np.all(indep.nfe > 20 * shared.nfe)  # 32 solves against one


def test_integrates_forward_in_time_with_the_standard_prior():
    """A Gaussian far from N(0, I): with the N(0, I) prior the answer is right up to the (small,
    known) mismatch p_T ≠ N(0, I); integrating the wrong way gives nonsense (tens of nats off)."""
    mix = GaussianMixtureClasses.isotropic_gaussians(np.array([[3.0, 3.0, -3.0, 3.0]]), 0.5)
    x, y = mix.sample(jax.random.key(2), 12)
    expect = np.asarray(mix.log_prob(x, y))
    res = log_likelihood(mix.score, mix.sde, x, y, None, probe="exact", **UNIT)
    exact_prior = log_likelihood(
        mix.score, mix.sde, x, y, None, probe="exact", prior_logp_fn=mix.terminal_log_prob, **UNIT
    )
    mismatch = np.abs(exact_prior.prior_logp - res.prior_logp).max()
    assert mismatch < 0.3  # m(T) = e^{-B(1)/2} = 0.0066: a ±0.04 shift of a mean of norm 6
    np.testing.assert_allclose(res.log_p, expect, atol=mismatch + 4e-3)
    # The flow map of a Gaussian is affine, stretching std 0.5 to std_T ≈ 1: the divergence integral is
    # D log(std_T / 0.5) = +2.77 nats (integrating from T back to ε would flip its sign).
    _, var_t = mix.marginal_params(jnp.full((1,), mix.sde.T))
    np.testing.assert_allclose(res.delta_logp, 2 * np.log(float(var_t[0, 0, 0]) / 0.25), atol=2e-3)


@pytest.mark.slow
def test_centered_uint8_images_full_path():
    """uint8 images, centred model space, dequantized: log p_[0,1] = log p_model(2x − 1) + D log 2."""
    mix = GaussianMixtureClasses.isotropic_gaussians(np.array([[0.2, -0.3, 0.0, 0.4], [-0.2, 0.1, 0.3, 0.0]]), 0.3)

    def image_score(x, t, y):  # images [B, 2, 2, 1] ↔ vectors [B, 4]
        return mix.score(x.reshape(x.shape[0], -1), t, y).reshape(x.shape)

    px = jax.random.randint(jax.random.key(3), (5, 2, 2, 1), 60, 200).astype(jnp.uint8)
    y = np.array([0, 1, 0, 1, 1], np.int32)
    key = jax.random.key(4)
    res = log_likelihood(
        image_score, mix.sde, px, y, key, probe="exact", data_scaling="centered", progress=False,
        prior_logp_fn=lambda z, yy: mix.terminal_log_prob(z.reshape(1, -1), yy),
    )  # fmt: skip
    batch = prepare_batch(px, key, n_probes=1, probe="exact", dequantize=True, data_scaling="centered")
    x_unit = (np.asarray(batch.x_model) + 1) / 2
    assert np.all(np.floor(x_unit * 256) == np.asarray(px))  # inside the pixel bins
    expect = np.asarray(mix.log_prob(batch.x_model.reshape(5, -1), y)) + 4 * math.log(2)
    np.testing.assert_allclose(res.log_p, expect, atol=4e-3)
    np.testing.assert_allclose(res.bpd, -expect / (4 * math.log(2)) + 8, atol=2e-3)
    assert res.log_det == pytest.approx(4 * math.log(2))


@pytest.mark.slow
def test_chunking_with_padding_gives_the_same_rows(mixture_data):
    mix, x, y, _ = mixture_data
    kw = dict(probe="rademacher", n_probes=2, prior_logp_fn=mix.terminal_log_prob, **UNIT)
    whole = log_likelihood(mix.score, mix.sde, x[:7], y[:7], jax.random.key(5), **kw)
    chunked = log_likelihood(mix.score, mix.sde, x[:7], y[:7], jax.random.key(5), chunk_size=3, **kw)
    np.testing.assert_allclose(chunked.log_p_probes, whole.log_p_probes, atol=1e-4)
    np.testing.assert_array_equal(chunked.nfe, whole.nfe)
    # An image's draws do not depend on the batch it comes in.
    head = log_likelihood(mix.score, mix.sde, x[:3], y[:3], jax.random.key(5), chunk_size=3, **kw)
    np.testing.assert_allclose(head.log_p_probes, whole.log_p_probes[:3], atol=1e-4)


# --- failures ---------------------------------------------------------------------------------------
def test_max_steps_raises_naming_rows(mixture_data):
    mix, x, y, _ = mixture_data
    with pytest.raises(LikelihoodSolveError, match=r"image 0 class \d: max_steps reached") as err:
        log_likelihood(mix.score, mix.sde, x[:3], y[:3], None, probe="exact", solver=SolverSettings(max_steps=2), **UNIT)
    assert err.value.rows == [(i, int(y[i])) for i in range(3)]
    assert "rtol=1e-05" in str(err.value) and "max_steps=2" in str(err.value)


def test_non_finite_values_raise_naming_only_bad_rows(mixture_data):
    mix, x, y, _ = mixture_data
    bad_rows = [(i, 1) for i in range(12) if y[i] == 1]

    def nan_score(xx, t, yy):  # NaN for class 1 late in the solve: the solver cannot step
        s = mix.score(xx, t, yy)
        return jnp.where((yy == 1)[:, None] & (t > 0.5)[:, None], jnp.nan, s)

    with pytest.raises(LikelihoodSolveError, match="failed for 6 of 12 rows") as err:
        log_likelihood(nan_score, mix.sde, x, y, None, probe="exact", **UNIT)
    assert sorted(err.value.rows) == bad_rows

    def nan_prior(z, yy):  # the solve succeeds, the value is NaN: caught by the finiteness check
        return jnp.where(yy == 1, jnp.nan, mix.terminal_log_prob(z, yy))

    with pytest.raises(LikelihoodSolveError, match="class 1: non-finite log-likelihood") as err:
        log_likelihood(mix.score, mix.sde, x, y, None, probe="exact", prior_logp_fn=nan_prior, **UNIT)
    assert sorted(err.value.rows) == bad_rows


def test_bad_arguments_raise(mixture_data):
    mix, x, y, _ = mixture_data
    call = functools.partial(log_likelihood, mix.score, mix.sde, x, y, jax.random.key(0))
    with pytest.raises(ValueError, match="probe must be one of"):
        call(probe="sobol", **UNIT)
    with pytest.raises(ValueError, match="data_scaling must be one of"):
        call(dequantize=False, data_scaling="minus_one_one")
    with pytest.raises(ValueError, match="solver must be one of"):
        call(solver=SolverSettings("rk4"), **UNIT)
    with pytest.raises(TypeError, match="solver must be a SolverSettings"):
        call(solver="dopri5", **UNIT)
    with pytest.raises(ValueError, match="chunk_size must be a positive"):
        call(chunk_size=0, **UNIT)
    with pytest.raises(ValueError, match="n_probes must be a positive"):
        call(n_probes=0, **UNIT)
    with pytest.raises(ValueError, match=r"y must be an int array of shape \(12,\)"):
        log_likelihood(mix.score, mix.sde, x, y[:5], jax.random.key(0), **UNIT)
    with pytest.raises(ValueError, match="rtol and atol must be positive"):
        call(solver=SolverSettings(rtol=0.0), **UNIT)
    with pytest.raises(TypeError, match="rtol"):  # loose solver knobs are not accepted
        call(rtol=1e-3, **UNIT)


# --- evaluation counts ----------------------------------------------------------------------------
@pytest.mark.parametrize("solver", ["dopri5", "bosh3", "heun"])
def test_nfe_formula_matches_counted_calls(solver):
    mix = GaussianMixtureClasses.isotropic_gaussians(np.array([[1.0, -1.0, 0.5]]), 0.4)
    calls = []

    def counting_score(x, t, y):
        jax.debug.callback(lambda: calls.append(1))
        return mix.score(x, t, y)

    x, y = mix.sample(jax.random.key(6), 1)
    res = log_likelihood(counting_score, mix.sde, x, y, jax.random.key(7), n_probes=3,
                         solver=SolverSettings(solver, rtol=1e-4, atol=1e-4), **UNIT)
    # res.nfe comes from the solver's step count through SolverSettings.evaluations.
    assert res.nfe[0] == len(calls) > 10
    per_step = SolverSettings(solver).evaluations(1) - SolverSettings(solver).evaluations(0)
    assert per_step == {"dopri5": 6, "bosh3": 3, "heun": 2}[solver]


# --- against the scipy reference --------------------------------------------------------------------
_init_tiny, _tiny_score = init_tiny, tiny_score


def test_diffrax_matches_scipy_reference_on_a_small_network():
    score = functools.partial(_tiny_score, _init_tiny(jax.random.key(0)))
    sde = SDE()
    px = jax.random.randint(jax.random.key(1), (2, 4, 4, 3), 0, 256).astype(jnp.uint8)
    y = np.array([0, 2], np.int32)
    kw = dict(solver=SolverSettings(rtol=1e-6, atol=1e-6), progress=False)
    ours = log_likelihood(score, sde, px, y, jax.random.key(2), n_probes=1, **kw)
    ref = reference.log_likelihood(score, sde, px, y, jax.random.key(2), **kw)
    np.testing.assert_allclose(ours.log_p, ref.log_p, atol=2e-3)  # same noise, same probe
    np.testing.assert_allclose(ours.bpd, ref.bpd, atol=1e-5)
    assert np.all(ref.nfe > 20) and np.all(ours.nfe > 20)


def _wake_up(params, key, scale=0.3):
    """Re-draw the near-zero-initialised kernels (output convs: init scale 1e-10) of an untrained
    network as fan-avg normals times ``scale``, so its score field is not ≈ 0 and depends on y."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    out = []
    for a, k in zip(leaves, keys):
        if a.ndim >= 2 and float(jnp.abs(a).max()) < 1e-3:
            fan_avg = 0.5 * int(np.prod(a.shape[:-2])) * (a.shape[-2] + a.shape[-1])
            a = scale * jax.random.normal(k, a.shape, a.dtype) / np.sqrt(fan_avg)
        out.append(a)
    return jax.tree_util.tree_unflatten(tree, out)


@pytest.mark.slow
def test_diffrax_matches_scipy_reference_on_the_ci_unet():
    """1 CIFAR-sized image × 2 classes through the project's U-Net ("ci" profile) at rtol 1e-3.

    At this tolerance the two solvers differ by solver error, measured here at ≤ 0.06 bits/dim
    (~130 nats); a wrong integration direction or data scaling is off by ≥ 1 bit/dim.
    """
    from sbgc.method import networks as models
    from sbgc.method.classify import class_log_likelihoods

    sde = SDE()
    cfg = models.get_config("ci")
    params = _wake_up(models.init_params(cfg, jax.random.key(0)), jax.random.key(1))
    score = functools.partial(models.make_score_fn(cfg, sde), params)
    px = jax.random.randint(jax.random.key(2), (1, 32, 32, 3), 0, 256).astype(jnp.uint8)
    kw = dict(n_classes=2, solver=SolverSettings(rtol=1e-3, atol=1e-3), progress=False)
    ours = class_log_likelihoods(score, sde, px, jax.random.key(3), n_probes=1, **kw)
    ref = reference.class_log_likelihoods(score, sde, px, jax.random.key(3), **kw)
    assert ours.bpd.shape == ref.bpd.shape == (1, 2)
    np.testing.assert_allclose(ours.bpd, ref.bpd, atol=0.15)
    assert np.all(ours.nfe > 60) and np.all(ref.nfe > 60)  # a non-trivial field
    assert abs(ours.log_p[0, 0] - ours.log_p[0, 1]) > 1e-3  # the label reaches the score


_SHARDED_SCRIPT = r"""
import json, sys
import jax, numpy as np
from sbgc.checks.analytic import GaussianMixtureClasses
from sbgc.method.bound import BoundSettings, class_log_bounds
from sbgc.method.classify import class_log_likelihoods
from sbgc.method.devices import row_sharding, sharded_chunk
from sbgc.method.likelihood import SolverSettings
mix = GaussianMixtureClasses(np.array([[[0.3, -0.2, 0.1, 0.0]], [[-0.3, 0.2, 0.0, 0.2]]]), [[0.3], [0.4]])
score = lambda x, t, y: mix.score(x.reshape(x.shape[0], -1), t, y).reshape(x.shape)
px = jax.random.randint(jax.random.key(3), (5, 2, 2, 1), 0, 256).astype(np.uint8)
res = class_log_likelihoods(score, mix.sde, px, jax.random.key(4), n_classes=2, n_probes=3, chunk_size=3,
                            solver=SolverSettings(rtol=1e-4, atol=1e-4), progress=False)
bound = class_log_bounds(score, mix.sde, px, jax.random.key(5), n_classes=2, settings=BoundSettings(n_times=6), chunk_size=5,
                         progress=False)
s = row_sharding()
print(json.dumps({"devices": jax.local_device_count(), "split": None if s is None else s.mesh.size,
                  "chunk": sharded_chunk(3, s), "log_p": np.asarray(res.log_p).tolist(),
                  "bound": np.asarray(bound.log_p).tolist()}))
"""


@pytest.mark.slow
def test_tables_are_identical_whatever_the_number_of_devices():
    """Rows are split over the local devices (here 2 forced CPU host devices); every row keeps its
    own random numbers, so the table equals the one-device table: the ODE likelihood and the bound."""
    import json
    import os
    import subprocess
    import sys

    got = {}
    for devices in (1, 2):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
        out = subprocess.run([sys.executable, "-c", _SHARDED_SCRIPT], env=env, capture_output=True, text=True,
                             timeout=300)  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        got[devices] = json.loads(out.stdout.strip().splitlines()[-1])
        assert got[devices]["devices"] == devices
    assert got[1]["split"] is None and got[2]["split"] == 2
    assert (got[1]["chunk"], got[2]["chunk"]) == (3, 4)  # a chunk is rounded up to a multiple of the devices
    np.testing.assert_allclose(got[2]["log_p"], got[1]["log_p"], rtol=1e-5)
    np.testing.assert_allclose(got[2]["bound"], got[1]["bound"], rtol=1e-6)  # the bound's rows likewise


def test_running_out_of_device_memory_names_the_chunk_knob(monkeypatch):
    """An XLA out-of-memory error inside a chunk becomes an error that names chunk_size (both the
    ODE likelihood and the bound); other errors pass through unchanged."""
    from sbgc.method import bound, devices, likelihood

    oom = RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9.1GiB.")
    mix = GaussianMixtureClasses(np.array([[[0.3, -0.2, 0.1, 0.0]], [[-0.3, 0.2, 0.0, 0.2]]]), [[0.3], [0.4]])
    score = lambda x, t, y: mix.score(x.reshape(x.shape[0], -1), t, y).reshape(x.shape)  # noqa: E731
    px = np.zeros((3, 2, 2, 1), np.uint8)

    def boom(*args, **kwargs):
        raise oom

    monkeypatch.setattr(likelihood, "_solve_rows_jit", boom)
    with pytest.raises(devices.DeviceMemoryError, match=r"chunk of 4 rows .*lower chunk_size \(e\.g\. to 1\)"):
        likelihood.log_likelihood_table(score, mix.sde, px, np.zeros((3, 2), np.int32), jax.random.key(0),
                                        chunk_size=4, progress=False)
    monkeypatch.setattr(bound, "_chunk_terms", boom)
    with pytest.raises(devices.DeviceMemoryError, match="lower chunk_size"):
        bound.class_log_bounds(score, mix.sde, px, jax.random.key(0), n_classes=2, settings=bound.BoundSettings(n_times=2),
                               progress=False)
    monkeypatch.setattr(bound, "_chunk_terms", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        bound.class_log_bounds(score, mix.sde, px, jax.random.key(0), n_classes=2, settings=bound.BoundSettings(n_times=2),
                               progress=False)


class _FakeCompiled:
    """Stands in for a compiled chunk: XLA's memory analysis of ``base + per_row · rows`` bytes."""

    def __init__(self, rows, base=1000, per_row=100):
        self.rows, self.bytes = rows, base + per_row * rows

    def memory_analysis(self):
        import types

        return types.SimpleNamespace(argument_size_in_bytes=self.bytes, output_size_in_bytes=0, temp_size_in_bytes=0,
                                     generated_code_size_in_bytes=0, alias_size_in_bytes=0)


def test_chunks_are_sized_from_the_device_memory():
    """Where the device reports its memory, a chunk is the largest that XLA's memory analysis puts
    within the headroom (a requested size is a ceiling); where it does not (CPU), the requested
    size or the fallback, nothing compiled. Not even the smallest chunk fitting is an error naming
    the knobs."""
    from sbgc.method import devices as L

    compiled = []
    compile_at = lambda rows: compiled.append(rows) or _FakeCompiled(rows)  # noqa: E731
    assert L.chunk_for_memory(None, 5000, compile_at, limit=None, fallback=128) == (128, None)
    assert L.chunk_for_memory(300, 5000, compile_at, limit=None) == (300, None) and compiled == []
    assert L.chunk_for_memory(None, 50, compile_at, multiple=4, limit=None)[0] == 52  # rows rounded up to the devices
    limit = int((1000 + 100 * 37) / L.MEMORY_HEADROOM) + 1  # 37 rows fit, 38 do not
    chunk, program = L.chunk_for_memory(None, 5000, compile_at, multiple=2, limit=limit)
    assert chunk == 36 and program.rows == 36  # the largest multiple of 2 that fits, compiled and returned
    assert compiled[0] == L.AUTO_CHUNK_MAX  # None tried the most an automatic chunk holds first
    assert L.chunk_for_memory(30, 5000, compile_at, limit=limit)[0] == 30  # a ceiling that fits is kept
    assert L.chunk_for_memory(100, 5000, compile_at, limit=limit)[0] == 37  # one that does not is lowered
    assert L.chunk_for_memory(None, 20, compile_at, limit=limit)[0] == 20  # never more rows than there are
    with pytest.raises(L.DeviceMemoryError, match="even a chunk of 1 row.*lower n_probes"):
        L.chunk_for_memory(None, 5000, compile_at, limit=1000)
    with pytest.raises(L.DeviceMemoryError, match="even a chunk of 1 row.*: use a bigger device$"):
        L.chunk_for_memory(None, 5000, compile_at, limit=1000, remedy="use a bigger device")


@pytest.mark.slow
def test_a_table_sized_from_device_memory_equals_the_unsized_one(monkeypatch):
    """The ODE table and the bound with a device memory limit that fits only some rows per chunk
    (XLA's real memory analysis of their programs): the same numbers in more, smaller chunks."""
    from sbgc.method import bound, devices, likelihood
    from sbgc.method.classify import class_log_likelihoods

    mix = GaussianMixtureClasses(np.array([[[0.3, -0.2, 0.1, 0.0]], [[-0.3, 0.2, 0.0, 0.2]]]), [[0.3], [0.4]])
    score = lambda x, t, y: mix.score(x.reshape(x.shape[0], -1), t, y).reshape(x.shape)  # noqa: E731
    px = jax.random.randint(jax.random.key(3), (8, 2, 2, 1), 0, 256).astype(np.uint8)
    ode_kw = dict(n_classes=2, n_probes=2, solver=SolverSettings(rtol=1e-4, atol=1e-4), progress=False)
    bound_kw = dict(n_classes=2, settings=bound.BoundSettings(n_times=4), progress=False)
    whole = class_log_likelihoods(score, mix.sde, px, jax.random.key(4), **ode_kw)
    whole_bound = bound.class_log_bounds(score, mix.sde, px, jax.random.key(5), **bound_kw)
    chunks = []
    real_chunks = devices.padded_chunks
    monkeypatch.setattr(likelihood, "padded_chunks", lambda n, chunk, **kw: chunks.append(chunk) or real_chunks(n, chunk, **kw))
    monkeypatch.setattr(bound, "padded_chunks", likelihood.padded_chunks)
    seen = {}
    real_fit = devices.chunk_for_memory

    def fit(requested, n_rows, compile_at, **kw):  # a limit between the programs' 2-row and full-size needs
        small, full = (devices.compiled_bytes(compile_at(r)) for r in (2, n_rows))
        seen[n_rows] = (small, full)
        return real_fit(requested, n_rows, compile_at, **{**kw, "limit": int((small + full) / 2 / devices.MEMORY_HEADROOM)})

    monkeypatch.setattr(likelihood, "chunk_for_memory", fit)
    monkeypatch.setattr(bound, "chunk_for_memory", fit)
    sized = class_log_likelihoods(score, mix.sde, px, jax.random.key(4), **ode_kw)
    sized_bound = bound.class_log_bounds(score, mix.sde, px, jax.random.key(5), **bound_kw)
    assert all(small < full for small, full in seen.values())  # the analysis grows with the rows
    assert len(chunks) == 2 and 1 <= chunks[0] < 16 and 1 <= chunks[1] < 128  # 16 ODE rows; 8·2·5 = 80 bound rows → 128
    np.testing.assert_allclose(sized.log_p, whole.log_p, rtol=1e-6)
    np.testing.assert_allclose(sized_bound.log_p, whole_bound.log_p, rtol=1e-6)
